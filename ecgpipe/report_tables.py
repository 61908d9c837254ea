"""Words and tables that the Markdown and the HTML report share."""

from __future__ import annotations

from ecgpipe.protocols import short as protocol_short

RANDOM_WEIGHTS_WARNING = "WARNING: features come from RANDOM (untrained) backbone weights; these numbers are not a result."


def spectrogram_shape_words(shape: list[int]) -> str:
    """``[F, T]`` or ``[n_leads, F, T]`` in words."""
    words = f"{shape[-2]} frequencies x {shape[-1]} frames"
    return words if len(shape) == 2 else f"{words} x {shape[0]} leads (image channels)"


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


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
        short = protocol_short(p)
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
