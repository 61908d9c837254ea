"""Settings of the signal stages, one section of the config file each: ``[segments]`` (windows), ``[sampling]``
(per-class caps), ``[spectrogram]`` (STFT) and ``[rhythm]`` (the rhythm block). ``ecgpipe.config`` assembles them
into the one validated configuration; import them from there."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, field_validator, model_validator

from ecgpipe.classifier_settings import _Strict


class SegmentSettings(_Strict):
    target_fs: float = Field(250.0, gt=0, description="Every database is resampled to this rate (Hz).")
    length_s: float = Field(2.0, gt=0, description="Segment length in seconds.")
    stride_s: float = Field(2.0, gt=0, description="Step between segment starts; equal to length_s = no overlap.")
    exclude_labels: list[str] = Field(["(NOISE"], description="Rhythm labels whose episodes are never used.")
    n_leads: Literal[1, 2] = Field(
        1,
        description="Leads per segment: 1 (each database's 'lead'), or 2 (also its 'second_lead'). Two leads become two "
        "image channels for the CNN (red: first lead, green: second, blue: their mean); a record with one lead is "
        "then rejected.",
    )
    nan_policy: Literal["error", "drop"] = Field(
        "error", description="NaN samples in the chosen lead: 'error' rejects the record, 'drop' drops the segments."
    )
    tail: Literal["drop", "end"] = Field("drop", description="After an episode's last whole window: 'drop', or 'end' (one more, end-aligned).")

    @model_validator(mode="after")
    def _whole_samples(self):
        # a window or a step that rounds to no sample at target_fs would divide by zero in every record
        for key, seconds in (("length_s", self.length_s), ("stride_s", self.stride_s)):
            if int(round(seconds * self.target_fs)) < 1:
                raise ValueError(f"segments.{key} ({seconds:g} s) rounds to 0 samples at target_fs ({self.target_fs:g} Hz): "
                                 f"give at least one sample ({1 / self.target_fs:g} s)")
        return self


class SamplingSettings(_Strict):
    max_per_class: int | None = Field(None, gt=0, description="Cap on segments per class (random, seeded).")
    per_class: dict[str, Annotated[int, Field(ge=1)]] = Field(
        {}, description="Caps for individual classes (at least 1 each); override max_per_class.")
    seed: int = Field(0, ge=0, lt=2**32, description="Seeds the sample of windows (and a pilot's records).")


class SpectrogramSettings(_Strict):
    window: str = Field("hann", description="scipy.signal window name.")
    nperseg: int = Field(64, gt=1, description="STFT window length in samples (at target_fs).")
    noverlap: int = Field(56, ge=0, description="Samples shared by consecutive STFT windows.")
    nfft: int = Field(256, gt=1, le=2**20, description="FFT length (zero-padded); sets the frequency grid.")
    fmin: float = Field(0.0, ge=0, description="Lowest frequency kept (Hz).")
    fmax: float = Field(50.0, gt=0, description="Highest frequency kept (Hz).")
    scaling: Literal["log", "db", "linear"] = Field("log", description="log10(power+eps), decibels, or raw power.")
    eps: float = Field(1e-10, gt=0)
    standardize: StrictBool = Field(True, description="z-score each segment first, so amplitude units do not matter.")

    @field_validator("window")
    @classmethod
    def _known_window(cls, v):
        from scipy.signal import get_window

        try:
            get_window(v, 8)
        except (ValueError, TypeError) as err:  # an unknown name, or a window that needs parameters
            raise ValueError(f"spectrogram.window {v!r} is not a scipy.signal window name usable without parameters "
                             f"(e.g. 'hann', 'hamming', 'blackman'): {err}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.noverlap >= self.nperseg:
            raise ValueError(f"noverlap ({self.noverlap}) must be smaller than nperseg ({self.nperseg})")
        if self.nfft < self.nperseg:
            raise ValueError(f"nfft ({self.nfft}) must be at least nperseg ({self.nperseg})")
        if self.fmax <= self.fmin:
            raise ValueError(f"fmax ({self.fmax}) must be above fmin ({self.fmin})")
        return self


class RhythmSettings(_Strict):
    """RR-interval features from wfdb's xqrs QRS detector (see ecgpipe/rhythm.py), stored next to each segment."""

    enabled: StrictBool = Field(False, description="Detect QRS complexes and compute RR features for every segment.")
    context_s: float = Field(10.0, gt=0, description="Seconds around a segment's centre whose beats (and waveform) are used.")
    irregularity: StrictBool = Field(
        False,
        description="Also compute the RR-pattern features of ecgpipe/rhythm.py's IRREGULARITY_FEATURES (lag-1/lag-2 "
        "autocorrelation, turning points, sample entropy, Poincare clustering, lag-2 differences) over the same "
        "context: they tell atrial fibrillation's patternless irregularity from ectopic beats' repeating motifs.",
    )
    beats: StrictBool = Field(
        False,
        description="Also compute the beat-level features of ecgpipe/beats.py's BEAT_FEATURES (P-wave presence and "
        "consistency, fibrillatory-wave residual, QRS width, beat-to-beat template correlation, premature beats, "
        "pauses, T wave, signal-quality indices) over the same context: what AF (no P wave) and 'other' rhythms "
        "(ectopy, blocks, wide complexes) look like beat by beat.",
    )
    beat_detail: StrictBool = Field(
        False,
        description="Also compute ecgpipe/beat_detail.py's BEAT_DETAIL_FEATURES (RR percentiles, compensatory pauses, "
        "running heart-rate extremes, QRS and T-wave polarity, T-peak latency, spectrum of the QRST-cancelled "
        "residual) over the same context: the ectopy and repolarisation changes of 'other' rhythms.",
    )
    waveform: StrictBool = Field(
        False,
        description="Also compute the waveform descriptors of ecgpipe/waveform.py (dominant frequency, VF leakage, "
        "threshold crossings, kurtosis, regularity, complexity...) over the same context: they join the RR features "
        "in the classifiers' 'rhythm' block. They separate VT from VF, which RR intervals cannot.",
    )
    waveform_context_s: float | None = Field(
        None,
        gt=0,
        description="Seconds around a segment's centre that the waveform descriptors look at (default: context_s); "
        "shock-advisory algorithms analyse 4-10 s, a long context describes the patient as much as the rhythm.",
    )

    @model_validator(mode="after")
    def _check(self):
        if self.waveform_context_s is not None and not self.waveform:
            raise ValueError("rhythm.waveform_context_s is set but rhythm.waveform is false: set waveform = true or drop it")
        return self

    @property
    def waveform_seconds(self) -> float:  # the waveform descriptors' context
        return self.waveform_context_s or self.context_s
