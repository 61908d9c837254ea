"""The plan of a run: every unit of every stage, its content key, and whether the store already holds it.

One :class:`RunPlan` serves ``ecgpipe run`` (which computes the units that are not done) and ``ecgpipe status``
(which counts them), so the two cannot disagree. A unit is done when its marker (``ecgpipe.markers``) holds the key
the unit would get now *and* the stored data still hashes to the digest the marker recorded.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ecgpipe import store as zs
from ecgpipe.config import PipelineConfig
from ecgpipe.input_digests import InputDigests, keep_every_s
from ecgpipe.keys import array_digest, content_key, edf_record_file
from ecgpipe.labels import read_record_labels
from ecgpipe.location import Location
from ecgpipe.markers import Markers
from ecgpipe.orchestration import interrupt
from ecgpipe.results import ProtocolResult, RecordingScores, protocols_from_json
from ecgpipe.sources import DataSourceError, records_in_folder, resolve_data_dir
from ecgpipe.stages import classification, features, recording_grid, recording_scores, segments, spectrograms, table
from ecgpipe.stages.classification import ComparisonRow, FoldResult
from ecgpipe.stages.features import FeatureArray
from ecgpipe.stages.segments import RecordSummary, RecordUnit
from ecgpipe.stages.table import SegmentTable
from ecgpipe.store import Layout

STAGES = (segments.STAGE, table.STAGE, spectrograms.STAGE, features.STAGE, classification.STAGE, recording_grid.STAGE,
          recording_scores.STAGE)
OPTIONAL_STAGES = (recording_grid.STAGE, recording_scores.STAGE)  # run only with [recordings] score = true


def chunk_unit(i: int) -> str:
    """Marker name of chunk i."""
    return f"{i:06d}"


# A row's folds are kept one by one as they finish, until the row's own marker holds them all: a run stopped with 45
# of a row's 50 folds done (hours of nested CV at 300 000 records) computes 5 when it is run again.
FOLD_STAGE = "classify_folds"


def fold_unit(row_unit: str, protocol: str, fold: int) -> str:
    return f"{row_unit}__{protocol}__{fold}"


def write_fold(markers: Markers, row_unit: str, row_key: str, protocol: str, fold: int, result: FoldResult) -> None:
    """Keep one finished fold of a row (``ComparisonRow.unit``, ``.key``), from the task that computed it."""
    markers.write(FOLD_STAGE, fold_unit(row_unit, protocol, fold), content_key(row_key, protocol, fold), {"fold": result.to_json()})


def kept_fold(markers: Markers, row_unit: str, row_key: str, protocol: str, fold: int) -> FoldResult | None:
    """The fold an earlier run kept for the row of this key, else None (another key's is not this row's)."""
    marker = markers.read(FOLD_STAGE, fold_unit(row_unit, protocol, fold))
    if not marker or marker.get("key") != content_key(row_key, protocol, fold):
        return None
    try:
        return FoldResult(**marker["fold"])
    except (KeyError, TypeError, ValueError):  # written by another version, or damaged: recompute
        return None


# a record "has files" when any of these lies in its folder; one that has some but not all is read and fails by name
RECORD_FILE_EXTENSIONS = (".hea", ".mat", ".dat", ".edf")


def without_files(cfg: PipelineConfig, database: str, folder: str | Path, names: list[str]) -> list[str]:
    """The records among ``names`` that a labels CSV lists (a database folder without RECORDS: the CSV is the list)
    and that have no file at all in the folder: a subset of a published dataset copied beside its full REFERENCE.csv.
    They are left out and counted, not failed. Where a RECORDS file lists the records, a missing one still fails: that
    index is the database's own. None of the CSV's records having files is an error naming the folder."""
    csv_name = cfg.databases[database].labels_csv
    if not csv_name or not names or (Path(folder) / "RECORDS").is_file():
        return []
    absent = [n for n in names if not any(os.path.exists(os.path.join(folder, n + ext)) for ext in RECORD_FILE_EXTENSIONS)
              and not edf_record_file(folder, n)]
    if len(absent) == len(names):
        below = {Path(r).name: r for r in records_in_folder(folder, nested=True) if "/" in r}  # in its subfolders?
        found = next((below[n] for n in names if n in below), None)
        why = (f"{found} is there: a labels CSV names a record in a subfolder by its path from the folder "
               f"({found},<label>)" if found else f"is --data-dir the folder above {Path(folder).name}/?")
        raise DataSourceError(f"{folder}: none of the {len(names)} records {csv_name} lists has a file there "
                              f"(no {absent[0]}.hea, .mat or .edf): {why}")
    return absent


def unlisted_files(cfg: PipelineConfig, database: str, folder: str | Path) -> list[str]:
    """Records with files in a labels-CSV database folder without RECORDS (the CSV is the list there) that the CSV
    does not list, in its subfolders too: a record whose row was forgotten would otherwise vanish without a word.
    Not used, but named in the report. None where RECORDS or ``databases.<db>.records`` says which records count."""
    settings = cfg.databases[database]
    if not settings.labels_csv or settings.records or (Path(folder) / "RECORDS").is_file():
        return []
    listed = set(read_record_labels(folder, settings.labels_csv))
    found = records_in_folder(folder, nested=True)
    return [f"{database}/{name}" for name in found if name not in listed]


# The preflight's record units, by (output location, settings, data folder), until the same run's plan takes them:
# the preflight check and the flow's plan of one `ecgpipe run` are one process, and planning reads every header
# (minutes at 10^6 records), so it is done once per run (a deployment's run too: it calls ``run_pipeline``).
# ``ecgpipe status`` plans afresh; ``run_pipeline`` drops what its flow did not take (``forget_preflight``).
_PREFLIGHT_UNITS: dict[tuple[str, str, str], list[RecordUnit]] = {}


def _handoff(cfg: PipelineConfig, data_dir, out) -> tuple[str, str, str]:
    location = out if isinstance(out, Location) else Location(str(out))
    return location.url, cfg.model_dump_json(), str(resolve_data_dir(data_dir))


def keep_for_plan(cfg: PipelineConfig, data_dir, out, units: list[RecordUnit]) -> None:
    """Leave the preflight's units for the plan of the run it checked (``RunPlan.create``)."""
    _PREFLIGHT_UNITS[_handoff(cfg, data_dir, out)] = units


def forget_preflight(cfg: PipelineConfig, data_dir, out) -> None:
    """Drop the preflight's units of a run that stopped before its plan took them: a later plan in this process
    (``status`` from a notebook) must read the data as it is then, and 10^6 units are worth freeing."""
    _PREFLIGHT_UNITS.pop(_handoff(cfg, data_dir, out), None)
    InputDigests.forget(out, cfg.run.verify)  # and its input digests


@dataclass
class RunPlan:
    cfg: PipelineConfig
    out: Location
    records: list[RecordUnit]
    absent: list[str] = field(default_factory=list)  # listed by a labels CSV, no file in the folder (``without_files``)
    unlisted: list[str] = field(default_factory=list)  # files a labels CSV does not list (``unlisted_files``)
    inputs: InputDigests = field(default_factory=InputDigests)  # the records' input digests (``save()``: kept for the next run)

    @classmethod
    def create(cls, cfg: PipelineConfig, data_dir: str | Path | None, out_dir, download: bool = True,
               keep_digests: bool = False) -> RunPlan:
        """``keep_digests``: a run's plan, which holds the folder's lock, writes the digests it computes every few
        minutes (``input_digests.KEEP_EVERY_S``) as it hashes the corpus afresh (a deployment's flow run)."""
        out = out_dir if isinstance(out_dir, Location) else Location(str(out_dir))
        inputs = InputDigests.of_run(out, cfg.run.verify)  # the preflight's, when it ran in this process
        units = _PREFLIGHT_UNITS.pop(_handoff(cfg, data_dir, out), None)
        if units is None:
            digest_of = inputs.kept_every(keep_every_s(), lambda: inputs.save(inputs.document(prune=False))) if keep_digests else inputs
            try:
                units = segments.plan_records(cfg, data_dir, download=download, digest_of=digest_of)
            except interrupt.RunInterrupted as exc:  # stopped while hashing (a job's time limit): the next run goes on from here
                if not isinstance(exc, interrupt.LockLost):
                    inputs.save()
                raise
        absent, unlisted = set(), []
        for db in cfg.databases:
            mine = [u for u in units if u.database == db]
            if mine:
                absent |= {(db, name) for name in without_files(cfg, db, mine[0].db_dir, [u.record for u in mine])}
                unlisted += unlisted_files(cfg, db, mine[0].db_dir)
        return cls(cfg, out, [u for u in units if (u.database, u.record) not in absent],
                   [u.shown for u in units if (u.database, u.record) in absent], unlisted, inputs)

    def notes(self) -> list[str]:
        """What the run leaves out of a labels-CSV database, in words (warned when the records are read)."""
        notes = []
        if self.absent:  # a subset of a dataset beside its full labels CSV: counted in the report, not failed
            notes.append(f"{len(self.absent)} record(s) listed in the labels CSV have no file in the folder and are left "
                         f"out (e.g. {', '.join(self.absent[:3])}; report.json absent_records names them)")
        if self.unlisted:
            notes.append(f"{len(self.unlisted)} record(s) with files in the folder have no row in the labels CSV and are "
                         f"not used (e.g. {', '.join(self.unlisted[:3])}; report.json unlisted_records names them)")
        files_by_folded = {name.lower(): name for name in self.unlisted}
        if same := [(name, files_by_folded[name.lower()]) for name in self.absent if name.lower() in files_by_folded]:
            notes.append(f"{len(same)} of them are the same record written in another case in the labels CSV and in "
                         f"the file names (e.g. {', '.join(f'{a} ~ {b}' for a, b in same[:3])}): names are matched as "
                         "written (file systems that ignore case aside): write them alike")
        return notes

    @property
    def store(self) -> str:
        return zs.store_path(self.out)

    @property
    def markers(self) -> Markers:
        return Markers(self.out, self.cfg.run.verify)

    # ----------------------------------------------------------------------------------------------- records
    def record_summaries(self) -> dict[str, RecordSummary | None]:
        """Per record unit (by marker name): its summary when its stored windows are current, else None."""
        return self._each_record(segments.record_done)

    def windows_summaries(self, known: dict[str, RecordSummary | None] | None = None) -> dict[str, RecordSummary | None]:
        """Like :meth:`record_summaries`, but a record whose rhythm block alone is stale counts with its new key: its
        windows, and so the segment table's rows and the spectrograms, would come out the same. ``known``: the result
        of :meth:`record_summaries`, whose current records need no second check."""
        return self._each_record(segments.windows_done, skip=known)

    def _each_record(self, check, skip: dict[str, RecordSummary | None] | None = None) -> dict[str, RecordSummary | None]:
        # checking a record reads and hashes its arrays: decompression and hashing release the GIL, so a few threads
        # check thousands of records ~2x faster on 2 cores (a no-change rerun of CinC's 5970 records: 85 s before)
        markers, skip = self.markers, skip or {}
        todo = [u for u in self.records if skip.get(u.name) is None]
        with ThreadPoolExecutor(max_workers=4) as pool:  # a run asked to stop (SIGTERM) checks no more records
            done = dict(zip([u.name for u in todo], pool.map(
                lambda u: None if interrupt.requested() else check(self.store, markers, u), todo)))
        interrupt.check()
        return {u.name: skip.get(u.name) or done[u.name] for u in self.records}

    # ------------------------------------------------------------------------------------------------- table
    def table(self, records: list[RecordSummary]) -> SegmentTable:
        return table.plan_table(self.store, records, self.cfg)

    def table_done(self, segment_table: SegmentTable) -> bool:
        return table.table_is_done(self.store, segment_table, self.markers)

    # ------------------------------------------------------------------------------------------------ chunks
    @property
    def needs_cnn(self) -> bool:
        """Whether any classifier row reads CNN features. A run whose every row reads the rhythm block alone (a
        simple peer: RR statistics and gradient boosting) computes no spectrogram and no CNN feature."""
        return any(c.inputs != "rhythm" for c in self.cfg.classifiers)

    @property
    def spectrogram_array(self) -> str:
        return spectrograms.array_name(self.cfg)

    def spectrogram_keys(self, segment_table: SegmentTable) -> list[str]:
        return spectrograms.chunk_keys(self.cfg, segment_table)

    def feature_arrays(self, spectrogram_keys: list[str]) -> list[FeatureArray]:
        return features.feature_arrays(self.cfg, spectrogram_keys)

    def chunk_done(self, array: str, i: int, key: str, n_rows: int) -> bool:
        """Chunk i of ``array`` is complete and current: its marker has this key and its rows are intact (their files
        unchanged, or else their rows hash to its digest: ``Markers.intact``)."""
        markers = self.markers
        marker = markers.read(array, chunk_unit(i))
        if marker is None or marker.get("key") != key:
            return False
        lo, hi = i * self.cfg.run.chunk_size, min((i + 1) * self.cfg.run.chunk_size, n_rows)
        rows = lambda: zs.open_array(f"{self.store}/{Layout.data(array)}", mode="r")[lo:hi]  # noqa: E731
        return markers.intact(marker, zs.in_store(Layout.row_chunk(array, i)), lambda: array_digest(rows()))

    # --------------------------------------------------------------------------------------------------- rows
    def rows(self, extractors: list[FeatureArray], table_key: str) -> list[ComparisonRow]:
        return classification.comparison_rows(self.cfg, extractors, table_key)

    def row_done(self, row: ComparisonRow) -> dict[str, ProtocolResult] | None:
        """The row's stored protocol results when current, else None."""
        marker = self.markers.read(classification.STAGE, row.unit)
        if not marker or marker.get("key") != row.key:
            return None
        try:
            return protocols_from_json(marker["protocols"])
        except (KeyError, ValueError):  # written by another version, or damaged: recompute
            return None

    def kept_folds(self, rows: list[ComparisonRow], jobs: list[classification.FoldJob]) -> dict[int, FoldResult]:
        """The folds (by index into ``jobs``) that an earlier run of the same rows finished. Called by the run that
        holds the folder, as its classification starts: the folds kept for rows it does not evaluate (settings or
        code changed since a run stopped) are removed, as they would never be read (files being written, ``.tmp-*``,
        are left alone)."""
        kept = {i: kept_fold(self.markers, rows[j.row].unit, rows[j.row].key, j.protocol, j.fold) for i, j in enumerate(jobs)}
        folder, units = f"markers/{FOLD_STAGE}", {row.unit for row in rows}
        for rel in self.markers.location.files_below(folder) if self.markers.location.exists(folder) else []:
            name = rel.rsplit("/", 1)[-1]
            if not name.startswith(".tmp-") and name.removesuffix(".json").rsplit("__", 2)[0] not in units:
                self.markers.location.delete(rel)
        return {i: fold for i, fold in kept.items() if fold is not None}

    def forget_folds(self, row: ComparisonRow, folds: list[tuple[str, int]]) -> None:
        """Remove the kept folds of a row whose marker now holds them."""
        for protocol, fold in folds:
            self.markers.delete(FOLD_STAGE, fold_unit(row.unit, protocol, fold))

    def recording_grids(self, row: ComparisonRow, records: list[RecordSummary]) -> list[recording_grid.GridUnit]:
        """The grid units of the row's endpoints over whole recordings (``[recordings] score``)."""
        return recording_grid.grid_units(row.cfg, self.records, records)

    def grid_done(self, unit: recording_grid.GridUnit) -> bool:
        return recording_grid.grid_done(self.store, self.markers, unit)

    def grids_done(self, units: list[recording_grid.GridUnit]) -> dict[str, bool]:
        """Per grid unit (by name): whether it is done; checked by a few threads, as the records are."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            return dict(zip([u.name for u in units], pool.map(self.grid_done, units)))

    def recording_scores_done(self, row: ComparisonRow, grids: list[recording_grid.GridUnit]) -> RecordingScores | None:
        """The stored whole-recording endpoints of ``row`` on these grids when current, else None."""
        marker = self.markers.read(recording_scores.STAGE, row.unit)
        if not marker or marker.get("key") != recording_scores.scores_key(row, grids):
            return None
        try:
            return RecordingScores.model_validate(marker["result"])
        except (KeyError, ValueError):  # written by another version, or damaged: recompute
            return None
