"""Writing a run's report: ``report.json`` (for scripts), ``report.md`` and ``report.html`` (for people), a
confusion-matrix PNG and ``records_<protocol>.csv`` per protocol, and ``recordings.csv`` (endpoints over whole
recordings)."""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
import uuid
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written on headless workers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ecgpipe.location import Location  # noqa: E402
from ecgpipe.protocols import PROTOCOLS, STRATIFIED  # noqa: E402
from ecgpipe.protocols import title as protocol_title  # noqa: E402
from ecgpipe.report_html import FLAT_WORDS, READ_WARNING_WORDS, render_html  # noqa: E402
from ecgpipe.report_tables import (  # noqa: E402
    ENDPOINT_ALIGN,
    RECORDING_ALIGN,
    RECORDING_HEADER,
    RECORDINGS_HOW,
    accounting_line,
    comparison_columns,
    comparison_how,
    endpoint_class_table,
    endpoint_table,
    endpoints_how,
    hardest_subjects,
    listed,
    no_verdict,
    pct,
    per_record_caveat,
    predicted_as,
    recording_rows,
    recordings_summary,
    scored_endpoints,
    software_words,
    spectrogram_shape_words,
    stage_times_words,
)


def confusion_title(name: str, protocol: dict, subject_word: str) -> str:
    """A protocol's title above its confusion matrix, in report.md and its PNG alike: folds over records where one
    scored row is a record (until 0.20.0 the PNG said "over segments; records shared across folds" for those)."""
    return protocol_title(name, protocol["n_folds"], subject_word, protocol.get("level", "window"))


def plot_confusion(cm: list[list[int]], class_names: list[str], title: str, path: Path) -> None:
    cm = np.asarray(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = cm / cm.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2.5, 1.1 * len(class_names) + 2))
    ax.imshow(np.nan_to_num(frac), cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            colour = "white" if np.nan_to_num(frac[i, j]) > 0.6 else "black"
            ax.text(j, i, f"{cm[i, j]}\n{np.nan_to_num(frac[i, j]):.1%}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("annotated")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def segment_words(config: dict) -> str:
    """The segments' settings in words, for the report's summary (they were only in report.json)."""
    seg = config["segments"]
    leads = "two leads" if seg.get("n_leads", 1) == 2 else "one lead"
    return (f"- windows: {seg['length_s']:g} s long, one every {seg['stride_s']:g} s, {leads}, every database resampled "
            f"to {seg['target_fs']:g} Hz")


def render_markdown(report: dict) -> str:
    lines = []
    who = report.get("subject_word", "patient")
    if report.get("warning"):
        lines += [f"**{report['warning']}**", ""]
    lines += [f"# ecgpipe report: {report['config_name']}", ""]
    lines += [
        f"- segments: {report['n_segments']} from " + (f"{report['n_subjects']} patients, " if who == "patient" else "") + f"{report['n_records_used']} records "
        f"({', '.join(report['databases'])})",
        "- classes: " + ", ".join(f"{c} {n}" for c, n in report["class_counts"].items()),
        segment_words(report["config"]),
        f"- {report.get('features_description', '')}",
        (f"- spectrogram: {spectrogram_shape_words(report['spectrogram_shape'])} per segment" if report.get("spectrograms_array")
         else "- spectrogram: none computed (no classifier of the run reads CNN features)"),
        f"- classifier: {report['classifier']}",
        f"- wall time: {report['wall_s']:.0f} s" + stage_times_words(report),
        "",
        "## Results",
        "",
        f"| protocol | folds | accuracy (95 % CI over {who}s) | balanced accuracy | macro-F1 (95 % CI) | accuracy per fold (mean ± std) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines_before_rows = len(lines)
    for name, p in report["protocols"].items():
        ci = p.get("ci95", {})
        acc_ci = f" ({pct(ci['accuracy'][0])} - {pct(ci['accuracy'][1])})" if ci else ""
        f1_ci = f" ({ci['macro_f1'][0]:.3f} - {ci['macro_f1'][1]:.3f})" if ci else ""
        lines.append(
            f"| {name} | {p['n_folds']} | {pct(p['accuracy'])}{acc_ci} | {pct(p['balanced_accuracy'])} | "
            f"{p['macro_f1']:.3f}{f1_ci} | {pct(p['accuracy_fold_mean'])} ± {pct(p['accuracy_fold_std'])} |"
        )
    if len(lines) > lines_before_rows:
        lines += ["", "Accuracy and macro-F1 are pooled over every fold's out-of-fold predictions (each segment tested once, "
                  "by the model that did not train on it); the last column is the mean of the folds' own accuracies, "
                  "which weighs a small fold as much as a large one."]
        if (k := report["protocols"].get(STRATIFIED.name, {}).get("n_folds")) not in (None, 10):
            lines += ["", f"`{STRATIFIED.name}` names the paper's protocol (stratified folds over segments); this run used "
                          f"{k} folds (`cv.n_splits`)."]
    per_record = {name: p["per_record"] for name, p in report["protocols"].items() if p.get("per_record") and p["per_record"]["n_records"]}
    if per_record:
        rule = next(iter(per_record.values()))["rule"]
        classes = list(report["class_counts"])
        lines += ["", f"Per record ({rule}; every record's outcome in `records_<protocol>.csv`):", "",
                  "| protocol | records | accuracy | macro-F1 | " + " | ".join(f"F1 {c}" for c in classes) + " |",
                  "|---|---:|---:|---:|" + "---:|" * len(classes)]
        lines += [f"| {name} | {r['n_records']} | {pct(r['accuracy'])} | {r['macro_f1']:.3f} | "
                  + " | ".join(f"{m['f1']:.3f}" for m in r["per_class"].values()) + " |" for name, r in per_record.items()]
        lines += ["", caveat] if (caveat := per_record_caveat(report)) else []
    if len(report.get("comparison", [])) > 1:
        header, rows = comparison_columns(report)
        lines += ["", "## Comparison", "",
                  f"Every (feature extractor, classifier) row of the sweep; **bold** = best ({report['selected_by']}), the "
                  "row detailed below and saved as the model. Scores are pooled out-of-fold, ± the std over folds. "
                  + comparison_how(report), "",
                  "| " + " | ".join(header) + " |", "|---|---|---|" + "---:|" * (len(header) - 3)]
        for row, cells in zip(report["comparison"], rows):
            lines.append("| " + " | ".join(f"**{c}**" if row["best"] else c for c in cells) + " |")
    lines += endpoint_markdown(report) + recordings_markdown(report)
    for name, p in report["protocols"].items():
        level = p.get("level", "window")
        lines += ["", f"### {name}", "", confusion_title(name, p, who) + (f"; {p['note']}" if p["note"] else ""), ""]
        lines += ["| class | precision (PPV) | recall (sensitivity) | specificity | F1 | " + ("records" if level == "record" else "support") + " |",
                  "|---|---:|---:|---:|---:|---:|"]
        for cls, m in p["per_class"].items():
            spec = "-" if m.get("specificity") is None else f"{m['specificity']:.3f}"
            lines.append(f"| {cls} | {m['precision']:.3f} | {m['recall']:.3f} | {spec} | {m['f1']:.3f} | {m['support']} |")
        lines += ["", f"![confusion matrix]({p['confusion_png']})", ""]
        names = list(p["per_class"])
        lines += ["| annotated \\ predicted | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for cls, row in zip(names, p["confusion_matrix"]):
            lines.append(f"| {cls} | " + " | ".join(str(v) for v in row) + " |")
        if p.get("per_record") and p["per_record"]["n_records"] and level == "window":
            r = p["per_record"]
            lines += ["", f"Records ({r['n_records']}; each by the {r.get('rule') or 'majority vote of its segments'}):", "",
                      "| class | precision | recall | F1 | records |", "|---|---:|---:|---:|---:|"]
            lines += [f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |" for c, m in r["per_class"].items()]
            lines += ["", "| annotated \\ predicted (records) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
            lines += [f"| {cls} | " + " | ".join(str(v) for v in row) + " |" for cls, row in zip(names, r["confusion_matrix"])]
        hardest = hardest_subjects(p)
        if hardest:
            lines += ["", f"Hardest {who}s (lowest recall, at least 10 segments of the class):", "",
                      f"| {who} | annotated class | segments | recall | predicted as |", "|---|---|---:|---:|---|"]
            lines += [f"| {r['subject']} | {r['class']} | {r['n']} | {r['recall']:.2f} | {predicted_as(r)} |" for r in hardest]
    lines += ["", "## Data", "", "| class | " + " | ".join(report["databases"]) + f" | {who}s |"]
    lines.append("|---|" + "---:|" * (len(report["databases"]) + 1))
    for cls in report["class_counts"]:
        by_db = report["class_counts_by_database"].get(cls, {})
        lines.append(
            f"| {cls} | " + " | ".join(str(by_db.get(db, 0)) for db in report["databases"])
            + f" | {report['subjects_per_class'].get(cls, 0)} |"
        )
    if report.get("failed_rows"):
        lines += ["", "## Classifier rows that failed", ""]
        lines += [f"- {f['row']}: {f['error']}" for f in report["failed_rows"]]
    lines += _record_list(report, "skipped_records", "## Skipped records", [], lambda s: f"`{s['record']}`: {s['error']}")
    if report.get("record_accounting"):
        lines += ["", accounting_line(report["record_accounting"])]
    lines += _record_list(report, "records_with_flat_leads", "## Records with flat leads",
                          [f"Windows in which a lead is a flat line ({FLAT_WORDS}):", ""],
                          lambda r: f"`{r['record']}`: {r['flat']} of {r['windows']}")
    lines += _record_list(report, "records_read_with_warnings", "## Records read with warnings", [f"{READ_WARNING_WORDS}:", ""],
                          lambda r: f"`{r['record']}`: {r['warning']}")
    lines += _record_list(report, "records_without_windows", "## Records without windows",
                          ["Read without error, but no window of a configured class:", ""], lambda r: f"`{r['record']}`: {r['reason']}")
    if report.get("unmatched_labels"):
        lines += ["", "Rhythm labels configured for a class but found in no record: " + ", ".join(report["unmatched_labels"])]
    if report.get("model"):
        lines += ["", f"Model artifact (best row, refitted on every segment): `{report['model']}` "
                  f"(sha256 `{report.get('model_digest') or '?'}`); "
                  "apply it with `ecgpipe predict --model <file> RECORD...`."]
    software = software_words(report)
    lines += ["", f"ecgpipe {report['code_version']}" + (f" ({software})" if software else "")
              + "; full configuration in report.json.", ""]
    return "\n".join(lines)


def _record_list(report: dict, key: str, title: str, words: list[str], line) -> list[str]:
    """A section naming records (``report[key]``), its first ``LISTED`` only (``report_tables.listed``)."""
    if not report.get(key):
        return []
    shown, more = listed(report[key], key)
    return ["", title, "", *words] + [f"- {line(r)}" for r in shown] + ([f"- {more}"] if more else [])


def endpoint_markdown(report: dict) -> list[str]:
    """The clinical endpoints of the best row under every protocol (and per record, where records vote)."""
    lines = []
    for name, what, endpoints in scored_endpoints(report):
        why_not = no_verdict(report, name, what)
        if not lines:
            lines += ["", "## Clinical endpoints", "",
                      endpoints_how(report.get("subject_word", "patient")), ""]
        header, rows = endpoint_table(endpoints, why_not)
        lines += [f"{name} ({what}):", "", "| " + " | ".join(header) + " |", ENDPOINT_ALIGN]
        lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        header, rows = endpoint_class_table(endpoints, why_not)
        if rows:
            lines += ["Per rhythm:", "", "| " + " | ".join(header) + " |", "|---|---|---:|---|---:|---|"]
            lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
    return lines


def recordings_markdown(report: dict) -> list[str]:
    """The endpoints over whole recordings, out of fold ([recordings] score = true)."""
    rec = report.get("recordings")
    if not rec:
        return []
    lines = ["## Endpoints over whole recordings, as `ecgpipe predict` calls them (new patients)", ""]
    if rec["endpoints"]:
        lines += [recordings_summary(rec) + " " + RECORDINGS_HOW + " Per record: `recordings.csv`.", "",
                  "| " + " | ".join(RECORDING_HEADER) + " |", RECORDING_ALIGN]
        lines += ["| " + " | ".join(row) + " |" for row in recording_rows(rec["endpoints"])] + [""]
    lines += [f"Note: {note}." for note in rec["notes"]]
    lines += [f"- not scored: `{f['record']}`: {f['error']}" for f in rec["failed"]]
    return lines + [""]


def recordings_csv(rec: dict) -> str:
    """``record,subject,fold,hours,<endpoint>_<measure>...``: one row per recording scored over its whole length."""
    measures = ("sensitivity", "specificity", "positive_windows", "negative_windows", "runs", "runs_detected",
                "called_runs", "false_alarms", "false_positive_min_per_hour")
    names = list(rec["endpoints"])
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["record", "subject", "fold", "hours", *[f"{n}_{m}" for n in names for m in measures]])
    for r in rec["records"]:
        # an endpoint its fold had no detector for: empty cells
        cells = [r["endpoints"].get(n, {}).get(m) for n in names for m in measures]
        writer.writerow([r["record"], r["subject"], r["fold"], r["hours"], *["" if c is None else c for c in cells]])
    return buf.getvalue()


def records_csv(outcomes: dict) -> str:
    """``record,subject,label,predicted,votes_<class>...,folds``: one row per record, from the stored columns
    (``RecordOutcomes.to_json()``)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    classes = outcomes["classes"]
    w.writerow(["record", "subject", "label", "predicted", *[f"votes_{c}" for c in classes], "folds"])
    w.writerows([record, subject, classes[label], classes[predicted], *[f"{v:.4f}" for v in votes], " ".join(map(str, folds))]
                for record, subject, label, predicted, votes, folds in zip(
                    outcomes["record"], outcomes["subject"], outcomes["label"], outcomes["predicted"], outcomes["votes"],
                    outcomes["folds"]))
    return buf.getvalue()


def report_json_text(report: dict) -> str:
    """report.json's text: indented, but each column of a protocol's outcomes (``per_subject``, ``per_record.records``)
    on one line. ``json.dumps(indent=2)`` puts every value of a list on a line of its own: millions of lines per
    protocol at 300 000 records, where a column is one line now."""
    token, parked = f"@@column-{uuid.uuid4().hex}-", {}

    def park(columns: dict | None) -> dict | None:  # each column's compact JSON, held aside; a placeholder in its place
        if not isinstance(columns, dict) or not columns:  # None, or the list form of reports before 0.18.0
            return columns
        out = {}
        for name, value in columns.items():
            if isinstance(value, list) and name != "classes":
                out[name] = f"{token}{len(parked)}"
                parked[f'"{out[name]}"'] = json.dumps(value, separators=(",", ":"))
            else:
                out[name] = value
        return out

    protocols = {}
    for name, p in report.get("protocols", {}).items():
        p = {**p, "per_subject": park(p["per_subject"])} if "per_subject" in p else dict(p)
        if p.get("per_record") and "records" in p["per_record"]:
            p["per_record"] = {**p["per_record"], "records": park(p["per_record"]["records"])}
        protocols[name] = p
    text = json.dumps({**report, "protocols": protocols} if "protocols" in report else report, indent=2)
    return re.sub(f'"{token}[0-9]+"', lambda m: parked[m.group(0)], text)


def write_report(report: dict, out_dir, examples_uri: str | None = None) -> str:
    """Write report.json, report.md, report.html (self-contained) and the confusion PNGs into the output location."""
    out = out_dir if isinstance(out_dir, Location) else Location(out_dir)
    out.makedirs()
    pngs, files = {}, {}
    with tempfile.TemporaryDirectory() as staging:  # matplotlib writes local files; then they go where the run lives
        for name, p in report["protocols"].items():
            png = f"confusion_{name}.png"
            title = confusion_title(name, p, report.get("subject_word", "patient"))
            plot_confusion(p["confusion_matrix"], list(p["per_class"]), title, Path(staging) / png)
            files[png] = pngs[name] = (Path(staging) / png).read_bytes()
            p["confusion_png"] = png
    for name, p in report["protocols"].items():  # every record's out-of-fold outcome, for datasets labelled per record
        if p.get("per_record") and p["per_record"]["records"]:
            files[f"records_{name}.csv"] = records_csv(p["per_record"]["records"]).encode()
    if report.get("recordings") and report["recordings"]["records"]:
        files["recordings.csv"] = recordings_csv(report["recordings"]).encode()
    files["report.md"] = render_markdown(report).encode()
    files["report.html"] = render_html(report, pngs, examples_uri).encode()
    files["report.json"] = report_json_text(report).encode()  # last: the set is there when it is
    out.write_files(files)  # every file rendered first, then replaced as one set (a full disk leaves the old one whole)
    # an earlier report's files this one has not (a protocol or [recordings] since left out) would pass for this run's
    earlier = {f"{stem}_{name}.{ext}" for name in PROTOCOLS for stem, ext in (("confusion", "png"), ("records", "csv"))}
    out.delete_files(sorted((earlier | {"recordings.csv"}) - set(files)))
    return out.child("report.md")

