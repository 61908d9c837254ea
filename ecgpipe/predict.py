"""Applying a trained model to new records: sliding windows -> predicted rhythm episodes (CSV + WFDB annotations).

For each record the model's own settings are used (lead preference, resampling rate, window length, spectrogram,
backbone/layer, rhythm features), so prediction sees windows exactly like the ones the classifier was trained on.

* Windows start every ``stride_s`` seconds (default: the window length) across the whole record.
* Per-window classes are smoothed by a centred majority vote over ``smooth`` windows (default 5 = 10 s with 2-s
  windows; ``smooth=1`` turns it off): rhythms last longer than one window, isolated flips are mostly errors.
* Consecutive windows of one class form an episode ``[start of first window, start of last window + stride)``.
* Each binary endpoint of the model's config (``[endpoints]``, e.g. shockable = VT + VF) is called as its
  ``EndpointDecision`` says: by its detector's score averaged over ``width`` windows, then segmented with a change
  ``penalty`` (``smoothing.segmented_call``: an episode starts or ends only where the averaged scores pay for it, so
  a long episode is not cut by a few weak windows; the penalty is in the detector's score units: the default was
  measured on paper4's SVC margins); models trained before detectors existed pool the
  unsmoothed classes over the endpoint's classes and vote over ``width`` windows (``smoothing.pooled_vote``). Its
  episodes, and per record its burden (the share of the scored windows where it is called).
* The WFDB annotation file holds one rhythm-change annotation (symbol ``+``) per episode with the aux note of the
  class's first configured label (``afib`` -> ``(AFIB``), like MIT-BIH's own rhythm annotations.

Agreement with reference annotations (``compare_with``) is measured per second (the class predicted for each second
that the reference labels with a configured class) and per episode (a reference episode is recovered when most of
its seconds are predicted as its class).
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from ecgpipe.classifier_settings import DEFAULT_CHANGE_PENALTY, DEFAULT_DECISION_WINDOWS
from ecgpipe.edf import EDF_EXTENSION, is_edf
from ecgpipe.errors import RecordError
from ecgpipe.grid import grid_features
from ecgpipe.keys import EDF_SPELLINGS
from ecgpipe.model import TrainedModel
from ecgpipe.recording_endpoints import called_runs
from ecgpipe.records import EcgRecord, list_records, read_edf_record, read_episodes, read_record
from ecgpipe.smoothing import majority_smooth, pooled_vote, smoothed_call
from ecgpipe.sources import records_in_folder

if TYPE_CHECKING:
    from ecgpipe.classifier_settings import EndpointSettings

# an endpoint's decision unless its config says otherwise (``[endpoints.<name>] decision_windows, change_penalty``)
DEFAULT_ENDPOINT_SMOOTH = DEFAULT_DECISION_WINDOWS
DEFAULT_ENDPOINT_PENALTY = DEFAULT_CHANGE_PENALTY


@dataclass(frozen=True)
class EndpointDecision:
    """How ``predict`` calls one endpoint: the detector's mean score over ``width`` windows (odd), its calls changing
    only where those scores pay ``penalty`` for a change (0: the mean's sign; models without detectors: a pooled vote
    over ``width`` windows, no penalty). A model's own are in its config's endpoints (``of``)."""

    width: int = DEFAULT_ENDPOINT_SMOOTH
    penalty: float = DEFAULT_ENDPOINT_PENALTY

    @classmethod
    def of(cls, endpoint: EndpointSettings) -> EndpointDecision:
        return cls(endpoint.decision_windows, endpoint.change_penalty)

    def __post_init__(self):
        if self.width < 1 or self.width % 2 == 0:
            raise ValueError(f"endpoint width must be an odd number of windows, got {self.width}")
        if not (math.isfinite(self.penalty) and self.penalty >= 0):
            raise ValueError(f"endpoint change penalty must be a finite number >= 0, got {self.penalty}")


MODEL_DECISIONS: Mapping[str, EndpointDecision] = MappingProxyType({})  # every endpoint as the model's config says


@dataclass
class Episode:
    start_s: float
    end_s: float
    class_name: str
    label: str  # aux note written to the annotation file


@dataclass
class RecordPrediction:
    record: str  # record path as given: without extension for WFDB, the .edf file for EDF
    fs: float
    lead: str
    duration_s: float
    window_starts_s: np.ndarray
    window_classes: np.ndarray  # smoothed class index per window; -1 = no prediction (NaN samples)
    stride_s: float
    episodes: list[Episode]
    agreement: dict = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    samples_per_frame: int = 1  # the record's (``EcgRecord``): annotation times count frames of fs / this
    note: str = ""  # how the record was scored when not as usual (shorter than one window), what was read anyway
    # (n_windows, n_classes) class probabilities, NaN rows unscored: models whose record rule is the mean probability
    window_probabilities: np.ndarray | None = None
    raw_classes: np.ndarray | None = None  # per window before smoothing (what the record's vote counts)
    # per endpoint of the model's config (e.g. shockable = vt + vf): 1/0 per window, -1 unscored (the endpoint's
    # detector's scores smoothed, or the pooled vote of the 4-class calls for a model without detectors)
    endpoint_calls: dict[str, np.ndarray] = field(default_factory=dict)
    # what was read anyway (EcgRecord.notes: a checksum mismatch read with 'warn', a signal file longer than its header
    # says): in ``note`` too, and printed by the command, whatever process or cluster worker read the record
    read_warnings: list[str] = field(default_factory=list)

    def endpoint_episodes(self, name: str) -> list[tuple[float, float]]:
        """(start_s, end_s) of each run of windows where endpoint ``name`` is called: each window spans one stride, so
        that consecutive episodes meet; the last ends with the record."""
        runs = called_runs(self.endpoint_calls[name], self.window_starts_s, self.stride_s)
        return [(start, min(end, self.duration_s)) for start, end in runs]

    def endpoint_burden(self, name: str) -> float | None:
        """Share of the scored windows where endpoint ``name`` is called (e.g. AF burden); None when none is scored."""
        scored = self.endpoint_calls[name][self.endpoint_calls[name] >= 0]
        return float(scored.mean()) if len(scored) else None

    @property
    def record_class(self) -> str | None:
        """The record's class, by the model's record rule as in training: the majority vote of its windows' classes
        before smoothing (ties: the class listed first), or the argmax of their mean class probability."""
        if self.window_probabilities is not None:
            scored = self.window_probabilities[~np.isnan(self.window_probabilities).any(axis=1)]
            return self.class_names[int(np.argmax(scored.mean(axis=0)))] if len(scored) else None
        votes = self.raw_classes if self.raw_classes is not None else self.window_classes
        votes = votes[votes >= 0]
        return self.class_names[int(np.argmax(np.bincount(votes, minlength=len(self.class_names))))] if len(votes) else None


def record_paths(args: list[str]) -> list[str]:
    """The records ``ecgpipe predict`` was given, each once (``data/*`` names a record by its .hea and its .dat): each
    argument a record (``record_path``) or a folder, which stands for the records its ``RECORDS`` file lists, else
    for every WFDB header and EDF file directly in it (sorted; subfolders holding records are named in a warning)."""
    paths = []
    for arg in args:
        if not os.path.isdir(arg):
            paths.append(record_path(arg))
            continue
        listing = os.path.join(arg, "RECORDS")
        nested = [] if os.path.isfile(listing) else _subfolders_with_records(arg)
        # as a run reads RECORDS: a byte-order mark or a file suffix is no part of a name
        names = list_records(arg) if os.path.isfile(listing) else records_in_folder(arg)
        unread = (f"{len(nested)} subfolder(s) of it hold records ({', '.join(nested[:3])}{', ...' if len(nested) > 3 else ''}), "
                  "which a folder does not stand for: name them too, or list every record in a RECORDS file")
        if not names:
            raise RecordError(arg, "a folder without records (no RECORDS file, WFDB header .hea or EDF file .edf in it)"
                              + (f"; {unread}" if nested else ""))
        if nested:
            warnings.warn(f"{arg}: {unread}", UserWarning, stacklevel=2)
        paths += [record_path(os.path.join(arg, name)) for name in names]
    once: dict[str, str] = {}
    for path in paths:  # d/418, ./d/418.hea and a link to d name one record: the first spelling stands for it
        once.setdefault(os.path.realpath(path), path)
    return list(once.values())


def _subfolders_with_records(folder: str) -> list[str]:
    """The subfolders of ``folder`` with a WFDB header or an EDF file directly in them (sorted): one listing each, for
    a warning (a walk of every header below, as ``records_in_folder`` makes, could take minutes on a large tree)."""
    found = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir() and any(f.endswith(".hea") or is_edf(f) for f in os.listdir(entry.path)):
            found.append(entry.name)
    return found


def record_path(arg: str) -> str:
    """A record given as ``dir/100``, ``dir/100.hea`` or ``dir/100.dat`` -> ``dir/100``, one spelling per path:
    ``dir//100`` and ``./dir/100`` are ``dir/100`` too (a ``..`` stays: it may lead out of a linked folder)."""
    base, ext = os.path.splitext(arg)
    # any other file of a record names it too: ``d/418*`` gives its annotators' files (418.qrs) beside its .hea
    annotation = ext and not is_edf(arg) and not os.path.isfile(arg + ".hea") and os.path.isfile(base + ".hea")
    path = base if ext in {".hea", ".dat", ".atr", ".mat"} or annotation else arg
    if not is_edf(path) and not os.path.isfile(path + ".hea"):
        # a record named as a folder's listing names it (``records_in_folder``, a RECORDS line): an EDF record is
        # read from its file, whatever the case of its suffix (.edf, .EDF, .Edf...)
        path = next((path + s for s in EDF_SPELLINGS if os.path.isfile(path + s)), path)
    parts = [p for p in path.split(os.sep) if p not in ("", ".")]
    if not parts:
        return path
    return (os.sep if path.startswith(os.sep) else "") + os.sep.join(parts)


def record_stem(path: str) -> str:
    """A record's path without a file extension: ``dir/100`` for the WFDB record and for ``dir/100.edf``."""
    return path[: -len(EDF_EXTENSION)] if is_edf(path) else path


def read_new_record(path: str, model: TrainedModel, lead: list[str | int] | None = None, warn: bool = True) -> EcgRecord:
    """Read and validate a record (WFDB, or an EDF/EDF+ file) with the same checks as in training; annotations are
    not needed. What is read anyway is in the record's ``notes`` (a WFDB record's, with ``warn``, a warning too)."""
    from ecgpipe.config import DatabaseSettings

    cfg = model.config
    # any sampling rate: the signal is resampled to the model's rate. Missing samples (NaN: the gaps of a multi-segment
    # record) leave the windows they touch unscored, whatever the training data's policy: records.csv's note counts them
    settings = DatabaseSettings(lead=lead or training_leads(cfg, "lead"), second_lead=training_leads(cfg, "second_lead"))
    if is_edf(path):
        rec = read_edf_record(path, settings, nan_policy="drop", n_leads=cfg.segments.n_leads)
    else:
        folder, name = os.path.split(path)
        rec = read_record(folder or ".", "new", name, settings, nan_policy="drop", require_annotations=False,
                          n_leads=cfg.segments.n_leads, warn=warn)
    if note := below_training_rates(rec.fs, cfg):
        rec.notes.append(f"{path}: {note}")
    return rec


def below_training_rates(fs: float, cfg) -> str | None:
    """What to say of a record sampled below every rate the model learnt from (its databases' ``fs``, or a known
    database's; where none is known, twice the spectrogram's top frequency): resampled up, it lacks the band above fs / 2 that training's records had,
    and its calls may differ (mitdb 201 given as 100 Hz: 16 % of paper4-best's 4-class window calls changed)."""
    from ecgpipe.databases import KNOWN_DATABASES

    rates = [float(db.fs) if isinstance(db.fs, (int, float)) else KNOWN_DATABASES[name].fs
             for name, db in cfg.databases.items() if isinstance(db.fs, (int, float)) or name in KNOWN_DATABASES]
    # at or above the model's own rate the spectrogram's band is whole; below every training rate beats differ too
    lowest = min([*rates, cfg.segments.target_fs]) if rates else 2 * cfg.spectrogram.fmax
    if fs >= lowest:
        return None
    return (f"sampled at {fs:g} Hz, below the model's {lowest:g} Hz (the lowest of its training records' rates and its own): "
            "its spectrograms and beats differ from training's, and its calls are less reliable")


def training_leads(cfg, which: str) -> list[str | int]:
    """The training databases' lead preferences (``lead`` or ``second_lead``), in order, without repeats."""
    leads: list[str | int] = []
    for db in cfg.databases.values():
        leads += [x for x in getattr(db, which) if x not in leads]
    return leads


def training_recording(model: TrainedModel, path: str) -> str | None:
    """The name of the training record that ``path`` is, if the model learnt from it: the same header and signal
    bytes, or (models since 0.14.0) the same signal files under another name or header (a copy renamed, or with
    labels appended to its header)."""
    from ecgpipe.input_digests import signal_fingerprint
    from ecgpipe.keys import file_digest, signal_digest

    folder, name = os.path.split(path)
    if is_edf(path):  # an EDF record's signal digest is its file's (keys.record_files)
        digest, name = file_digest([path]), os.path.splitext(name)[0]
    else:
        digest = signal_digest(folder or ".", name)
    found = _training_index(model.training, "recordings_sha256").get(digest)
    if found is None and (signals := _training_index(model.training, "signals_fingerprint")):
        found = signals.get(signal_fingerprint(folder or ".", name))
    return found


_INDEXES: dict[tuple[int, str], tuple[dict, dict[str, str]]] = {}  # (id of a model's training dict, key) -> it, index


def _training_index(training: dict, key: str) -> dict[str, str]:
    """``training[key]`` (record -> digest) turned round, digest -> its first record, built once per model: a look-up
    per predicted record, not a scan of every training record (10^5 records predicted against 10^5 learnt from)."""
    kept = _INDEXES.get((id(training), key))
    if kept is None or kept[0] is not training:  # held with its dict: that id names no other dict meanwhile
        index: dict[str, str] = {}
        for record, digest in training.get(key, {}).items():
            index.setdefault(digest, record)
        kept = _INDEXES[(id(training), key)] = (training, index)
        while len(_INDEXES) > 8:  # a few models' worth (predict and evaluate use one; tests many)
            _INDEXES.pop(next(iter(_INDEXES)))
    return kept[1]


def episodes_from_windows(starts_s, classes, stride_s: float, duration_s: float, class_names, labels) -> list[Episode]:
    episodes: list[Episode] = []
    for start, c in zip(starts_s, classes):
        end = min(float(start) + stride_s, duration_s)
        if c < 0:
            continue
        if episodes and episodes[-1].class_name == class_names[c] and abs(episodes[-1].end_s - start) < 1e-9:
            episodes[-1].end_s = end
        else:
            episodes.append(Episode(float(start), end, class_names[c], labels[c]))
    return episodes


def predict_record(
    model: TrainedModel, path: str, stride_s: float | None = None, smooth: int = 5, lead: list[str | int] | None = None,
    endpoint_decisions: EndpointDecision | Mapping[str, EndpointDecision] | None = MODEL_DECISIONS,
) -> RecordPrediction:
    """Predict the record at ``path``; the prediction's ``record`` is ``path`` as given (``100``, not ``./100``). What
    was read anyway is in its ``read_warnings`` and ``note``, not warned about: the caller says it where it is seen."""
    pred = predict_loaded(model, read_new_record(path, model, lead, warn=False), stride_s, smooth, endpoint_decisions)
    pred.record = path
    return pred


def predict_loaded(model: TrainedModel, rec: EcgRecord, stride_s: float | None = None, smooth: int = 5,
                   endpoint_decisions: EndpointDecision | Mapping[str, EndpointDecision] | None = MODEL_DECISIONS,
                   ) -> RecordPrediction:
    """Windows of a record already read and validated -> smoothed classes and episodes, and each endpoint of the
    model's config called as ``endpoint_decisions`` says (one for all, or one per endpoint; an endpoint not named:
    its config's decision, as the model carries it; None: no endpoint calls)."""
    cfg = model.config
    grid = grid_features(cfg, rec, stride_s)  # validates stride_s
    stride_s = grid.stride_s  # as cut (whole samples), so that consecutive windows' episodes meet exactly
    starts, usable, cnn, rhythm, note = grid.starts, grid.usable, grid.cnn, grid.rhythm, grid.note
    if not usable.all():
        note = "; ".join(filter(None, [note, f"{int((~usable).sum())} of {len(usable)} windows touch missing samples "
                                              "(NaN, e.g. gaps between segments): not scored"]))
    note = "; ".join(filter(None, [note, *rec.notes]))
    fs_out = cfg.segments.target_fs
    classes = np.full(len(starts), -1, dtype=np.int64)
    proba = model.predict_proba(cnn, rhythm)  # None unless the record rule is the mean probability
    probabilities = None
    if proba is None:
        classes[usable] = model.predict(cnn, rhythm)
    else:  # the record rule's classes, what training's folds predicted (one pass of the model, not two)
        probabilities = np.full((len(starts), len(cfg.class_names)), np.nan)
        probabilities[usable] = proba
        classes[usable] = np.argmax(proba, axis=1)
    raw = classes.copy()
    classes = majority_smooth(classes, smooth)
    duration = len(rec.signal) / rec.fs
    labels = [cfg.classes[c][0] for c in cfg.class_names]
    starts_s = starts / fs_out
    episodes = episodes_from_windows(starts_s, classes, stride_s, duration, cfg.class_names, labels)
    endpoints = {} if endpoint_decisions is None else cfg.endpoints
    decisions = (endpoint_decisions if isinstance(endpoint_decisions, Mapping)
                 else dict.fromkeys(cfg.endpoints, endpoint_decisions))
    scores = model.endpoint_scores(cnn, rhythm) if model.detectors and endpoints and usable.any() else {}
    endpoint_calls = {}
    for name, endpoint in endpoints.items():
        decision = decisions.get(name) or EndpointDecision.of(endpoint)
        if name in scores:  # the endpoint's detector: its score averaged over the neighbours, then segmented
            score = np.full(len(starts), np.nan)
            score[usable] = scores[name]
            endpoint_calls[name] = smoothed_call(score, decision.width, decision.penalty)
        else:  # no detector: the 4-class calls pooled over the endpoint's classes, then voted
            endpoint_calls[name] = pooled_vote(raw, [cfg.class_names.index(c) for c in endpoint.classes], decision.width)
    return RecordPrediction(rec.path, rec.fs, "+".join(rec.leads), duration, starts_s, classes, stride_s, episodes,
                            class_names=list(cfg.class_names), note=note, window_probabilities=probabilities, raw_classes=raw,
                            endpoint_calls=endpoint_calls, read_warnings=list(rec.notes),
                            samples_per_frame=rec.samples_per_frame)


def per_second_classes(episodes_or_pred, duration_s: float, names: list[str]) -> np.ndarray:
    """Class index of each whole second (at its midpoint); -1 where no (configured) class applies."""
    out = np.full(int(duration_s), -1, dtype=np.int64)
    mid = np.arange(len(out)) + 0.5
    for ep in episodes_or_pred:
        if ep.class_name in names:
            out[(mid >= ep.start_s) & (mid < ep.end_s)] = names.index(ep.class_name)
    return out


def compare_with_reference(pred: RecordPrediction, model: TrainedModel, annotator: str = "atr") -> dict:
    """Per-second and per-episode agreement of a prediction with the record's reference rhythm annotations."""
    cfg = model.config
    names = cfg.class_names
    frame_fs = pred.fs / pred.samples_per_frame  # annotation times count frames (samples, but in multi-frequency records)
    n_frames = int(round(pred.duration_s * frame_fs))
    stem = record_stem(pred.record)  # an EDF file's reference annotations lie beside it: dir/100.atr for dir/100.edf
    if not os.path.isfile(f"{stem}.{annotator}"):
        return {"annotator": annotator, "available": False, "reason": f"reference annotation {stem}.{annotator} not found"}
    reference = [
        Episode(ep.start / frame_fs, ep.end / frame_fs, cfg.label_to_class[ep.label], ep.label)
        for ep in read_episodes(stem, annotator, n_frames)
        if ep.label in cfg.label_to_class
    ]
    ref_s = per_second_classes(reference, pred.duration_s, names)
    pred_s = per_second_classes(pred.episodes, pred.duration_s, names)
    scored = (ref_s >= 0) & (pred_s >= 0)
    per_class = {}
    for c, name in enumerate(names):
        mask = scored & (ref_s == c)
        if mask.any():
            per_class[name] = {"seconds": int(mask.sum()), "agreement": float((pred_s[mask] == c).mean())}
    recovered, long_enough = 0, []
    for ep in reference:
        if ep.end_s - ep.start_s < cfg.segments.length_s:
            continue  # shorter than one window: no window can lie inside it
        seconds = pred_s[int(np.ceil(ep.start_s)) : int(ep.end_s)]
        hit = len(seconds) > 0 and Counter(seconds.tolist()).most_common(1)[0][0] == names.index(ep.class_name)
        long_enough.append({"class": ep.class_name, "start_s": round(ep.start_s, 1), "end_s": round(ep.end_s, 1), "recovered": bool(hit)})
        recovered += hit
    return {
        "annotator": annotator,
        "seconds_scored": int(scored.sum()),
        "per_second_agreement": float((pred_s[scored] == ref_s[scored]).mean()) if scored.any() else None,
        "per_class": per_class,
        "reference_episodes": len(long_enough),
        "episodes_recovered": int(recovered),
        "episodes": long_enough,
        "predicted_episodes": len(pred.episodes),
    }


def write_annotations(pred: RecordPrediction, out_dir: str | Path, extension: str = "pred", name: str | None = None) -> str:
    """One ``+`` annotation with the class's aux note at each episode start, at the record's own sampling rate,
    written to ``out_dir/<name>.<extension>`` (name: the record's, by default; it may hold a subfolder);
    read it back with ``wfdb.rdann(os.path.join(out_dir, name), extension)``."""
    import wfdb

    name = name or os.path.basename(record_stem(pred.record))
    folder, name = os.path.split(os.path.join(str(out_dir), name))
    os.makedirs(folder, exist_ok=True)
    frame_fs = pred.fs / pred.samples_per_frame  # WFDB annotation times count frames, as a reader of the record expects
    samples = np.array([int(round(ep.start_s * frame_fs)) for ep in pred.episodes], dtype=np.int64)
    if len(samples) == 0:
        raise ValueError(f"{pred.record}: no window could be classified; no annotation file written")
    wfdb.wrann(
        name,
        extension,
        sample=samples,
        symbol=["+"] * len(samples),
        aux_note=[ep.label for ep in pred.episodes],
        fs=frame_fs,
        write_dir=folder,
    )
    return os.path.join(folder, f"{name}.{extension}")
