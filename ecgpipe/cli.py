"""Command line: ``ecgpipe run``, ``ecgpipe status``, ``ecgpipe predict``, ``ecgpipe evaluate``, ``ecgpipe compare``,
``ecgpipe data fetch``, ``ecgpipe config``.

    ecgpipe run --config paper4 --data-dir ../shared/data/physionet --out runs/paper4
    ecgpipe predict --model runs/paper4/model.skops ../shared/data/physionet/mitdb/203 --out predictions/
    ecgpipe compare runs/paper4-best runs/paper4
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import warnings

from ecgpipe import cli_checks, cli_endpoints
from ecgpipe.cli_checks import failure_advice, few_examples, options_that_do_nothing, out_is_a_file, with_earlier_report_note
from ecgpipe.cli_endpoints import endpoint_decisions, endpoint_options, odd_width, one_place, positive_int, scheduler_option
from ecgpipe.config import config_from_dict, load_config, preset_names
from ecgpipe.errors import EcgpipeError, StageFailed, stops_the_command
from ecgpipe.lock import RunLock
from ecgpipe.progress import one_line_warning as _one_line_warning


def _quiet_environment() -> None:
    # Telemetry calls fail slowly on machines without internet; reports never depend on them.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    warnings.filterwarnings("ignore", message=".*nodes obtained by tracing the model in eval mode.*")


def _overrides(args) -> dict:
    run = {"n_workers": args.workers, "max_records": args.max_records, "verify": "content" if args.verify else None}
    over = {"run": {k: v for k, v in run.items() if v is not None}, "features": {"weights": "random"} if args.random_weights else {}}
    return {section: values for section, values in over.items() if values}


def cmd_run(args) -> int:
    _quiet_environment()
    cfg = load_config(args.config, _overrides(args))
    cli_checks.note_a_pilot_from_a_file(args, cfg)
    from ecgpipe.orchestration.console import quiet_console
    from ecgpipe.orchestration.interrupt import RunInterrupted
    from ecgpipe.report_tables import endpoint_rates, listed, recording_words, scored_endpoints
    from flows.ecg_pipeline import run_pipeline

    if not args.verbose:
        quiet_console()
    started = cli_checks.run_json_time(args.out)  # the note on an earlier report is for runs that got going
    try:
        report = run_pipeline(cfg, args.data_dir, args.out, scheduler=args.scheduler, strict=args.strict or None,
                              download=args.download)
    except (RunInterrupted, KeyboardInterrupt) as exc:
        print(f"\necgpipe: {str(exc) or 'interrupted'}{cli_checks.where_a_stop_is_told(args.out, started, exc)}", file=sys.stderr)
        return with_earlier_report_note(args.out, 130, started)
    except StageFailed as exc:  # some units failed: a rerun recomputes only those (the message says so)
        print(f"\necgpipe: run failed: {exc}", file=sys.stderr)
        if (gone := cli_checks.scheduler_gone_advice(args.scheduler)) is not None:  # why every task of a stage failed at once
            print(gone, file=sys.stderr)
        return with_earlier_report_note(args.out, 1, started)
    except EcgpipeError as err:  # bad input or settings, found before or during the run: rerunning the same cannot help
        print(f"ecgpipe: {err}", file=sys.stderr)
        return with_earlier_report_note(args.out, 2, started)
    except Exception as exc:
        print(f"\necgpipe: run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(failure_advice(exc, args.out, args.scheduler), file=sys.stderr)
        return with_earlier_report_note(args.out, 1, started)
    print()
    if report.get("warning"):
        print(report["warning"])
    print(f"report: {args.out.rstrip('/')}/report.html  (and report.md, report.json, confusion_*.png)")
    cnn = "no CNN (rhythm block only)" if report.get("spectrograms_array") is None else f"backbone {report['backbone']}"
    counts = ", ".join(f"{c} {n}" for c, n in report["class_counts"].items())
    print(f"{report['n_segments']} segments ({counts}), {report['n_subjects']} subjects, {cnn}, wall {report['wall_s']:.0f} s"
          + (f", features {report['feature_img_s']:.0f} img/s" if report.get("feature_img_s") else ""))
    if few := few_examples(report):
        print(f"few examples: {few}: their numbers say little (more records, or sampling.per_class)")
    if len(report["comparison"]) > 1:
        print(f"comparison ({len(report['comparison'])} rows; * = best, {report['selected_by']}):")
        for row in report["comparison"]:
            scores = "  ".join(f"{p} acc {m['accuracy']:.3f} F1 {m['macro_f1']:.3f}"
                               + (f" records F1 {m['record_macro_f1']:.3f}" if "record_macro_f1" in m else "")
                               for p, m in row["protocols"].items())
            print(f"  {'*' if row['best'] else ' '} {row['backbone']} / {row['layer']} / {row['classifier']}: {scores}")
    reads_cnn = next(row["backbone"] != "-" for row in report["comparison"] if row["best"])  # "-": a rhythm-only row
    print(f"best: {report['classifier']} on " + (f"{report['backbone']} / {report['layer']}" if reads_cnn else "the rhythm block (no CNN)"))
    endpoints = scored_endpoints(report)
    for name, p in report["protocols"].items():
        print(f"  {name:20s} {p['n_folds']:>2d} folds  accuracy {p['accuracy']:.4f}  balanced {p['balanced_accuracy']:.4f}  macro-F1 {p['macro_f1']:.4f}"
              + (f"  ({p['level']}s)" if p.get("level", "window") != "window" else ""))
        for what, scored in ((what, scored) for protocol, what, scored in endpoints if protocol == name):
            for ep_name, ep in scored.items():
                print(f"  {'':20s} endpoint {ep_name} ({what}): {endpoint_rates(ep)}")
    if report.get("recordings") and report["recordings"]["endpoints"]:
        rec = report["recordings"]
        print(f"  whole recordings ({rec['n_records']} records, {rec['hours']:.1f} h; new patients, as predict calls them; "
              "the decision settings are the config's, not chosen inside the folds: report.md says how far to trust them):")
        for name, r in rec["endpoints"].items():
            print(f"  {'':20s} endpoint {name}: {recording_words(r)}")
    if report.get("model"):
        print(f"model: {report['model']} (sha256 {report['model_digest'][:16]}...)  (ecgpipe predict --model {shlex.quote(report['model'])} RECORD...)")
    for kind, what in LEFT_OUT.items():
        if names := report.get(f"{kind}_records"):
            print(left_out_line(names, what, f"report.json {kind}_records"))
    if report["skipped_records"]:
        shown, more = listed(report["skipped_records"], "skipped_records", 20)  # one line each would flood a big run's console
        print(f"skipped {len(report['skipped_records'])} bad record(s):", *(f"  {s['record']}: {s['error']}" for s in shown), *([f"  {more}"] if more else []), sep="\n")
    return 0


# the records of a labels-CSV database folder that a run or an evaluation leaves out, by kind
LEFT_OUT = {"absent": "the labels CSV lists without any file", "unlisted": "with files but no labels CSV row"}


def left_out_line(names: list[str], what: str, where: str) -> str:
    return f"left out {len(names)} record(s) {what} in the folder (e.g. {', '.join(names[:3])}; all in {where})"


def _saved_run(location) -> dict | None:
    """The run's saved ``config.json`` ({"config": ..., "data_dir": ...}), or None when the folder holds none."""
    from ecgpipe.config_files import ConfigError, is_saved_run

    where = location.child("config.json")
    fix = "give --config and --data-dir, or rerun `ecgpipe run` to rewrite it"
    try:
        saved = location.read_text("config.json")
        doc = json.loads(saved) if saved is not None else None
    except ValueError as err:  # not JSON, or not text at all (UnicodeDecodeError)
        raise ConfigError(f"{where}: the run's saved configuration is unreadable ({err}); {fix}") from None
    if saved is not None and not is_saved_run(doc):
        raise ConfigError(f"{where}: not a run's saved configuration (no 'config' table or no 'data_dir'); {fix}")
    return doc


def cmd_status(args) -> int:
    _quiet_environment()
    from ecgpipe.location import Location

    location = Location(args.out)
    # the saved config.json is needed unless both --config and --data-dir replace what it holds
    doc = None if args.config and args.data_dir else _saved_run(location)
    # the data folder saved with the run unless another is given (never the default folder: status downloads nothing)
    data_dir = args.data_dir or (doc or {}).get("data_dir")
    if args.config:
        cfg = load_config(args.config)
    elif doc is not None:
        cfg = config_from_dict(doc["config"], location.child("config.json"))
    else:
        print(f"ecgpipe: {cli_checks.no_saved_run(location)}", file=sys.stderr)
        return 2
    from ecgpipe.status import run_status

    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"verify": "content"})}) if args.verify else cfg
    status = run_status(cfg, data_dir, args.out)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    last = status["last_run"]
    if r := status.get("running"):
        print(f"{status['out']}: a run is in progress (PID {r.get('pid')} on {r.get('host')}, started {r.get('started')})")
    if r := status.get("unfinished"):
        print(f"{status['out']}: the last run did not finish (PID {r.get('pid')} on {r.get('host')}, started "
              f"{r.get('started')}, is gone: killed?); `ecgpipe run` resumes from what is done")
    elif last.get("status") == "running" and not status.get("running"):  # its lock gone too (deleted, or a run refused)
        print(f"{status['out']}: the last run did not finish (run.json says running, and no run holds the folder)")
    else:
        print(f"{status['out']}: last run {last.get('status') or 'none'}" + (f" ({last['wall_s']:.0f} s)" if last.get("wall_s") else ""))
    print(f"{'stage':18s}{'done':>7s}{'stale':>7s}{'failed':>8s}{'missing':>9s}{'total':>7s}   a rerun computes")
    for stage, c in status["stages"].items():
        fmt = lambda v: "-" if v is None else str(v)  # noqa: E731
        print(f"{stage:18s}{fmt(c['done']):>7s}{fmt(c['stale']):>7s}{fmt(c['failed']):>8s}{fmt(c['missing']):>9s}{fmt(c['total']):>7s}   {c['rerun_computes']}")
    for note in filter(None, (status.get("note"), status.get("input_digests_kept"))):
        print(f"note: {note}")
    return 0


def cmd_data_fetch(args) -> int:
    from ecgpipe.fetch import ChecksumError, fetch, unlisted_records

    unknown = unlisted_records(args.databases, args.mirror, args.records) if args.mirror and args.records else []
    if unknown:
        print(f"ecgpipe: --records {' '.join(unknown)}: listed in no RECORDS of {', '.join(args.databases)} under "
              f"{args.mirror}; nothing fetched", file=sys.stderr)
        return 1
    try:
        for db in args.databases:
            result = fetch(db, args.to, mirror=args.mirror, records=args.records)
            print(f"{db}: {result['to']}, {result['verified']} files verified" + (f" ({result['note']})" if result.get("note") else ""))
    except (ChecksumError, FileNotFoundError) as err:
        print(f"ecgpipe: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_predict(args) -> int:
    _quiet_environment()
    from pathlib import Path

    from ecgpipe.model import load_model
    from ecgpipe.predict import record_paths
    from ecgpipe.predict_many import PER_RECORD_LINES, PredictOptions, predict_records
    from ecgpipe.predict_outputs import check_out_folder, check_output_is_safe, output_names

    require_signed = args.require_signed or None
    model = load_model(args.model, require_signed=require_signed)  # a bad artifact: one line, exit 2
    print(f"model: {model.path} (sha256 {model.digest[:16]}..., {'signature verified' if model.signed else 'unsigned'})")
    cli_checks.warn_of_another_report(model)
    out = Path(args.out)
    paths = record_paths(args.records)  # a folder stands for its records
    names = output_names(paths)  # records of one name from different folders get distinct outputs
    reserved = {model.config.database(db).annotator for db in model.config.databases} | ({args.compare} if args.compare else set())
    decisions = endpoint_decisions(args, model)
    if decisions is None or not one_place(args):
        return 2
    for path in paths:  # before anything is written: never overwrite an input
        check_output_is_safe(path, out / f"{names[path]}.{args.extension}", reserved)
    check_out_folder(out, [out / f"{names[path]}.{args.extension}" for path in paths])
    lead = tuple(int(x) if x.isdigit() else x for x in args.lead) if args.lead else None
    options = PredictOptions(args.extension, args.stride_s, args.smooth, lead, decisions, args.compare)
    try:  # (under --out's lock: another prediction there meanwhile is refused)
        done = predict_records(model, paths, names, out, options, jobs=args.jobs, resume=args.resume,
                               require_signed=require_signed, scheduler=args.scheduler)
    except (KeyboardInterrupt, OSError) as exc:  # Ctrl-C, SIGTERM, or --out's disk full: each finished record kept
        if isinstance(exc, OSError) and not stops_the_command(exc):
            raise
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{exc.filename or out}: {exc.strerror}, stopped"
        print(f"\necgpipe: {why}; every record finished is in {out / 'records.csv'}: --resume predicts the others", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    per_record = ("the class of the whole record" if model.config.classifier.level == "record" else
                  "its windows' mean probability" if model.config.classifier.uses_probabilities else "majority of its windows")
    print(f"episodes: {out / 'episodes.csv'}; one class per record ({per_record}; failed records with their error): "
          f"{out / 'records.csv'}; "
          f"endpoint episodes ({', '.join(model.config.endpoints) or 'none in the model'}; their burden and episode count "
          f"per record in records.csv): {out / 'endpoints.csv'}")
    if done.training_records > PER_RECORD_LINES:
        print(f"ecgpipe: warning: {done.training_records} of the records are this model's training records (the first "
              f"{PER_RECORD_LINES} named above, each noted in records.csv): not an independent test", file=sys.stderr)
    if done.read_with_warnings > PER_RECORD_LINES:
        print(f"ecgpipe: warning: {done.read_with_warnings} records were read with a warning (the first {PER_RECORD_LINES} "
              "named above; each one's note in records.csv says what)", file=sys.stderr)
    if done.failed:
        print(f"ecgpipe: {len(done.failed)} of {len(paths)} record(s) could not be predicted (named above and in records.csv)",
              file=sys.stderr)
    return 1 if done.failed else 0


def cmd_evaluate(args) -> int:
    _quiet_environment()
    from pathlib import Path

    from ecgpipe.config import load_config
    from ecgpipe.evaluate import (
        accounting_words,
        class_mapping,
        evaluate_model,
        independence_warning,
        not_in_dataset,
        write_outputs,
    )
    from ecgpipe.model import load_model
    from ecgpipe.report_tables import endpoint_rates, recording_words
    from ecgpipe.sources import resolve_data_dir

    model = load_model(args.model, require_signed=args.require_signed or None)
    cli_checks.warn_of_another_report(model)
    dataset = load_config(args.config)
    mapping = class_mapping(model.class_names, dataset.class_names, args.map)
    decisions = endpoint_decisions(args, model)
    if decisions is None or not one_place(args):
        return 2
    print(f"model: {model.path} ({model.config.name}; classes {', '.join(model.class_names)}) on {dataset.name} "
          f"({', '.join(dataset.databases)}; classes {', '.join(dataset.class_names)}); mapping "
          + ", ".join(f"{k}->{v}" for k, v in mapping.items()), flush=True)
    out = Path(args.out)
    with RunLock(out):  # another evaluation into --out meanwhile would write its files over these: refused at once
        ev = evaluate_model(model, dataset, resolve_data_dir(args.data_dir), mapping, args.max_records, args.seed or 0,
                            progress=lambda line: print(line, flush=True), endpoint_decisions=decisions, jobs=args.jobs,
                            require_signed=args.require_signed or None, scheduler=args.scheduler)
        write_outputs(ev, out, take_lock=False)
    print(accounting_words(ev.accounting))
    if warning := independence_warning(ev.accounting):
        print(f"ecgpipe: warning: {warning}", file=sys.stderr)
    for r in ev.results.values():
        print(f"per {r['unit']} ({r['n']}): accuracy {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}")
        for name, ep in r["endpoints"].items():
            print(f"  endpoint {name} ({' + '.join(ep['classes'])}): {endpoint_rates(ep)}")
    for name, r in ev.recordings.items():
        if r["note"]:
            print(f"ecgpipe: warning: endpoint {name}: {r['note']}", file=sys.stderr)
        print(f"endpoint {name} over whole recordings ({r['hours']:.1f} h, as predict calls it): {recording_words(r)}")
        if "new_patients" in r:  # the model's own patients among them: the external test is what is left
            new = r["new_patients"]
            print(f"endpoint {name} over whole recordings, new patients only ({new['hours']:.1f} h): {recording_words(new)}")
    for f in ev.failed:
        print(f"  failed {f['record']}: {f['error']}")
    for kind, what in LEFT_OUT.items():
        if names := [r["record"] for r in not_in_dataset(ev) if r["note"].startswith(kind)]:
            print(left_out_line(names, what, "evaluation_records.csv"), file=sys.stderr)
    print(f"report: {out / 'evaluation.md'} (and evaluation.json, evaluation_records.csv)")
    return 1 if ev.failed else 0  # as predict: the others are scored, the outputs written


def cmd_compare(args) -> int:
    from ecgpipe.compare import compare_runs, comparison_markdown
    from ecgpipe.location import write_file

    result = compare_runs(args.run_a, args.run_b, args.protocol or None, n_boot=args.boot, seed=args.seed)
    print(comparison_markdown(result))
    if args.json:
        write_file(args.json, json.dumps(result.to_json(), indent=2))
        print(f"\n{args.json}")
    return 0


def cmd_config(args) -> int:
    if args.name is None:
        print("presets: " + ", ".join(preset_names()))
        return 0
    cfg = load_config(args.name)
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    from ecgpipe.orchestration.preflight import unused_classifier_settings  # what `ecgpipe run` warns about
    print("".join(f"ecgpipe: warning: {m}\n" for m in unused_classifier_settings(cfg)), end="", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecgpipe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipeline (Prefect flow on a Dask cluster)")
    run.add_argument("--config", default="paper4", help="preset name or path to a TOML file (default: paper4)")
    run.add_argument("--data-dir", default=None, help="folder with <db>/RECORDS and WFDB files (default: $ECGPIPE_DATA_DIR, else ./data/physionet)")
    run.add_argument("--out", required=True, help="output folder (store.zarr, report.*)")
    run.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    run.add_argument("--workers", type=positive_int, default=None, help="local Dask worker processes (overrides run.n_workers)")
    run.add_argument("--strict", action="store_true", help="fail on the first bad record instead of skipping it")
    run.add_argument("--verify", action="store_true", help="hash every finished unit's stored data (default: only where its files changed)")
    run.add_argument("--max-records", type=positive_int, default=None,
                     help="a pilot: at most N records of each database, a seeded sample (run.max_records)")
    run.add_argument("--verbose", action="store_true", help="tracebacks and Prefect's per-task lines on the console")
    run.add_argument("--download", action="store_true",
                     help="download configured databases missing from the data folder from PhysioNet (default: never)")
    run.add_argument("--random-weights", action="store_true", help="use untrained backbone weights (tests only; the report says so)")
    run.set_defaults(func=cmd_run)

    st = sub.add_parser("status", help="per stage: units done / stale / failed / missing, and what a rerun computes")
    st.add_argument("--out", required=True, help="output folder of a run")
    st.add_argument("--config", default=None, help="compare against this config instead of the one the last run used")
    st.add_argument("--data-dir", default=None, help="the records' folder (default: the one the run used, saved in OUT/config.json)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--verify", action="store_true", help="hash every finished unit's stored data (default: only where its files changed)")
    st.set_defaults(func=cmd_status)

    data = sub.add_parser("data", help="get PhysioNet databases").add_subparsers(dest="data_command", required=True)
    fetch = data.add_parser("fetch", help="download (or copy from a local mirror) and verify against SHA256SUMS")
    fetch.add_argument("databases", nargs="+", help="e.g. mitdb vfdb")
    fetch.add_argument("--to", required=True, help="data folder; the database goes to TO/<db>/")
    fetch.add_argument("--from", dest="mirror", default=None, help="copy from a local mirror MIRROR/<db>/ instead of downloading")
    fetch.add_argument("--records", nargs="*", default=None, help="only these records")
    fetch.set_defaults(func=cmd_data_fetch)

    pr = sub.add_parser("predict", help="predict rhythm episodes of new records with a run's model.skops")
    pr.add_argument("records", nargs="+", help="WFDB records (path without extension, or the .hea file), EDF/EDF+ files "
                    "(.edf), or folders (the records their RECORDS file lists, else every .hea and .edf in them)")
    pr.add_argument("--model", required=True, help="model artifact written by a run (OUT/model.skops)")
    pr.add_argument("--out", default="predictions",
                    help="folder for episodes.csv, records.csv, endpoints.csv and <record>.<extension> annotations "
                    "(default: predictions)")
    pr.add_argument("--extension", default="pred", help="annotation file extension (default: pred)")
    pr.add_argument("--stride-s", type=cli_endpoints.positive_seconds, default=None, help="seconds between window starts (default: window length)")
    pr.add_argument("--smooth", type=odd_width, default=5,
                    help="majority vote over this many windows (1 = off; default 5; docs/endpoints.md measures widths)")
    endpoint_options(pr)
    pr.add_argument("--lead", nargs="*", default=None, help="preferred leads (default: the training databases' leads)")
    pr.add_argument("--require-signed", action="store_true",
                    help="refuse a model artifact that is not signed with the key in $ECGPIPE_MODEL_KEY(_FILE)")
    pr.add_argument("--compare", default=None, metavar="ANNOTATOR",
                    help="also measure agreement with the record's reference rhythm annotations, e.g. atr")
    pr.add_argument("--jobs", type=positive_int, default=1,
                    help="predict in this many processes, each loading the model once (default 1); outputs as with 1")
    scheduler_option(pr, "predict the records on the workers of this existing Dask cluster, e.g. tcp://10.0.0.5:8786 "
                     "(they see the model, the records and --out at the same paths); outputs as with --jobs 1")
    pr.add_argument("--resume", action="store_true",
                    help="keep the records an earlier prediction into --out finished with this model and these options, "
                    "and predict the others (failed ones again); without it every record is predicted again")
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("evaluate", help="score a run's model on another dataset (external validation)")
    ev.add_argument("--model", required=True, help="model artifact written by a run (OUT/model.skops)")
    ev.add_argument("--config", required=True, help="the dataset's config (preset or TOML): its databases, classes, endpoints")
    ev.add_argument("--data-dir", default=None, help="folder with <db>/RECORDS (default: $ECGPIPE_DATA_DIR, else ./data/physionet)")
    ev.add_argument("--out", required=True, help="folder for evaluation.json, evaluation.md, evaluation_records.csv")
    ev.add_argument("--map", nargs="*", default=None, metavar="MODEL=DATASET",
                    help="class mapping, e.g. afib=afib normal=normal (default: classes of the same name)")
    ev.add_argument("--max-records", type=positive_int, default=None, help="score a seeded random sample of this many records")
    ev.add_argument("--seed", type=int, default=None, help="seed of --max-records' sample (0)")
    ev.add_argument("--require-signed", action="store_true", help="refuse a model without a valid HMAC signature")
    ev.add_argument("--jobs", type=positive_int, default=1,
                    help="read and predict records in this many processes, each loading the model once (default 1); "
                    "the same results as with 1")
    scheduler_option(ev, "read and predict the records on the workers of this existing Dask cluster (they see the model "
                     "and the data at the same paths); the same results as with --jobs 1")
    endpoint_options(ev)
    ev.set_defaults(func=cmd_evaluate)

    cmp = sub.add_parser("compare", help="is one run's classifier better than another's on the same windows? "
                                          "(paired bootstrap over subjects)")
    cmp.add_argument("run_a", help="output folder of a finished run (or its report.json), or of an `ecgpipe evaluate` "
                                   "(or its evaluation.json)")
    cmp.add_argument("run_b", help="another run of the same segments (same data, classes, segment and sampling settings), "
                                   "or another model's evaluation of the same records")
    cmp.add_argument("--protocol", action="append", default=[], help="only this protocol (repeatable; default: every one)")
    cmp.add_argument("--boot", type=positive_int, default=2000, help="bootstrap draws (default 2000)")
    cmp.add_argument("--seed", type=int, default=0, help="seed of the draws")
    cmp.add_argument("--json", default=None, metavar="FILE", help="also write the comparison as JSON")
    cmp.set_defaults(func=cmd_compare)

    cfg = sub.add_parser("config", help="list presets, or print one fully resolved")
    cfg.add_argument("name", nargs="?", default=None, help="a preset's name or a TOML file's path (none: list the presets)")
    cfg.set_defaults(func=cmd_config)
    return parser




def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    args = build_parser().parse_args(argv)
    if (problem := out_is_a_file(args) or options_that_do_nothing(args)) is not None:
        print(f"ecgpipe: {problem}", file=sys.stderr)
        return 2
    try:
        code = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe is found here, not at exit
        return code
    except EcgpipeError as err:  # every expected problem names its file, record or setting: one line, no traceback
        print(f"ecgpipe: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ecgpipe config paper4 | head`: the reader had enough (Python's documented remedy)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
