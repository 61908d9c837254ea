"""An endpoint scored over whole recordings, as a device meets them: every window, every annotated rhythm.

A run's report scores sampled windows of its configured classes. A recording also holds rhythms no class covers
(bigeminy, SVTA, paced rhythm, asystole...) and the stretches where one rhythm gives way to another, and a clinician
counts episodes and false alarms per hour, not windows. Here:

* a window's reference is the annotated rhythm it lies in, whole: positive when that rhythm is one of the endpoint's
  classes, negative otherwise (configured or not, as it is for a device); a window across a rhythm change, before the
  first annotation or in an excluded label (noise) is left out;
* an annotated run of the endpoint (consecutive positive episodes joined: VT then ventricular flutter is one run) is
  detected when a called run overlaps it; a called run that overlaps none is a false alarm (ANSI/AAMI EC57's episode
  rule: a long call around a short run counts none, which is why the called time of negative windows is counted too,
  as false-positive minutes per hour).

Pure functions and one tally that adds records up. ``ecgpipe evaluate`` scores ``ecgpipe predict``'s endpoint calls
this way on rhythm-annotated datasets; ``tests/benchmarks/bench_context.py --grid`` on paper4's new patients (docs/endpoints.md,
"Every window of the recordings").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields

import numpy as np

from ecgpipe.endpoints import percentile_interval
from ecgpipe.records import RhythmEpisode

LONG_RUN_S = 10.0  # annotated runs at least this long are counted apart: mitdb's VT runs are often a few beats


def endpoint_labels(cfg, endpoint: str) -> set[str]:
    """The rhythm labels of an endpoint's classes in a configuration (``[endpoints.<name>] classes`` -> ``[classes]``)."""
    return {label for c in cfg.endpoints[endpoint].classes for label in cfg.classes[c]}


def window_labels(episodes: list[RhythmEpisode], fs: float, starts_s: np.ndarray, length_s: float,
                  excluded_labels: Iterable[str] = ()) -> np.ndarray:
    """Per window ``[start, start + length)`` (seconds): the label of the annotated episode it lies in whole, "" where
    it lies in none (across a change, before the first annotation) or in an excluded label. One pass serves every
    endpoint (``endpoint_reference``)."""
    starts_s = np.asarray(starts_s, dtype=np.float64)
    excluded_labels = set(excluded_labels)
    labels = np.full(len(starts_s), "", dtype=object)
    if episodes:
        bounds = np.array([ep.start for ep in episodes], dtype=np.float64)
        # the episode each window starts in (searching in samples: episode bounds are samples at the record's rate)
        inside = np.searchsorted(bounds, starts_s * fs, "right") - 1
        for i, (k, end) in enumerate(zip(inside, (starts_s + length_s) * fs)):
            if k >= 0 and end <= episodes[k].end and episodes[k].label not in excluded_labels:
                labels[i] = episodes[k].label
    return labels.astype(str)


def endpoint_reference(labels: np.ndarray, positive_labels: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """From each window's label (``window_labels``): whether it has a reference (``known``), and whether that is one
    of the endpoint's labels."""
    known = labels != ""
    return known, known & np.isin(labels, list(positive_labels))


def window_reference(episodes: list[RhythmEpisode], fs: float, starts_s: np.ndarray, length_s: float,
                     positive_labels: Iterable[str], excluded_labels: Iterable[str] = ()
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``known``, ``positive`` and the label of each window, for one endpoint (``window_labels``,
    ``endpoint_reference``)."""
    labels = window_labels(episodes, fs, starts_s, length_s, excluded_labels)
    return (*endpoint_reference(labels, positive_labels), labels)


def annotated_runs(episodes: list[RhythmEpisode], fs: float, positive_labels: Iterable[str]) -> list[tuple[float, float]]:
    """The endpoint's annotated runs as (start, end) seconds: consecutive positive episodes joined."""
    positive_labels = set(positive_labels)
    runs: list[tuple[float, float]] = []
    for ep in episodes:
        if ep.label not in positive_labels:
            continue
        if runs and runs[-1][1] == ep.start / fs:
            runs[-1] = (runs[-1][0], ep.end / fs)
        else:
            runs.append((ep.start / fs, ep.end / fs))
    return runs


def called_runs(calls: np.ndarray, starts_s: np.ndarray, length_s: float) -> list[tuple[float, float]]:
    """Runs of consecutive windows called positive (1) as (start, end) seconds; a window without a call (-1) or
    called negative ends a run."""
    runs: list[list[float]] = []
    last = -2
    for i in np.flatnonzero(np.asarray(calls) == 1):
        if runs and i == last + 1:
            runs[-1][1] = float(starts_s[i]) + length_s
        else:
            runs.append([float(starts_s[i]), float(starts_s[i]) + length_s])
        last = i
    return [(a, b) for a, b in runs]


def _overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@dataclass
class RecordingTally:
    """One endpoint's calls over whole recordings, added up record by record."""

    positive_windows: int = 0
    true_positives: int = 0
    negative_windows: int = 0
    true_negatives: int = 0
    runs: int = 0
    runs_detected: int = 0
    long_runs: int = 0
    long_runs_detected: int = 0
    called_runs: int = 0
    false_alarms: int = 0
    false_positive_seconds: float = 0.0  # negative windows called positive, by their stride: a long call's wrong time
    seconds: float = 0.0  # the scored windows' time: the denominator of false alarms per hour
    # reference windows the model gave no call (a gap, a flat stretch): on neither side of the rates, so counted here
    # for the report to say how many (a detector silent over many positive windows would otherwise look no worse)
    unscored_positive_windows: int = 0
    unscored_negative_windows: int = 0
    negatives_by_label: dict[str, list[int]] = field(default_factory=dict)  # label -> [windows, called positive]

    def add(self, calls: np.ndarray, starts_s: np.ndarray, length_s: float, stride_s: float, known: np.ndarray,
            positive: np.ndarray, labels: np.ndarray, runs: list[tuple[float, float]]) -> None:
        """One record: its windows' calls (1, 0, or -1 for no call) and reference, and its annotated runs."""
        calls = np.asarray(calls)
        scored = calls >= 0
        self.positive_windows += int((known & positive & scored).sum())
        self.true_positives += int((known & positive & (calls == 1)).sum())
        negative = known & ~positive & scored
        self.negative_windows += int(negative.sum())
        self.true_negatives += int((negative & (calls == 0)).sum())
        self.false_positive_seconds += float((negative & (calls == 1)).sum()) * stride_s
        self.unscored_positive_windows += int((known & positive & ~scored).sum())
        self.unscored_negative_windows += int((known & ~positive & ~scored).sum())
        for label in np.unique(labels[negative]):
            these = negative & (labels == label)
            tally = self.negatives_by_label.setdefault(str(label), [0, 0])
            tally[0] += int(these.sum())
            tally[1] += int((these & (calls == 1)).sum())
        called = called_runs(calls, starts_s, length_s)
        found = [any(_overlaps(run, c) for c in called) for run in runs]
        long = [run[1] - run[0] >= LONG_RUN_S for run in runs]
        self.runs += len(runs)
        self.runs_detected += sum(found)
        self.long_runs += sum(long)
        self.long_runs_detected += sum(f and g for f, g in zip(found, long))
        self.called_runs += len(called)
        self.false_alarms += sum(not any(_overlaps(c, run) for run in runs) for c in called)
        self.seconds += float(scored.sum()) * stride_s

    def add_record(self, calls: np.ndarray, starts_s: np.ndarray, length_s: float, stride_s: float, labels: np.ndarray,
                   episodes: list[RhythmEpisode], fs: float, positive_labels: Iterable[str]) -> None:
        """One record, from its windows' calls and labels (``window_labels``) and its rhythm episodes: the endpoint's
        reference and annotated runs are found here (``endpoint_reference``, ``annotated_runs``)."""
        positive_labels = set(positive_labels)
        known, positive = endpoint_reference(labels, positive_labels)
        self.add(calls, starts_s, length_s, stride_s, known, positive, labels, annotated_runs(episodes, fs, positive_labels))

    def merge(self, other: RecordingTally) -> None:
        """Add another tally's records (e.g. another fold's) to this one."""
        for f in fields(self):
            if f.name != "negatives_by_label":  # every other field is a count
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        for label, (windows, called) in other.negatives_by_label.items():
            tally = self.negatives_by_label.setdefault(label, [0, 0])
            tally[0] += windows
            tally[1] += called

    @property
    def sensitivity(self) -> float | None:
        return self.true_positives / self.positive_windows if self.positive_windows else None

    @property
    def specificity(self) -> float | None:
        return self.true_negatives / self.negative_windows if self.negative_windows else None

    @property
    def false_alarms_per_hour(self) -> float | None:
        return self.false_alarms / (self.seconds / 3600) if self.seconds else None

    @property
    def false_positive_min_per_hour(self) -> float | None:
        """Minutes of negative windows called positive per scored hour: what false alarms per hour cannot see when a
        call runs on well past an annotated run (``to_json``'s ``false_positive_min_per_hour``, since 0.20.0)."""
        return self.false_positive_seconds / 60 / (self.seconds / 3600) if self.seconds else None

    def worst_negatives(self, n: int = 5) -> list[tuple[str, int, float]]:
        return worst_negatives(self.negatives_by_label, n)

    def to_json(self) -> dict:
        rounded = lambda v: None if v is None else round(v, 4)  # noqa: E731
        return {"sensitivity": rounded(self.sensitivity), "specificity": rounded(self.specificity),
                "positive_windows": self.positive_windows, "negative_windows": self.negative_windows,
                "true_positives": self.true_positives, "true_negatives": self.true_negatives,
                "unscored_positive_windows": self.unscored_positive_windows,
                "unscored_negative_windows": self.unscored_negative_windows,
                "runs": self.runs, "runs_detected": self.runs_detected, "long_run_s": LONG_RUN_S,
                "long_runs": self.long_runs, "long_runs_detected": self.long_runs_detected,
                "called_runs": self.called_runs, "false_alarms": self.false_alarms, "hours": round(self.seconds / 3600, 3),
                "false_alarms_per_hour": rounded(self.false_alarms_per_hour),
                "false_positive_min_per_hour": rounded(self.false_positive_min_per_hour),
                "negatives_by_label": {k: list(v) for k, v in sorted(self.negatives_by_label.items())}}


def subject_intervals(per_subject: list[RecordingTally], n_boot: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """95 % bootstrap intervals of the windows' sensitivity and specificity, false alarms and false-positive minutes per hour, resampling
    *subjects* (each a tally of its records) with replacement, as the report's other intervals do: one patient's
    windows are not independent draws, and AF or VT positives often come from a handful of patients. A rate that
    fewer than two subjects measure has none (one subject's rate repeats in every draw: no width is no certainty)."""
    return _bootstrap(per_subject, n_boot, seed)[0]


def subject_averages(per_subject: list[RecordingTally], n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    """EC57's average statistics over whole recordings: the mean of each subject's own window sensitivity (over the
    subjects with positive windows) and specificity (those with negative windows), the lowest subject's, how many,
    and a 95 % bootstrap interval of the mean from the same draws as ``subject_intervals`` (``results.SubjectAverage``
    as JSON; keys ``sensitivity_per_subject``, ``specificity_per_subject``)."""
    return _bootstrap(per_subject, n_boot, seed)[1]


_COUNTS = ("positive_windows", "true_positives", "negative_windows", "true_negatives", "false_alarms", "seconds",
           "false_positive_seconds")


def _bootstrap(per_subject: list[RecordingTally], n_boot: int, seed: int) -> tuple[dict[str, list[float]], dict[str, dict]]:
    counts = np.array([[getattr(t, f) for f in _COUNTS] for t in per_subject], dtype=np.float64).reshape(-1, len(_COUNTS))
    n = len(counts)
    # each subject's own rates, over the subjects that measure them
    own = {}
    for name, right, total in (("sensitivity", 1, 0), ("specificity", 3, 2)):
        held = counts[:, total] > 0
        own[name] = (held, counts[held, right] / counts[held, total])
    rng = np.random.default_rng(seed)
    # each draw as how many times it takes each subject: memory grows with the subjects, not draws x subjects
    draws, mean_draws = [], {name: [] for name in own}
    for _ in range(n_boot if n else 0):
        taken = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        draws.append(taken @ counts)
        for name, (held, rates) in own.items():
            if taken[held].sum():
                mean_draws[name].append(float(np.average(rates, weights=taken[held])))
    pos, tp, neg, tn, alarms, seconds, wrong_s = (np.stack(draws) if draws else counts).T
    with np.errstate(invalid="ignore", divide="ignore"):  # a draw without positives has no sensitivity: left out
        rates = {"sensitivity": (tp / pos, counts[:, 0]), "specificity": (tn / neg, counts[:, 2]),
                 "false_alarms_per_hour": (alarms / (seconds / 3600), counts[:, 5]),
                 "false_positive_min_per_hour": (wrong_s / 60 / (seconds / 3600), counts[:, 5])}
    intervals = {name: [round(v, 4) for v in ci] for name, (r, measured) in rates.items()
                 if (measured > 0).sum() > 1 and (ci := percentile_interval(r)) is not None}
    # None where no subject measures the rate: a row merged over another's (evaluate's new patients) must not show its
    means = {f"{name}_per_subject": {"mean": round(float(r.mean()), 4), "lowest": round(float(r.min()), 4), "subjects": len(r),
                                     "ci95": [round(v, 4) for v in ci] if len(r) > 1 and (ci := percentile_interval(mean_draws[name])) else None}
             if len(r) else None for name, (_, r) in own.items()}
    return intervals, means


def subjects_json(per_subject: dict[str, RecordingTally]) -> dict:
    """One endpoint's whole-recording tally over every subject (``RecordingTally.to_json()``) with its intervals over
    subjects (``ci95``) and how many subjects they resample (``ci_subjects``)."""
    total = RecordingTally()
    for tally in per_subject.values():
        total.merge(tally)
    intervals, means = _bootstrap([per_subject[s] for s in sorted(per_subject)], 1000, 0)
    return {**total.to_json(), "ci95": intervals, "ci_subjects": len(per_subject), **means}


def worst_negatives(negatives_by_label: dict[str, list[int]], n: int = 5) -> list[tuple[str, int, float]]:
    """The negative rhythms with the most windows called positive, from a tally's ``negatives_by_label`` (label ->
    [windows, called positive]; also as stored in evaluation.json): (label, windows, share called positive)."""
    ranked = sorted(negatives_by_label.items(), key=lambda kv: (-kv[1][1], kv[0]))
    return [(label, total, called / total) for label, (total, called) in ranked[:n] if called]
