"""A self-contained HTML report (figures embedded as data URIs), for a cardiologist and an ML engineer alike."""

from __future__ import annotations

import base64
import html
import io
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ecgpipe.protocols import short as protocol_short  # noqa: E402
from ecgpipe.protocols import title as protocol_title
from ecgpipe.report_tables import (  # noqa: E402
    RECORDING_HEADER,
    RECORDINGS_HOW,
    accounting_line,
    comparison_how,
    comparison_scores,
    endpoint_class_table,
    endpoint_table,
    endpoints_how,
    hardest_subjects,
    listed,
    no_verdict,
    per_record_caveat,
    predicted_as,
    recording_rows,
    recordings_summary,
    scored_endpoints,
    selection_protocol,
    software_words,
    stage_times_words,
    versus_best_words,
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1b1f24}
h1{font-size:1.6em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #d0d7de;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f6f8fa}
.warning{background:#ffebe9;border:1px solid #ff8182;padding:.8em;font-weight:bold}
.key{font-size:1.25em;font-weight:600}.muted{color:#57606a}.grid{display:flex;flex-wrap:wrap;gap:1em}
img{max-width:100%}tr.best td{background:#dafbe1;font-weight:600}table.compare{font-size:.82em;width:100%}
table.compare td:nth-child(2){text-align:left;min-width:11em}
table.patients :is(td,th):nth-child(2),table.patients :is(td,th):last-child{text-align:left}
th.group{text-align:center}table.compare th:nth-child(2){text-align:left}.sd{color:#57606a;font-size:.85em}details pre{background:#f6f8fa;padding:1em;overflow:auto;font-size:.85em}
"""

# a record whose lead is flat in some windows is used as labelled: the report says so, it does not drop them
FLAT_WORDS = "a lead off, or a recorder's zeros; the windows are used as labelled"
READ_WARNING_WORDS = ("Read and used despite what their files show (databases.<db>.checksum = 'off' silences those about "
                      "checksums and signal lengths; naming the lead in databases.<db>.lead, those about a lead named like no ECG)")


def png_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def example_spectrograms_figure(examples: dict[str, np.ndarray], freqs: np.ndarray, seconds: float) -> str:
    """A grid: one column per class, a few example spectrograms each (time on x, frequency on y)."""
    classes = list(examples)
    rows = max(len(v) for v in examples.values())
    fig, axes = plt.subplots(rows, len(classes), figsize=(2.6 * len(classes), 2.0 * rows), squeeze=False)
    for j, cls in enumerate(classes):
        for i in range(rows):
            ax = axes[i, j]
            if i < len(examples[cls]):
                ax.imshow(examples[cls][i].astype(np.float32), origin="lower", aspect="auto", cmap="magma",
                          extent=[0, seconds, freqs[0], freqs[-1]])
            ax.set_xticks([] if i < rows - 1 else [0, seconds])
            ax.set_yticks([] if j else [0, int(freqs[-1])])
            if i == 0:
                ax.set_title(cls)
    fig.supxlabel("seconds")
    fig.supylabel("Hz")
    fig.tight_layout()
    return png_data_uri(fig)


def _table(header: list[str], rows: list[list], css_class: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{f' class={css_class}' if css_class else ''}><tr>{head}</tr>{body}</table>"


def comparison_table(report: dict) -> str:
    """Two header rows (protocol, then metric), one row per (extractor, classifier), the best row highlighted."""
    e = html.escape
    protocols = list(report["protocols"])
    selection = selection_protocol(report)
    top = "<tr><th rowspan=2>features</th><th rowspan=2>classifier</th>" + "".join(
        f"<th colspan=3 class=group>{e(protocol_short(p))}</th>" for p in protocols) + (
        f"<th rowspan=2>{e(protocol_short(selection))} macro-F1<br>minus best<br>(paired 95 % CI)</th></tr>")
    sub = "<tr>" + "<th>accuracy</th><th>balanced acc.</th><th>macro-F1</th>" * len(protocols) + "</tr>"
    body = []
    rhythm_only = f"no CNN: {e(report.get('rhythm_description') or 'rhythm features')}"
    for row in report["comparison"]:
        features = rhythm_only if row["backbone"] == "-" else f"{e(row['backbone'])}<br><code>{e(str(row['layer']))}</code>"
        cells = [features, e(row["classifier"])]
        cells += [f"{score:.3f}<br><span class=sd>± {std:.3f}</span>" for score, std in comparison_scores(row, protocols)]
        cells.append(e(versus_best_words(row, selection)))
        body.append(f"<tr{' class=best' if row['best'] else ''}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table class='compare'>{top}{sub}{''.join(body)}</table>"


def _record_list(report: dict, key: str, title: str, words: str, detail) -> list[str]:
    """A section naming records (``report[key]``): each with ``detail(entry)`` (HTML), the first ``LISTED`` only."""
    if not report.get(key):
        return []
    shown, more = listed(report[key], key)
    items = "".join(f"<li><code>{html.escape(r['record'])}</code>: {detail(r)}</li>" for r in shown)
    return [f"<h3>{title}</h3>" + (f"<p>{html.escape(words)}</p>" if words else "") + f"<ul>{items}"
            + (f"<li>{html.escape(more)}</li>" if more else "") + "</ul>"]


def endpoint_sections(report: dict) -> list[str]:
    """The clinical endpoints of the best row under every protocol (and per record, where records vote)."""
    e = html.escape
    parts = []
    for name, what, endpoints in scored_endpoints(report):
        why_not = no_verdict(report, name, what)
        header, rows = endpoint_table(endpoints, why_not)
        parts += [f"<p><b>{e(name)}</b> ({e(what)}):</p>", _table(header, [[e(c) for c in row] for row in rows])]
        header, rows = endpoint_class_table(endpoints, why_not)
        if rows:
            parts += ["<p>Per rhythm:</p>", _table(header, [[e(c) for c in row] for row in rows])]
    if parts:
        parts = ["<h2>Clinical endpoints</h2>", f"<p class='muted'>{e(endpoints_how(report.get('subject_word', 'patient')))}</p>",
                 *parts]
    return parts


def render_html(report: dict, confusion_pngs: dict[str, bytes], examples_uri: str | None) -> str:
    pct = lambda x: f"{100 * x:.2f} %"  # noqa: E731
    e = html.escape
    who = report.get("subject_word", "patient")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ecgpipe report: {e(report['config_name'])}</title>",
             f"<style>{CSS}</style></head><body>"]
    if report.get("warning"):
        parts.append(f"<p class='warning'>{e(report['warning'])}</p>")
    parts.append(f"<h1>ecgpipe report: {e(report['config_name'])}</h1>")
    parts.append(
        f"<p>{report['n_segments']} ECG segments from {report['n_subjects']} {who}s ({report['n_records_used']} records of "
        f"{', '.join(map(e, report['databases']))}), classified into {', '.join(map(e, report['class_counts']))}. "
        f"{e(report.get('features_description') or 'Features: ' + report['backbone'] + ' layer ' + str(report['layer']))}. "
        f"Classifier: {e(report['classifier'])}.</p>"
    )
    rows = []
    for name, p in report["protocols"].items():
        ci = p.get("ci95")
        acc_ci = f"<br><span class='muted'>95 % CI {pct(ci['accuracy'][0])} - {pct(ci['accuracy'][1])}</span>" if ci else ""
        f1_ci = f"<br><span class='muted'>{ci['macro_f1'][0]:.3f} - {ci['macro_f1'][1]:.3f}</span>" if ci else ""
        rows.append([f"<b>{e(name)}</b><br><span class='muted'>{e(protocol_title(name, p['n_folds'], who, p.get('level', 'window')))}</span>", p["n_folds"],
                     f"<span class='key'>{pct(p['accuracy'])}</span>{acc_ci}", pct(p["balanced_accuracy"]), f"{p['macro_f1']:.3f}{f1_ci}",
                     f"{pct(p['accuracy_fold_mean'])} ± {pct(p['accuracy_fold_std'])}"])
    parts += ["<h2>Results</h2>", _table(["protocol", "folds", "accuracy", "balanced accuracy", "macro-F1", "accuracy per fold"], rows)]
    parts.append(f"<p class='muted'>The paper's protocol lets segments of one {who} appear in training and test folds; the "
                 f"grouped protocol never does, and estimates performance on new {who}s. Intervals: 95 % bootstrap over "
                 f"{who}s.</p>")
    classes = list(report["class_counts"])
    with_records = {n: p["per_record"] for n, p in report["protocols"].items() if p.get("per_record") and p["per_record"]["n_records"]}
    if with_records:
        rule = next(iter(with_records.values()))["rule"]
        per_record = [[e(n), r["n_records"], pct(r["accuracy"]), f"{r['macro_f1']:.3f}", *[f"{m['f1']:.3f}" for m in r["per_class"].values()]]
                      for n, r in with_records.items()]
        parts += [f"<p>Per record ({e(rule)}; every record's outcome in <code>records_&lt;protocol&gt;.csv</code>):</p>",
                  _table(["protocol", "records", "accuracy", "macro-F1", *[f"F1 {c}" for c in classes]], per_record)]
        parts += [f"<p class='muted'>{e(caveat)}</p>"] if (caveat := per_record_caveat(report)) else []
        for n, r in with_records.items():
            cm = [[e(c), *row] for c, row in zip(classes, r["confusion_matrix"])]
            parts.append(f"<details><summary>{e(n)}: the records' confusion matrix</summary>"
                         + _table(["annotated \\ predicted", *classes], cm) + "</details>")
    parts += endpoint_sections(report)
    if report.get("recordings"):
        rec = report["recordings"]
        parts.append("<h2>Endpoints over whole recordings, as <code>ecgpipe predict</code> calls them (new patients)</h2>")
        if rec["endpoints"]:
            parts += [f"<p class='muted'>{e(recordings_summary(rec))} {e(RECORDINGS_HOW)} Per record: <code>recordings.csv</code>.</p>",
                      _table(RECORDING_HEADER, [[e(c) for c in row] for row in recording_rows(rec["endpoints"])])]
        parts += [f"<p>Note: {e(note)}.</p>" for note in rec["notes"]]
        parts += [f"<p>Not scored: <code>{e(f['record'])}</code>: {e(f['error'])}</p>" for f in rec["failed"]]
    if len(report.get("comparison", [])) > 1:
        parts += ["<h2>Comparison of feature extractors and classifiers</h2>",
                  f"<p>Highlighted: the best row ({e(report['selected_by'])}); it is detailed below and saved as the "
                  "run's model. Scores are pooled out-of-fold predictions; ± the standard deviation over folds. "
                  + e(comparison_how(report)) + "</p>",
                  comparison_table(report)]
    for name, p in report["protocols"].items():
        parts.append(f"<h2>{e(name)}</h2>")
        per_class = [[e(c), f"{m['precision']:.3f}", f"{m['recall']:.3f}", "-" if m.get("specificity") is None else f"{m['specificity']:.3f}",
                      f"{m['f1']:.3f}", m["support"]] for c, m in p["per_class"].items()]
        uri = "data:image/png;base64," + base64.b64encode(confusion_pngs[name]).decode()
        folds = [[f["fold"], f["n_train"], f["n_test"], f["test_subjects"], pct(f["accuracy"]), f"{f['macro_f1']:.3f}"] for f in p["folds"]]
        parts.append("<div class='grid'><div>" + _table(["class", "precision (PPV)", "recall (sensitivity)", "specificity", "F1",
                                                              "records" if p.get("level") == "record" else "segments"], per_class)
                     + f"</div><div><img alt='confusion matrix {e(name)}' src='{uri}' width='420'></div></div>")
        parts.append("<details><summary>per-fold scores</summary>"
                     + _table(["fold", "train", "test", f"test {who}s", "accuracy", "macro-F1"], folds) + "</details>")
        hardest = [[e(r["subject"]), e(r["class"]), r["n"], f"{r['recall']:.2f}", e(predicted_as(r))] for r in hardest_subjects(p)]
        if hardest:
            parts.append(f"<details><summary>hardest {who}s (lowest recall, at least 10 segments of the class)</summary>"
                         + _table([who, "annotated class", "segments", "recall", "predicted as"], hardest, "patients")
                         + "</details>")
    parts.append("<h2>Data</h2>")
    dbs = report["databases"]
    rows = [[e(c)] + [report["class_counts_by_database"][c].get(db, 0) for db in dbs] + [report["subjects_per_class"][c]]
            for c in report["class_counts"]]
    parts.append(_table(["class", *dbs, f"{who}s"], rows))
    if examples_uri:
        parts.append(f"<p>Example spectrograms per class (log power):</p><img alt='example spectrograms' src='{examples_uri}'>")
    if report.get("record_accounting"):
        parts.append(f"<p>{e(accounting_line(report['record_accounting']))}</p>")
    parts += _record_list(report, "records_with_flat_leads", "Records with flat leads",
                          f"Windows in which a lead is a flat line ({FLAT_WORDS}):", lambda r: f"{r['flat']} of {r['windows']}")
    parts += _record_list(report, "records_read_with_warnings", "Records read with warnings", f"{READ_WARNING_WORDS}:",
                          lambda r: e(r["warning"]))
    parts += _record_list(report, "records_without_windows", "Records without windows", "", lambda r: e(r["reason"]))
    if report.get("failed_rows"):
        parts.append("<h3>Classifier rows that failed</h3><ul>" + "".join(f"<li>{e(f['row'])}: {e(f['error'])}</li>"
                                                                        for f in report["failed_rows"]) + "</ul>")
    parts += _record_list(report, "skipped_records", "Skipped records", "", lambda s: e(s["error"]))
    parts.append("<h2>Provenance</h2>")
    prov = report.get("provenance", {})
    software = software_words(report) or "not recorded"
    parts.append(_table(["item", "value"], [["ecgpipe", e(report["code_version"])], ["software", e(software)],
                                             ["weights", e(report["weights"])],
                                             ["model artifact", f"<code>{e(str(report.get('model')))}</code>"],
                                             ["dataset key (records' contents + selection)", f"<code>{e(prov.get('dataset_key', ''))}</code>"],
                                             ["wall time of the run that wrote this report (reruns reuse stored results)", f"{report['wall_s']:.0f} s" + e(stage_times_words(report))]]))
    if prov.get("record_files_sha256"):
        parts.append("<details><summary>data checksums (SHA-256 over each record's .hea, signal and annotation files)</summary><pre>"
                     + e("\n".join(f"{k}  {v}" for k, v in sorted(prov["record_files_sha256"].items()))) + "</pre></details>")
    if prov.get("record_keys"):
        parts.append("<details><summary>record content keys (SHA-256 of files + settings)</summary><pre>"
                     + e("\n".join(f"{k}  {v}" for k, v in sorted(prov["record_keys"].items()))) + "</pre></details>")
    parts.append("<details><summary>configuration</summary><pre>" + e(json.dumps(report["config"], indent=2)) + "</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)
