"""Decisions over neighbouring windows: the vectorised smoothing agrees with the plain definition, never crosses a
record, and respects time, not row counts."""

import itertools

import numpy as np
import pytest

from ecgpipe.smoothing import majority_smooth, neighbour_ranges, segmented_call, smoothed_mean, smoothed_vote


def _vote_by_definition(classes: np.ndarray, width: int) -> np.ndarray:
    # the centred majority vote written out window by window (ecgpipe predict's original loop)
    half, out = width // 2, classes.copy()
    for i in range(len(classes)):
        if classes[i] < 0:
            continue
        votes = classes[max(0, i - half) : i + half + 1]
        counts = np.bincount(votes[votes >= 0])
        out[i] = classes[i] if counts[classes[i]] == counts.max() else int(np.argmax(counts))
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("width", [1, 3, 5, 9, 31])
def test_vectorised_vote_equals_the_definition(seed, width):
    rng = np.random.default_rng(seed)
    classes = rng.integers(-1, 4, size=300)
    assert majority_smooth(classes, width).tolist() == _vote_by_definition(classes, width).tolist()


def test_no_prediction_never_votes_and_is_never_replaced():
    classes = np.array([0, 0, 1, 0, 0, 2, 2, 2, 2, -1, 2])
    assert majority_smooth(classes, 5).tolist() == [0, 0, 0, 0, 0, 2, 2, 2, 2, -1, 2]
    assert majority_smooth(np.array([-1, -1]), 3).tolist() == [-1, -1]
    with pytest.raises(ValueError, match="must be odd"):
        majority_smooth(classes, 4)  # no centre: not silently 5


def test_neighbours_stay_in_their_record_and_within_the_radius_in_time():
    records = np.array(["a/1"] * 5 + ["b/2"] * 3)
    # a gap in record a/1 (a window dropped at a rhythm change): 1000 -> 2500
    starts = np.array([0, 500, 1000, 2500, 3000, 0, 500, 1000])
    lo, hi = neighbour_ranges(records, starts, radius=500)
    assert list(zip(lo.tolist(), hi.tolist())) == [(0, 2), (0, 3), (1, 3), (3, 5), (3, 5), (5, 7), (5, 8), (6, 8)]
    values = np.arange(8.0)
    assert smoothed_mean(values, lo, hi).tolist() == [0.5, 1.0, 1.5, 3.5, 3.5, 5.5, 6.0, 6.5]
    # two columns at once, e.g. one score per class
    both = smoothed_mean(np.stack([values, -values], axis=1), lo, hi)
    assert np.allclose(both[:, 0], -both[:, 1])


def test_a_long_radius_votes_over_the_whole_record_only():
    records = np.array(["a"] * 4 + ["b"] * 3)
    classes = np.array([1, 1, 0, 1, 2, 2, 0])
    lo, hi = neighbour_ranges(records, np.array([0, 1, 2, 3, 0, 1, 2]), radius=100)
    assert smoothed_vote(classes, lo, hi, 3).tolist() == [1, 1, 1, 1, 2, 2, 2]


def test_rows_out_of_order_are_refused():
    with pytest.raises(ValueError, match="grouped by record"):
        neighbour_ranges(np.array(["a", "b", "a"]), np.array([0, 0, 500]), 500)
    with pytest.raises(ValueError, match="sorted by start"):
        neighbour_ranges(np.array(["a", "a"]), np.array([500, 0]), 500)


def test_an_unscored_window_takes_no_part_in_the_means_and_spoils_no_other_row():
    records = np.array(["a"] * 3 + ["b"] * 3)
    lo, hi = neighbour_ranges(records, np.array([0, 500, 1000] * 2), radius=500)
    values = np.array([np.nan, 1.0, 3.0, 2.0, 2.0, 2.0])
    assert smoothed_mean(values, lo, hi)[1:].tolist() == [2.0, 2.0, 2.0, 2.0, 2.0]  # record b untouched by a's NaN
    assert smoothed_mean(values, lo, hi)[0] == 1.0  # the NaN row gets its neighbours' mean
    alone = smoothed_mean(np.array([np.nan, np.nan, 1.0]), *neighbour_ranges(np.array(["a"] * 3), np.array([0, 5, 10]), 5))
    assert np.isnan(alone[0]) and alone[1:].tolist() == [1.0, 1.0]  # no finite neighbour: NaN


def test_an_endpoint_vote_pools_its_classes_before_counting():
    from ecgpipe.smoothing import pooled_vote

    normal, vt, vf = 0, 2, 3
    classes = np.array([normal, vt, vf, normal, vt, vf, normal])
    # per class, VT and VF split the votes and each window keeps its own class; pooled, most neighbours are shockable
    assert majority_smooth(classes, 3).tolist() == classes.tolist()
    assert pooled_vote(classes, [vt, vf], 3).tolist() == [0, 1, 1, 1, 1, 1, 0]  # the ends: one of two, not most
    assert pooled_vote(np.array([vt, -1, vf]), [vt, vf], 3).tolist() == [1, -1, 1]  # no call: no vote, no answer
    with pytest.raises(ValueError, match="must be odd"):
        pooled_vote(classes, [vt], 4)


def test_endpoint_episodes_and_burden_of_a_prediction():
    from ecgpipe.predict import RecordPrediction

    pred = RecordPrediction("r", 360.0, "MLII", 11.0, np.arange(6) * 2.0, np.zeros(6, int), 2.0, [],
                            endpoint_calls={"af": np.array([0, 1, 1, -1, 1, 1])})
    assert pred.endpoint_episodes("af") == [(2.0, 6.0), (8.0, 11.0)]  # the last run ends with the record
    assert pred.endpoint_burden("af") == pytest.approx(4 / 5)  # of the scored windows


def _best_labelling_value(scores, penalty, records):
    """The objective of segmented_call, maximised by trying every labelling of each record (tiny inputs only)."""
    total = 0.0
    for record in np.unique(records):
        gain = np.nan_to_num(scores[records == record])
        total += max(float(np.dot(z, gain)) - penalty * int(np.abs(np.diff(z)).sum())
                     for z in map(np.array, itertools.product([0, 1], repeat=len(gain))))
    return total


@pytest.mark.parametrize("seed", range(40))
def test_segmentation_finds_the_best_labelling(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 10))
    scores = rng.normal(size=n)
    scores[rng.random(n) < 0.1] = np.nan
    records = np.sort(rng.integers(0, 3, size=n)).astype(str)
    penalty = float(rng.choice([0.0, 0.3, 1.0, 3.0]))
    filled = segmented_call(np.nan_to_num(scores), penalty, records)  # an unscored window adds nothing either way
    value = sum(float(np.dot(filled[records == r], np.nan_to_num(scores[records == r])))
                - penalty * int(np.abs(np.diff(filled[records == r])).sum()) for r in np.unique(records))
    assert value == pytest.approx(_best_labelling_value(scores, penalty, records))
    calls = segmented_call(scores, penalty, records)
    assert calls.tolist() == np.where(np.isnan(scores), -1, filled).tolist()
    assert ((calls == -1) == np.isnan(scores)).all()


def test_segmentation_keeps_long_episodes_whole_and_strong_short_ones():
    # a long positive episode with weak negative windows inside, then one strong positive window and one weak one
    scores = np.array([-1, -1, 2, -0.5, 2, -0.5, 2, -1, -1, -1, 5, -1, -1, 0.4, -1, -1])
    assert segmented_call(scores, 0.0).tolist() == (scores > 0).astype(int).tolist()
    calls = segmented_call(scores, 1.0)
    assert calls[2:7].tolist() == [1] * 5  # the weak dips inside the episode do not pay for two changes
    assert calls[10] == 1  # a strong single window pays for its two changes
    assert calls[13] == 0  # a weak one does not
    assert calls[:2].tolist() == [0, 0] and calls[7:10].tolist() == [0, 0, 0]
    # a record boundary restarts the decision: the same scores as two records are segmented separately
    records = np.array(["a"] * 8 + ["b"] * 8)
    assert segmented_call(scores, 1.0, records).tolist() == calls.tolist()
    assert segmented_call(np.array([3.0, -0.1]), 10.0, np.array(["a", "b"])).tolist() == [1, 0]
    with pytest.raises(ValueError, match="penalty"):
        segmented_call(scores, -1.0)
