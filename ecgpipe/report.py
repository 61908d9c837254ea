"""Writing a run's report: ``report.json`` (for scripts), ``report.md`` (for people), a confusion-matrix PNG per protocol."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written on headless workers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ecgpipe.location import Location  # noqa: E402

PROTOCOL_TITLES = {
    "stratified_10fold": "Stratified 10-fold over segments (the paper's protocol; patients shared across folds)",
    "grouped_by_subject": "Stratified group k-fold by subject (no patient in both training and test)",
    "leave_one_database_out": "Leave one database out (train on the others, test on it; shared classes only)",
}

RANDOM_WEIGHTS_WARNING = "WARNING: features come from RANDOM (untrained) backbone weights; these numbers are not a result."


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


def _spectrogram_shape(shape: list[int]) -> str:
    """``[F, T]`` or ``[n_leads, F, T]`` in words."""
    words = f"{shape[-2]} frequencies x {shape[-1]} frames"
    return words if len(shape) == 2 else f"{words} x {shape[0]} leads (image channels)"


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


PROTOCOL_SHORT = {"stratified_10fold": "paper (stratified)", "grouped_by_subject": "grouped by subject",
                  "leave_one_database_out": "leave one DB out"}


COMPARISON_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def comparison_scores(row: dict, protocols: list[str]) -> list[tuple[float, float]]:
    """(score, std over folds) of one comparison row: per protocol, accuracy, balanced accuracy and macro-F1."""
    return [(row["protocols"][p][k], row["protocols"][p][f"{k}_fold_std"]) for p in protocols for k in COMPARISON_METRICS]


def comparison_columns(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the comparison table: per row backbone, layer, classifier, and per protocol
    accuracy, balanced accuracy and macro-F1 (pooled out-of-fold) ± the std over folds."""
    protocols = list(report["protocols"])
    header = ["backbone", "layer", "classifier"]
    for p in protocols:
        short = PROTOCOL_SHORT.get(p, p)
        header += [f"{short} acc", f"{short} bal. acc", f"{short} macro-F1"]
    rows = [[row["backbone"], str(row["layer"]), row["classifier"],
             *(f"{score:.3f} ± {std:.3f}" for score, std in comparison_scores(row, protocols))]
            for row in report["comparison"]]
    return header, rows


def hardest_subjects(protocol: dict, n: int = 8, min_segments: int = 10) -> list[dict]:
    """The (patient, class) pairs with the lowest recall among those with at least ``min_segments`` segments."""
    pairs = [r for r in protocol.get("per_subject", []) if r["n"] >= min_segments and r["recall"] < 1.0]
    return sorted(pairs, key=lambda r: (r["recall"], -r["n"]))[:n]


def predicted_as(row: dict) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(row["predicted"].items(), key=lambda kv: -kv[1]))


def render_markdown(report: dict) -> str:
    lines = []
    if report.get("warning"):
        lines += [f"**{report['warning']}**", ""]
    lines += [f"# ecgpipe report: {report['config_name']}", ""]
    lines += [
        f"- segments: {report['n_segments']} from {report['n_subjects']} subjects, {report['n_records_used']} records "
        f"({', '.join(report['databases'])})",
        "- classes: " + ", ".join(f"{c} {n}" for c, n in report["class_counts"].items()),
        f"- {report.get('features_description', '')}",
        f"- spectrogram: {_spectrogram_shape(report['spectrogram_shape'])} per segment",
        f"- classifier: {report['classifier']}",
        f"- wall time: {report['wall_s']:.0f} s",
        "",
        "## Results",
        "",
        "| protocol | folds | accuracy (95 % CI over subjects) | balanced accuracy | macro-F1 (95 % CI) | accuracy per fold (mean ± std) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, p in report["protocols"].items():
        ci = p.get("ci95", {})
        acc_ci = f" ({_pct(ci['accuracy'][0])} - {_pct(ci['accuracy'][1])})" if ci else ""
        f1_ci = f" ({ci['macro_f1'][0]:.3f} - {ci['macro_f1'][1]:.3f})" if ci else ""
        lines.append(
            f"| {name} | {p['n_folds']} | {_pct(p['accuracy'])}{acc_ci} | {_pct(p['balanced_accuracy'])} | "
            f"{p['macro_f1']:.3f}{f1_ci} | {_pct(p['accuracy_fold_mean'])} ± {_pct(p['accuracy_fold_std'])} |"
        )
    per_record = {name: p["per_record"] for name, p in report["protocols"].items() if p.get("per_record")}
    if per_record:
        rule = next(iter(per_record.values()))["rule"]
        lines += ["", f"Per record ({rule}):", "", "| protocol | records | accuracy | macro-F1 |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {r['n_records']} | {_pct(r['accuracy'])} | {r['macro_f1']:.3f} |" for name, r in per_record.items()]
    if len(report.get("comparison", [])) > 1:
        header, rows = comparison_columns(report)
        lines += ["", "## Comparison", "",
                  f"Every (feature extractor, classifier) row of the sweep; **bold** = best ({report['selected_by']}), the "
                  "row detailed below and saved as the model. Scores are pooled out-of-fold, ± the std over folds.", "",
                  "| " + " | ".join(header) + " |", "|---|---|---|" + "---:|" * (len(header) - 3)]
        for row, cells in zip(report["comparison"], rows):
            lines.append("| " + " | ".join(f"**{c}**" if row["best"] else c for c in cells) + " |")
    for name, p in report["protocols"].items():
        lines += ["", f"### {name}", "", PROTOCOL_TITLES.get(name, name) + (f"; {p['note']}" if p["note"] else ""), ""]
        lines += ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
        for cls, m in p["per_class"].items():
            lines.append(f"| {cls} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
        lines += ["", f"![confusion matrix]({p['confusion_png']})", ""]
        names = list(p["per_class"])
        lines += ["| annotated \\ predicted | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for cls, row in zip(names, p["confusion_matrix"]):
            lines.append(f"| {cls} | " + " | ".join(str(v) for v in row) + " |")
        hardest = hardest_subjects(p)
        if hardest:
            lines += ["", "Hardest patients (lowest recall, at least 10 segments of the class):", "",
                      "| patient | annotated class | segments | recall | predicted as |", "|---|---|---:|---:|---|"]
            lines += [f"| {r['subject']} | {r['class']} | {r['n']} | {r['recall']:.2f} | {predicted_as(r)} |" for r in hardest]
    lines += ["", "## Data", "", "| class | " + " | ".join(report["databases"]) + " | subjects |"]
    lines.append("|---|" + "---:|" * (len(report["databases"]) + 1))
    for cls in report["class_counts"]:
        by_db = report["class_counts_by_database"].get(cls, {})
        lines.append(
            f"| {cls} | " + " | ".join(str(by_db.get(db, 0)) for db in report["databases"])
            + f" | {report['subjects_per_class'].get(cls, 0)} |"
        )
    if report["skipped_records"]:
        lines += ["", "## Skipped records", ""]
        lines += [f"- `{s['record']}`: {s['error']}" for s in report["skipped_records"]]
    if report.get("unmatched_labels"):
        lines += ["", "Rhythm labels configured for a class but found in no record: " + ", ".join(report["unmatched_labels"])]
    if report.get("model"):
        lines += ["", f"Model artifact (best row, refitted on every segment): `{report['model']}`; "
                  "apply it with `ecgpipe predict --model <file> RECORD...`."]
    lines += ["", f"ecgpipe {report['code_version']}; full configuration in report.json.", ""]
    return "\n".join(lines)


def write_report(report: dict, out_dir, examples_uri: str | None = None) -> str:
    """Write report.json, report.md, report.html (self-contained) and the confusion PNGs into the output location."""
    from ecgpipe.report_html import render_html

    out = out_dir if isinstance(out_dir, Location) else Location(out_dir)
    out.makedirs()
    pngs = {}
    with tempfile.TemporaryDirectory() as staging:  # matplotlib writes local files; then they go where the run lives
        for name, p in report["protocols"].items():
            png = f"confusion_{name}.png"
            plot_confusion(p["confusion_matrix"], list(p["per_class"]), PROTOCOL_TITLES.get(name, name), Path(staging) / png)
            out.put_file(str(Path(staging) / png), png)
            pngs[name] = (Path(staging) / png).read_bytes()
            p["confusion_png"] = png
    out.write_text("report.json", json.dumps(report, indent=2))
    out.write_text("report.md", render_markdown(report))
    out.write_text("report.html", render_html(report, pngs, examples_uri))
    return out.child("report.md")
