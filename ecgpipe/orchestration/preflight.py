"""Everything knowable before the first task, checked before the first task: the data folder and each configured
database's RECORDS (and labels CSV), the backbones, layers and local weights files of every extractor of the sweep. A bad
setting fails in a second with one line naming it, not after minutes of segments and spectrograms. A classifier setting
that would do nothing (``inner_choice`` without ``tune``...) is named in a warning."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from ecgpipe.config import ClassifierSettings, ConfigError, PipelineConfig
from ecgpipe.config_files import is_saved_run
from ecgpipe.errors import PipelineError
from ecgpipe.input_digests import CACHE, InputDigests, keep_every_s
from ecgpipe.location import Location
from ecgpipe.plan import keep_for_plan
from ecgpipe.sources import DataSourceError, resolve_data_dir
from ecgpipe.stages.segments import RecordUnit, plan_records


def preflight(cfg: PipelineConfig, data_dir: str | Path | None, download: bool = False,
              out_dir: str | None = None) -> list[RecordUnit]:
    """Check the run's inputs; returns its record units. Downloads only with ``download``, and creates nothing but
    ``out_dir``'s input digests (written every few minutes while the corpus is hashed, whose kept digests spare
    reading unchanged records)."""
    for message in unused_classifier_settings(cfg):
        # a warning, not an error: a config that extends a preset inherits its settings (`unset` removes them)
        warnings.warn(message, UserWarning, stacklevel=1)  # attributed here: the CLI prints it as one line
    root = resolve_data_dir(data_dir)
    if not download and not root.is_dir():
        raise DataSourceError(f"data folder {root} does not exist (give --data-dir DIR holding <db>/RECORDS, or "
                              f"--download to fetch the databases from PhysioNet)")
    from ecgpipe.backbones import check_layer

    for i, features in enumerate(cfg.feature_variants):
        where = "features" if not cfg.sweep.features else f"sweep.features[{i}]"
        try:
            check_layer(features.backbone, features.layer)  # the backbone's name too
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
        if features.weights_path and not Path(features.weights_path).expanduser().is_file():
            raise ConfigError(f"{where}.weights_path: {features.weights_path} not found")
    check_out_folder(out_dir)  # after the settings' checks: a bad setting is named first, whatever the folder holds
    # the digests the last run kept spare reading unchanged records; the same run's plan takes what this one read
    digests = InputDigests.of_run(out_dir, cfg.run.verify, preflight=True) if out_dir else InputDigests()
    # written every few minutes as the corpus is hashed: a job killed outright loses only the last minutes' reading
    digest_of = digests.kept_every(keep_every_s(), digests.save_unless_a_run_holds) if out_dir else digests
    units = plan_records(cfg, root, download=download, digest_of=digest_of)
    if not units:
        raise DataSourceError(f"{root}: the configured databases ({', '.join(cfg.databases)}) list no records")
    if out_dir:
        keep_for_plan(cfg, root, out_dir, units)  # the same run's plan takes them: its records are planned once
    return units


def keep_digests_read(cfg: PipelineConfig, out_dir: str) -> str:
    """After a stop during the checks (a batch system's SIGTERM at a job's time limit or preemption, Ctrl-C): keep
    the input digests computed so far in ``OUT/inputs/digests.json``, so that the next run hashes only the records
    not read yet. Without this, a corpus that takes longer to hash than a job may run (hours for terabytes of Holter
    recordings on a network file system) was hashed from its first record by every job, none getting past the
    checks. Another run holding the folder meanwhile, or a folder that cannot be made, keeps nothing
    (``InputDigests.save_unless_a_run_holds``). Returns what to add to the stop's message ("" when nothing was kept)."""
    digests = InputDigests.of_run(out_dir, cfg.run.verify)  # the preflight's (taken: the run's plan never will)
    if not digests.computed or (digests.new and not digests.save_unless_a_run_holds()):  # (some kept every few minutes)
        return ""
    return (f"; the input digests of the {digests.computed} record(s) read before the stop are kept "
            f"({Location(str(out_dir)).child(CACHE)}): the next run reads only the others")


def unused_classifier_settings(cfg: PipelineConfig) -> list[str]:
    """One line per setting that does nothing in this config: a classifier row's that it never reads
    (``ClassifierSettings.unused_settings``), ``[classifier]`` beside a sweep of other rows, the rhythm block's parts
    while the block is off, and a stride that leaves signal in no window."""
    lines = []
    if cfg.sweep.classifiers and cfg.classifier != ClassifierSettings() and cfg.classifier not in cfg.sweep.classifiers:
        # a file extending cinc2017 to change [classifier] changed nothing: the sweep's rows are what runs
        lines.append("classifier: does nothing here: sweep.classifiers lists the rows that run and this is none of them "
                     "(change the keys in each [[sweep.classifiers]] row; `unset = [\"classifier\"]` drops it, "
                     "`unset = [\"sweep.classifiers\"]` runs it alone)")
    rhythm = cfg.rhythm
    if parts := [p for p in ("irregularity", "beats", "beat_detail", "waveform") if not rhythm.enabled and getattr(rhythm, p)]:
        lines.append(f"rhythm: {', '.join(parts)} {'does' if len(parts) == 1 else 'do'} nothing with rhythm.enabled = false "
                     "(set enabled = true to compute the rhythm block)")
    if (seg := cfg.segments).stride_s > seg.length_s:
        lines.append(f"segments: stride_s ({seg.stride_s:g} s) is longer than length_s ({seg.length_s:g} s): "
                     f"{1 - seg.length_s / seg.stride_s:.0%} of each record lies in no window")
    for i, clf in enumerate(cfg.classifiers):
        if unused := clf.unused_settings():
            where = "classifier" if not cfg.sweep.classifiers else f"sweep.classifiers[{i}]"
            lines.append(f"{where} ({clf.label}): these settings do nothing here: " + "; ".join(unused)
                         + " (remove them; `unset = [...]` removes what an extended base sets)")
    return lines


# what a run leaves in its output folder from its first step on (Run.start: inputs/, then config.json; the lock
# before both): a folder holding one of them is an earlier run's, whose files a rerun writes over
RUN_ENTRIES = (".ecgpipe.lock", "inputs", "markers", "run.json", "store.zarr")
# the files a run writes into its output folder, which would replace a user's own of those names
RUN_FILES = ("config.json", "report.json", "report.md", "report.html", "model.skops", "recordings.csv")
RUN_FILE_PATTERNS = (("records_", ".csv"), ("confusion_", ".png"))


def check_out_folder(out_dir: str | None) -> None:
    """Refuse a local output folder that holds a file a run would write over (report.md, config.json...) while
    nothing in it is a run's: ``--out`` given as a study's folder, or ``.`` inside one. A new or empty folder, one of
    unrelated files (a log, .DS_Store) and an earlier run's are fine."""
    if not out_dir or "://" in str(out_dir) or not os.path.isdir(out_dir):
        return
    entries = set(os.listdir(out_dir))
    if entries & set(RUN_ENTRIES) or _saved_run(Path(out_dir) / "config.json"):
        return
    theirs = sorted(e for e in entries if e in RUN_FILES or any(e.startswith(a) and e.endswith(b) for a, b in RUN_FILE_PATTERNS))
    if theirs:
        raise PipelineError(f"--out {out_dir}: holds {', '.join(theirs[:4])}{' ...' if len(theirs) > 4 else ''}, which "
                            "a run would write over, and nothing of an earlier run: give a new or empty folder, or an "
                            "earlier run's (nothing was written)")


def _saved_run(path: Path) -> bool:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return is_saved_run(doc)


def kernel_memory_problem(cfg: PipelineConfig, n_windows: int, n_records: int, memory_bytes: int | None) -> str | None:
    """Why an RBF SVC row of ``cfg`` will not fit in ``memory_bytes`` (a worker's; None: this machine's), or None: it
    fits libsvm on a dense kernel matrix over its training rows (``ecgpipe.kernels``), 8 n^2 bytes, and the model is
    fitted on every window (every record, for record-level rows). 80 GB at 100 000 windows; a worker killed for memory
    is retried, then the run ends asking to run it again, hours of spectrograms and CNN features later. The flow says
    so as a warning once the segment table is known: rows an earlier run finished are not fitted again."""
    if memory_bytes is None:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for i, clf in enumerate(cfg.classifiers):
        n = n_records if clf.level == "record" else n_windows
        if clf.kind == "svc" and clf.kernel == "rbf" and (need := 8 * n * n) > memory_bytes:
            row = f"sweep.classifiers[{i}]" if cfg.sweep.classifiers else "[classifier]"
            return (f"{row} (an RBF SVC) would fit a {n} x {n} kernel matrix: {need / 2**30:.0f} GiB, more than "
                    f"a worker's {memory_bytes / 2**30:.0f} GiB: its fits will be killed for memory. Cap the windows per "
                    "class ([sampling] max_per_class), or classify this many with kind = 'logreg', 'linear_svc' or 'hgb' "
                    "(docs/scaling.md)")
    return None
