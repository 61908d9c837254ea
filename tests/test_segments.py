import numpy as np

from ecgpipe.records import RhythmEpisode
from ecgpipe.segments import cut_windows, nan_free, resample, segment_windows


def test_windows_lie_inside_usable_episodes_only():
    eps = [RhythmEpisode("(N", 0, 1000), RhythmEpisode("(NOISE", 1000, 3000), RhythmEpisode("(AFIB", 3000, 3750)]
    w = segment_windows(eps, {"(N", "(AFIB"}, fs_in=250, fs_out=250, length=500, stride=500)
    assert w.starts.tolist() == [0, 500, 3000] and w.episode.tolist() == [0, 0, 2]
    for s, e in zip(w.starts, w.episode):
        assert eps[e].start <= s and s + 500 <= eps[e].end


def test_windows_are_placed_at_the_target_rate():
    # a 10-s episode at 360 Hz starting at 1 s -> at 250 Hz starts at sample 250 and has 5 two-second windows
    eps = [RhythmEpisode("(N", 360, 360 * 11)]
    w = segment_windows(eps, {"(N"}, fs_in=360, fs_out=250, length=500, stride=500)
    assert w.starts.tolist() == [250, 750, 1250, 1750, 2250]
    overlapping = segment_windows(eps, {"(N"}, fs_in=360, fs_out=250, length=500, stride=250)
    assert len(overlapping.starts) == 9


def test_resample_keeps_duration_and_a_tone():
    fs_in, fs_out = 360, 250
    t = np.arange(fs_in * 10) / fs_in
    y = resample(np.sin(2 * np.pi * 5 * t), fs_in, fs_out)
    assert len(y) == fs_out * 10
    t_out = np.arange(len(y)) / fs_out
    inner = slice(100, -100)  # away from the filter's edge effects
    assert np.allclose(y[inner], np.sin(2 * np.pi * 5 * t_out)[inner], atol=0.01)


def test_cut_windows_is_a_gather():
    x = np.arange(100.0)
    out = cut_windows(x, np.array([0, 10, 90]), 10)
    assert out.shape == (3, 10) and out[1, 0] == 10 and out[2, -1] == 99


def test_nan_free_marks_windows_touching_nans():
    x = np.zeros(2500)
    x[1200] = np.nan
    ok = nan_free(x, np.array([0, 1000, 2000]), 250, fs_in=250, fs_out=250)
    assert ok.tolist() == [True, False, True]
    # a gap starting where a window ends: the window before it is clean at the target rate (nothing filters it) ...
    gap = np.zeros(3000)
    gap[1000:1200] = np.nan
    assert nan_free(gap, np.array([0, 1000, 2000]), 1000, fs_in=300, fs_out=300).tolist() == [True, False, True]
    # ... and touched once the resampling filter reaches across the boundary (360 -> 300 Hz: its margin)
    assert nan_free(gap, np.array([0, 833, 1666]), 833, fs_in=360, fs_out=300).tolist() == [False, False, True]


def test_the_tail_after_the_last_whole_window_is_dropped_or_gets_an_end_aligned_window():
    episodes = [RhythmEpisode("(N", 0, 1050)]  # 10.5 windows of 100 samples
    dropped = segment_windows(episodes, {"(N"}, 100.0, 100.0, 100, 100)
    assert dropped.starts.tolist() == list(range(0, 1000, 100))
    ended = segment_windows(episodes, {"(N"}, 100.0, 100.0, 100, 100, tail="end")
    assert ended.starts.tolist() == [*range(0, 1000, 100), 950] and ended.episode.tolist() == [0] * 11
    exact = segment_windows([RhythmEpisode("(N", 0, 1000)], {"(N"}, 100.0, 100.0, 100, 100, tail="end")
    assert exact.starts.tolist() == list(range(0, 1000, 100))  # no tail: no extra window
