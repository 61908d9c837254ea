"""Physical units of the signals: every lead is in millivolts once read (``ecgpipe.records.read_record`` converts V
and uV; other units are refused), and so are the thresholds below. No imports: the window, spectrogram and
rhythm-block maths all use it."""

# Below this amplitude (mV) an excerpt is a flat line (asystole, lead off): zero waveform descriptors and signal
# quality, a constant's spectrogram. Resampling a flat lead (mitdb's 360 Hz to 250 Hz) leaves a polyphase ripple of ~1e-4 of its offset (a window's std ~8e-5 mV per
# mV of offset, ~6e-6 mV once band-passed); a floor at exactly 0 would let that ripple through as a "signal", and
# the same flat lead would get features at 360 Hz and zeros at a native 250 Hz: the source database made visible.
# 1e-3 mV (signals are in mV, ``ecgpipe.records``) is a fifth of one ADC step of mitdb/vfdb (200 adu/mV) and one
# step of cinc2017 (1000 adu/mV): no recorded waveform varies less. It is ~40x below the quietest real window (std
# 0.036 mV over every window of mitdb, vfdb and 1500 cinc2017 records; band-passed 10-s contexts peak at >= 0.14 mV),
# and covers the ripple of offsets up to ~12 mV.
FLAT_MV = 1e-3
