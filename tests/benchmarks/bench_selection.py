"""How much did choosing the preset's classifier on the patients it is scored on flatter its score?

    python tests/benchmarks/bench_selection.py --from-run runs/paper4-best [--protocol grouped_by_subject] [--jobs 2]

`paper4-best`'s classifier settings (which inputs, class weights, patient balance, C) were chosen by their grouped
macro-F1: on the same patients whose numbers the report then shows (README "How far to trust the numbers"). This
benchmark measures what that choice is worth on patients it never saw. It reads a finished run's store (its CNN
features and rhythm block) and, on the run's own outer folds, scores a grid of candidate classifiers around the
preset (inputs cnn / rhythm / cnn+rhythm x class weights none / balanced x patient balance 0 / 1 x C in the run's
C_grid; the run's PCA, rhythm weight and kernel) three ways:

- **each candidate fixed**: its pooled out-of-fold macro-F1. The best of them (the "oracle") is what picking the
  winner on the scored patients reports; the preset's own row is the run's report.
- **selected inside each outer fold**: the candidate with the best mean macro-F1 over inner folds of that fold's
  training patients (grouped like the outer folds, as the nested choice of C is), fitted on the training patients
  and scored on the held-out ones. The outer test patients take no part in the choice, so the pooled score of these
  predictions is an honest estimate of the whole procedure "choose the classifier by grouped CV, then fit it".

The gap between the oracle and the selected score is the optimism of choosing on the scored patients, for these
levers. Levers that change the stored features (backbone, segment length, rhythm context, irregularity block) were
chosen the same way but cannot be re-chosen from one store: this measures the classifier's part only.

Each fold's preprocessing (scaling, PCA, block weights) is fitted once per input set and training set and shared by
the candidates that differ only in the final SVM, which is exactly what refitting the whole pipeline computes. One
BLAS thread per job. Prints one table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _run import window_svm_run  # noqa: E402

from ecgpipe.classify import (  # noqa: E402
    bootstrap_ci,
    build_classifier,
    design_matrix,
    inner_groups,
    inner_splits,
    macro_f1,
    subject_weights,
)
from ecgpipe.config import ClassifierSettings, CVSettings  # noqa: E402
from ecgpipe.protocols import make_splits  # noqa: E402

INPUTS = ("cnn+rhythm", "cnn", "rhythm")


def candidates(base: ClassifierSettings) -> list[ClassifierSettings]:
    """The grid around the preset: every combination of inputs, class weights, patient balance and C, untuned."""
    grid = itertools.product(INPUTS, (None, "balanced"), (0.0, 1.0), base.C_grid)
    return [base.model_copy(update={"inputs": i, "class_weight": w, "subject_balance": b, "C": c, "tune": False})
            for i, w, b, c in grid]


def fit_score_all(blocks, y, subjects, train, test, settings: list[ClassifierSettings], n_cnn) -> np.ndarray:
    """Predictions of every candidate for ``test`` after fitting on ``train``: one preprocessing fit per input set."""
    pred = np.empty((len(settings), len(test)), dtype=np.int64)
    for inputs in INPUTS:
        which = [k for k, s in enumerate(settings) if s.inputs == inputs]
        X = blocks[inputs]
        pipe = build_classifier(settings[which[0]], n_cnn if inputs == "cnn+rhythm" else None)
        prep = pipe[:-1]
        # fit_transform, as Pipeline.fit hands the SVM its training rows (CappedPCA's own projection of them)
        X_train = prep.fit_transform(X[train], y[train])
        X_test = prep.transform(X[test])
        for k in which:
            s = settings[k]
            model = clone(build_classifier(s, n_cnn if inputs == "cnn+rhythm" else None)[-1])
            weights = subject_weights(y[train], subjects[train], s.subject_balance) if s.subject_balance else None
            model.fit(X_train, y[train], sample_weight=weights)
            pred[k] = model.predict(X_test)
    return pred


def outer_fold(blocks, y, subjects, inner_subjects, train, test, settings, n_cnn, n_classes, inner_k: int, seed: int):
    """One outer fold: every candidate's mean inner macro-F1 on the training patients, and its test predictions."""
    with threadpool_limits(1):
        tuning = settings[0].model_copy(update={"tune": True, "inner_splits": inner_k})
        groups = None if inner_subjects is None else inner_subjects[train]
        inner = inner_splits(tuning, y[train], groups, seed=seed)
        if not inner:
            raise SystemExit(f"an outer training set of {len(train)} rows cannot be split into inner folds: nothing to choose on")
        scores = np.zeros((len(settings), len(inner)))
        training = {i: X[train] for i, X in blocks.items()}  # the inner folds index the outer training rows
        for j, (a, b) in enumerate(inner):
            pred = fit_score_all(training, y[train], subjects[train], a, b, settings, n_cnn)
            scores[:, j] = [macro_f1(y[train][b], p, n_classes) for p in pred]
        return scores.mean(axis=1), fit_score_all(blocks, y, subjects, train, test, settings, n_cnn)


def label(s: ClassifierSettings) -> str:
    return f"{s.inputs}, {s.class_weight or 'no'} class weights, balance {s.subject_balance:g}, C {s.C:g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-run", required=True, help="output folder of a finished run with CNN and rhythm features")
    ap.add_argument("--protocol", default="grouped_by_subject")
    ap.add_argument("--inner-splits", type=int, default=3, help="inner folds of each outer training set (default 3)")
    ap.add_argument("--seed", type=int, default=0, help="shuffle of the inner folds (default 0, as the run's nested C)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    started = time.perf_counter()
    run = Path(args.from_run)
    report, base, data = window_svm_run(run, "the grid")
    if data.cnn is None or data.rhythm is None:
        raise SystemExit(f"{run}: the grid needs both CNN features and the rhythm block")
    y, subjects, names = data.y, data.subjects, list(report["config"]["classes"])
    blocks = {i: design_matrix(data.cnn, data.rhythm, base.model_copy(update={"inputs": i})) for i in INPUTS}
    splits, _ = make_splits(args.protocol, y, subjects, CVSettings.model_validate(report["config"]["cv"]), data.databases, names)
    settings = candidates(base)
    out = Parallel(n_jobs=args.jobs)(
        delayed(outer_fold)(blocks, y, subjects, inner_groups(args.protocol, subjects), train, test, settings, data.n_cnn,
                            len(names), args.inner_splits, args.seed)
        for train, test in splits)

    fixed = np.full((len(settings), len(y)), -1)
    selected = np.full(len(y), -1)
    choices = []
    for (_, test), (inner_mean, pred) in zip(splits, out):
        fixed[:, test] = pred
        best = int(np.argmax(inner_mean))
        choices.append(best)
        selected[test] = pred[best]
    scored = selected >= 0
    yy, groups = y[scored], subjects[scored]
    f1_fixed = np.array([macro_f1(yy, p[scored], len(names)) for p in fixed])
    f1_selected = macro_f1(yy, selected[scored], len(names))
    acc_selected = float((selected[scored] == yy).mean())
    oracle = int(np.argmax(f1_fixed))
    ci = bootstrap_ci(yy, selected[scored], groups, len(names), n_boot=2000)["macro_f1"]
    ci_oracle = bootstrap_ci(yy, fixed[oracle][scored], groups, len(names), n_boot=2000)["macro_f1"]
    published = report["protocols"][args.protocol]
    chosen_count = {label(settings[k]): choices.count(k) for k in sorted(set(choices))}
    # what the inner folds saw of each input set (its best candidate's mean inner macro-F1, averaged over outer
    # folds) beside what the outer folds saw (its best fixed candidate): where the two orders disagree, the choice
    # made on fewer training patients is not the one that pays on all of them
    inner = np.array([m for m, _ in out])
    by_inputs = {i: {"inner": round(float(inner[:, [k for k, s in enumerate(settings) if s.inputs == i]].max(axis=1).mean()), 4),
                     "outer": round(float(max(f for s, f in zip(settings, f1_fixed) if s.inputs == i)), 4)} for i in INPUTS}

    print(f"{run}: {args.protocol}, {len(splits)} outer folds, {len(settings)} candidates, {args.inner_splits} inner "
          f"folds per outer training set (seed {args.seed}); {time.perf_counter() - started:.0f} s")
    print("| what | macro-F1 (95 % interval over patients) | accuracy |")
    print("|---|---:|---:|")
    print(f"| the preset as the run scored it ({base.label}, C by inner folds) | {published['macro_f1']:.4f} | {published['accuracy']:.4f} |")
    print(f"| best fixed candidate, picked on these patients: {label(settings[oracle])} | {f1_fixed[oracle]:.4f} "
          f"({ci_oracle[0]:.3f} - {ci_oracle[1]:.3f}) | {float((fixed[oracle][scored] == yy).mean()):.4f} |")
    print(f"| **selected inside each outer fold** (honest) | **{f1_selected:.4f}** ({ci[0]:.3f} - {ci[1]:.3f}) | {acc_selected:.4f} |")
    print(f"| median fixed candidate | {float(np.median(f1_fixed)):.4f} | |")
    print("Chosen by the outer folds' inner CV: " + "; ".join(f"{k} ({n})" for k, n in chosen_count.items()))
    print("Best macro-F1 per input set, inner folds (mean over outer folds) / outer folds: "
          + "; ".join(f"{i} {v['inner']:.4f} / {v['outer']:.4f}" for i, v in by_inputs.items()))
    print(json.dumps({"benchmark": "selection", "run": str(run), "protocol": args.protocol, "candidates": len(settings),
                      "outer_folds": len(splits), "inner_splits": args.inner_splits, "seed": args.seed,
                      "preset_macro_f1": round(published["macro_f1"], 4), "oracle": label(settings[oracle]),
                      "oracle_macro_f1": round(float(f1_fixed[oracle]), 4),
                      "selected_macro_f1": round(f1_selected, 4), "selected_macro_f1_ci": [round(v, 4) for v in ci],
                      "selected_accuracy": round(acc_selected, 4),
                      "optimism": round(float(f1_fixed[oracle]) - f1_selected, 4), "chosen": chosen_count, "by_inputs": by_inputs,
                      "fixed_macro_f1": {label(s): round(float(v), 4) for s, v in zip(settings, f1_fixed)},
                      "seconds": round(time.perf_counter() - started)}))


if __name__ == "__main__":
    main()
