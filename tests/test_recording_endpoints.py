"""Endpoints over whole recordings: each window's reference is the annotated rhythm it lies in, runs are joined,
detections and false alarms counted per run, on constructed episodes and on a real record's annotations."""

import numpy as np
import pytest

from ecgpipe.config import load_config
from ecgpipe.protocols import make_splits
from ecgpipe.recording_endpoints import (
    RecordingTally,
    annotated_runs,
    called_runs,
    subject_averages,
    subject_intervals,
    subjects_json,
    window_reference,
)
from ecgpipe.records import RhythmEpisode
from ecgpipe.report_tables import RECORDING_ALIGN, RECORDING_HEADER, RECORDINGS_HOW, per_subject_means, recording_rows
from ecgpipe.stages.classification import ClassificationData
from ecgpipe.stages.recording_grid import GridUnit
from ecgpipe.stages.recording_scores import RecordScore, assemble, record_folds
from ecgpipe.stages.segments import RecordUnit

FS = 100.0
# 0-20 s sinus, 20-50 s AF, 50-52 s noise, 52-60 s bigeminy, 60-64 s AF, 64-66 s AFL (an AF class label), 66-80 s sinus
EPISODES = [RhythmEpisode("(N", 0, 2000), RhythmEpisode("(AFIB", 2000, 5000), RhythmEpisode("(NOISE", 5000, 5200),
            RhythmEpisode("(B", 5200, 6000), RhythmEpisode("(AFIB", 6000, 6400), RhythmEpisode("(AFL", 6400, 6600),
            RhythmEpisode("(N", 6600, 8000)]
AF = ("(AFIB", "(AFL")


def test_a_window_is_the_rhythm_it_lies_in_whole():
    starts = np.arange(0, 80, 2.0)
    known, positive, labels = window_reference(EPISODES, FS, starts, 2.0, AF, ["(NOISE"])
    assert labels[starts == 20].tolist() == ["(AFIB"] and positive[starts == 20].all()
    assert labels[starts == 50].tolist() == [""] and not known[starts == 50].any()  # noise: left out
    assert labels[starts == 52].tolist() == ["(B"] and known[starts == 52].all() and not positive[starts == 52].any()
    # a window across a change (19-21 s) is left out
    known, _, labels = window_reference(EPISODES, FS, np.array([19.0]), 2.0, AF, ["(NOISE"])
    assert not known.any() and labels.tolist() == [""]
    # before the first annotation: no reference
    known, _, _ = window_reference([RhythmEpisode("(N", 500, 8000)], FS, np.array([0.0, 10.0]), 2.0, AF)
    assert known.tolist() == [False, True]


def test_consecutive_positive_episodes_are_one_run():
    assert annotated_runs(EPISODES, FS, AF) == [(20.0, 50.0), (60.0, 66.0)]
    assert annotated_runs(EPISODES, FS, ["(VT"]) == []


def test_called_runs_break_at_a_negative_or_missing_call():
    calls = np.array([0, 1, 1, -1, 1, 0, 1, 1, 1])
    assert called_runs(calls, np.arange(9) * 2.0, 2.0) == [(2.0, 6.0), (8.0, 10.0), (12.0, 18.0)]
    assert called_runs(np.array([-1, 0]), np.array([0.0, 2.0]), 2.0) == []


def test_tally_counts_windows_runs_and_false_alarms():
    starts = np.arange(0, 80, 2.0)
    known, positive, labels = window_reference(EPISODES, FS, starts, 2.0, AF, ["(NOISE"])
    calls = np.zeros(len(starts), dtype=np.int64)
    calls[(starts >= 24) & (starts < 50)] = 1  # the first AF run, late by 4 s
    calls[(starts >= 54) & (starts < 58)] = 1  # bigeminy called AF: a false alarm
    calls[starts == 70] = -1  # one sinus window without a call
    calls[starts == 62] = -1  # and one AF window (of the run not called)
    tally = RecordingTally()
    tally.add(calls, starts, 2.0, 2.0, known, positive, labels, annotated_runs(EPISODES, FS, AF))
    result = tally.to_json()
    assert result["positive_windows"] == 17 and tally.true_positives == 13  # 20-50 s and 60-66 s; 24-50 s called
    # windows without a call are on neither side of the rates, and counted apart for the report to say so
    assert result["unscored_positive_windows"] == 1 and result["unscored_negative_windows"] == 1
    assert result["negative_windows"] == 16 + 4 and tally.true_negatives == 20 - 2  # sinus (one without a call) + bigeminy
    assert result["runs"] == 2 and result["runs_detected"] == 1 and result["long_runs"] == 1 and result["long_runs_detected"] == 1
    assert result["called_runs"] == 2 and result["false_alarms"] == 1
    assert tally.false_positive_seconds == 2 * 2.0  # the two bigeminy windows called AF
    assert result["false_positive_min_per_hour"] == pytest.approx(4.0 / 60 / (38 * 2.0 / 3600), abs=1e-4)
    assert result["hours"] == pytest.approx(38 * 2.0 / 3600, abs=1e-3)  # scored windows only
    assert result["negatives_by_label"] == {"(B": [4, 2], "(N": [16, 0]}
    assert tally.worst_negatives() == [("(B", 4, 0.5)]
    # a second record adds up
    tally.add(np.ones(3, dtype=np.int64), np.arange(3) * 2.0, 2.0, 2.0, np.ones(3, bool), np.ones(3, bool),
              np.array(["(AFIB"] * 3), [(0.0, 6.0)])
    assert tally.runs == 3 and tally.runs_detected == 2 and tally.false_alarms == 1 and tally.positive_windows == 20


def test_a_long_call_around_a_short_run_is_no_false_alarm_but_its_wrong_time_is_counted():
    """EC57's episode rule counts a called run overlapping an annotated run as right, however long it runs on: an hour
    called AF for 50 minutes around a 20-s AF run has no false alarm; its 49.7 minutes of sinus called AF are told as
    false-positive minutes per hour beside it (found by a review: the change penalty merges calls into long runs)."""
    starts = np.arange(0, 3600, 10.0)
    episodes = [RhythmEpisode("(N", 0, 1800 * 100), RhythmEpisode("(AFIB", 1800 * 100, 1820 * 100),
                RhythmEpisode("(N", 1820 * 100, 3600 * 100)]
    known, positive, labels = window_reference(episodes, FS, starts, 10.0, AF)
    calls = ((starts >= 300) & (starts < 3300)).astype(np.int64)
    tally = RecordingTally()
    tally.add(calls, starts, 10.0, 10.0, known, positive, labels, annotated_runs(episodes, FS, AF))
    result = tally.to_json()
    assert result["false_alarms"] == 0 and result["runs_detected"] == 1 and result["false_alarms_per_hour"] == 0.0
    assert result["false_positive_min_per_hour"] == pytest.approx(298 * 10 / 60, abs=0.01)  # 300 windows, 2 of AF
    assert result["specificity"] == pytest.approx(60 / 358, abs=1e-4)
    row = recording_rows({"af": {**result, "width": 1, "penalty": 0.0, "detector": True, "ci95": {}}})[0]
    assert "0; 0.00 per hour; 49.67 min/h" in row[6]
    assert "false-positive minutes per hour" in RECORDINGS_HOW


def test_merged_tallies_equal_one_tally_of_both_records():
    starts = np.arange(0, 80, 2.0)
    known, positive, labels = window_reference(EPISODES, FS, starts, 2.0, AF, ["(NOISE"])
    runs = annotated_runs(EPISODES, FS, AF)
    first = (np.arange(len(starts)) % 3 == 0).astype(np.int64)
    second = ((starts >= 20) & (starts < 40)).astype(np.int64)
    both, a, b = RecordingTally(), RecordingTally(), RecordingTally()
    for tally, calls in ((both, first), (both, second), (a, first), (b, second)):
        tally.add(calls, starts, 2.0, 2.0, known, positive, labels, runs)
    a.merge(b)
    assert a == both and a.to_json() == both.to_json()
    assert b.negatives_by_label != a.negatives_by_label  # merging added to a, and left b as it was


def _subject(tp: int, fn: int, tn: int, fp: int, alarms: int = 0, hours: float = 1.0) -> RecordingTally:
    return RecordingTally(positive_windows=tp + fn, true_positives=tp, negative_windows=tn + fp, true_negatives=tn,
                          false_alarms=alarms, seconds=hours * 3600, false_positive_seconds=fp * 6.0)  # 6-s windows


def test_whole_recording_intervals_resample_subjects_not_windows():
    # ten patients detected perfectly and one missed whole: 1000 of 1100 positive windows right (0.909); an interval
    # over windows would be a few thousandths wide, over patients it reaches down to a draw with the missed one twice
    patients = {f"p{i}": _subject(100, 0, 900, 0) for i in range(10)} | {"bad": _subject(0, 100, 880, 20, alarms=4)}
    result = subjects_json(patients)
    assert result["sensitivity"] == pytest.approx(1000 / 1100, abs=1e-4) and result["ci_subjects"] == 11
    low, high = result["ci95"]["sensitivity"]
    assert low < 0.8 and high == 1.0  # a draw without the missed patient is perfect
    assert result["ci95"]["false_alarms_per_hour"][0] == 0.0 and result["ci95"]["false_alarms_per_hour"][1] > 0.5
    assert result["ci95"] == subjects_json(dict(reversed(patients.items())))["ci95"]  # the order of patients does not matter
    # EC57's average statistics: each patient's own rate, averaged, the missed patient weighing as much as any other
    means = result["sensitivity_per_subject"], result["specificity_per_subject"]
    assert means[0]["mean"] == pytest.approx(10 / 11, abs=1e-4) and means[0]["lowest"] == 0.0 and means[0]["subjects"] == 11
    assert means[1]["mean"] == pytest.approx((10 + 880 / 900) / 11, abs=1e-4) and means[1]["lowest"] == pytest.approx(880 / 900, abs=1e-4)
    assert means[0]["ci95"][0] < 0.8 and means[0]["ci95"][1] == 1.0
    assert subject_averages(list(patients.values())) == {f"{k}_per_subject": result[f"{k}_per_subject"] for k in ("sensitivity", "specificity")}
    unequal = subjects_json({"big": _subject(900, 0, 100, 0), "small": _subject(0, 10, 100, 0)})  # pooled 0.989, mean 0.5
    assert unequal["sensitivity"] == pytest.approx(900 / 910, abs=1e-4) and unequal["sensitivity_per_subject"]["mean"] == 0.5
    # one patient whose windows all agree: sensitivity and specificity without spread; a single patient: no interval
    assert subject_intervals([_subject(5, 5, 5, 5)] * 3) == {"sensitivity": [0.5, 0.5], "specificity": [0.5, 0.5],
                                                             "false_alarms_per_hour": [0.0, 0.0],
                                                             "false_positive_min_per_hour": [0.5, 0.5]}
    assert subject_intervals([_subject(5, 5, 5, 5)]) == {}
    # one patient holds every positive window: its rate repeats in every draw, so no sensitivity interval at all
    one = {f"n{i}": _subject(0, 0, 90, 10) for i in range(9)} | {"af": _subject(90, 10, 0, 0)}
    assert "sensitivity" not in subjects_json(one)["ci95"] and "specificity" in subjects_json(one)["ci95"]
    assert subjects_json(one)["sensitivity_per_subject"] == {"mean": 0.9, "lowest": 0.9, "subjects": 1, "ci95": None}
    assert "specificity_per_subject" in subjects_json(one) and subjects_json(one)["specificity_per_subject"]["subjects"] == 9
    # no positives anywhere: no sensitivity interval, the others still there
    # no subject measures sensitivity: its average is None, said as such (a row merged over another's must not show it)
    assert subjects_json({"a": _subject(0, 0, 5, 1), "b": _subject(0, 0, 4, 0)})["sensitivity_per_subject"] is None
    assert set(subject_intervals([_subject(0, 0, 5, 1), _subject(0, 0, 4, 0)])) == {"specificity", "false_alarms_per_hour",
                                                                                  "false_positive_min_per_hour"}


def test_records_go_to_the_fold_that_tests_their_patient():

    cfg = load_config("paper4-best", {"cv": {"n_splits": 3}})
    subjects = np.repeat([f"s{i}" for i in range(6)], 10)
    y = np.tile(np.repeat([0, 1], 5), 6)
    data = ClassificationData(None, None, y, subjects, np.array(["mitdb"] * 60), subjects)
    grids = [GridUnit(RecordUnit("mitdb", name, "", ""), subject, "settings", name)
             for name, subject in [("a", "s0"), ("b", "s0"), ("c", "s4"), ("x", "nobody"), ("y", "nobody2")]]
    folds, _ = record_folds(data, cfg, grids)
    fold_of = {r.name.split("/")[1]: f for f, records in enumerate(folds) for r in records}
    assert sorted(fold_of) == ["a", "b", "c", "x", "y"]  # every record once
    assert fold_of["a"] == fold_of["b"]  # one patient, one fold
    splits, _ = make_splits("grouped_by_subject", y, subjects, cfg.cv, data.databases)
    for name, subject in [("a", "s0"), ("c", "s4")]:
        assert subject in set(subjects[splits[fold_of[name]][1]]) and subject not in set(subjects[splits[fold_of[name]][0]])
    assert (fold_of["x"], fold_of["y"]) == (0, 1)  # patients no fold trained on: spread over the folds
    # ... by name, not by the order the records were listed in (which no stored key holds)
    again, _ = record_folds(data, cfg, grids[::-1])
    assert {r.name.split("/")[1]: f for f, records in enumerate(again) for r in records} == fold_of


def test_an_endpoint_a_fold_had_no_detector_for_leaves_that_fold_s_records_out_of_it():
    cfg = load_config("paper4-best")
    starts = np.arange(0, 80, 2.0)
    known, positive, labels = window_reference(EPISODES, FS, starts, 2.0, AF, ["(NOISE"])
    runs = annotated_runs(EPISODES, FS, AF)

    def tally(calls):
        t = RecordingTally()
        t.add(calls, starts, 2.0, 2.0, known, positive, labels, runs)
        return t

    ones = np.ones(len(starts), dtype=np.int64)
    scores = [RecordScore("mitdb/1", "a", 0, 0.02, {"af": tally(ones), "shockable": tally(0 * ones)}),
              RecordScore("mitdb/2", "b", 1, 0.02, {"shockable": tally(0 * ones)})]  # fold 1: no af detector
    result = assemble(cfg, "svc", scores, 2, ["fold 1: no af detector"], [])
    assert result.endpoints["af"]["records"] == 1 and result.endpoints["shockable"]["records"] == 2
    assert result.endpoints["af"]["runs"] == len(runs) and result.endpoints["af"]["runs_detected"] == len(runs)
    assert result.endpoints["shockable"]["negative_windows"] == 2 * tally(0 * ones).negative_windows
    assert result.n_records == 2 and result.records[1]["endpoints"].keys() == {"shockable"}
    # intervals over the endpoint's patients: af had one (none), shockable two
    assert result.endpoints["af"]["ci95"] == {} and result.endpoints["af"]["ci_subjects"] == 1
    assert result.endpoints["shockable"]["ci_subjects"] == 2 and "specificity" in result.endpoints["shockable"]["ci95"]


def test_a_real_record_s_annotations(physionet):
    """mitdb 201 as PhysioNet ships it: its AF runs from the annotation file, and grid windows that follow them."""
    import wfdb

    from ecgpipe.records import read_episodes

    path = str(physionet / "mitdb" / "201")
    header = wfdb.rdheader(path)
    episodes = read_episodes(path, "atr", header.sig_len)
    runs = annotated_runs(episodes, header.fs, AF)
    af_seconds = sum(ep.n_samples for ep in episodes if ep.label in AF) / header.fs
    assert len(runs) >= 2 and sum(b - a for a, b in runs) == pytest.approx(af_seconds)
    starts = np.arange(0, header.sig_len / header.fs - 2, 2.0)
    known, positive, labels = window_reference(episodes, header.fs, starts, 2.0, AF)
    # every window called AF exactly where the annotations say: every run detected, no false alarm
    tally = RecordingTally()
    tally.add(positive.astype(np.int64), starts, 2.0, 2.0, known, positive, labels, runs)
    assert tally.sensitivity == 1.0 and tally.specificity == 1.0 and tally.false_alarms == 0
    assert tally.runs_detected == sum(b - a >= 2.0 for a, b in runs)  # a run shorter than a window may hold none
    assert set(labels[known]) >= {"(N", "(AFIB"} and 0.2 < positive.mean() < 0.5


def test_the_report_row_says_how_many_windows_had_no_call():
    starts = np.arange(0, 80, 2.0)
    known, positive, labels = window_reference(EPISODES, FS, starts, 2.0, AF, ["(NOISE"])
    calls = positive.astype(np.int64)
    calls[(starts == 22) | (starts == 70) | (starts == 72)] = -1
    tally = RecordingTally()
    tally.add(calls, starts, 2.0, 2.0, known, positive, labels, annotated_runs(EPISODES, FS, AF))
    r = {**subjects_json({"s1": tally}), "width": 1, "detector": False}
    [row] = recording_rows({"af": r})
    assert "(17 / 19 windows; 1 / 2 without a call)" in row[2]
    right = tally.called_runs - tally.false_alarms  # called runs on an annotated run, and their share
    assert tally.called_runs and row[RECORDING_HEADER.index("called runs (on an annotated run: episode PPV)")] == (
        f"{tally.called_runs} ({right}: {right / tally.called_runs:.3f})")
    assert RECORDING_ALIGN.count("|") - 1 == len(RECORDING_HEADER) == len(row)  # else Markdown shows the table as text
    assert row[3] == per_subject_means(r) == f"{tally.sensitivity:.3f} / {tally.specificity:.3f} ({tally.sensitivity:.3f} / {tally.specificity:.3f})"
    old = {k: v for k, v in r.items() if not k.startswith("unscored")}  # a report written before the count existed
    assert recording_rows({"af": old})[0][2].endswith("(17 / 19 windows)")
    assert "count on neither side" in RECORDINGS_HOW
