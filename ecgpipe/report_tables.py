"""Words and tables that the Markdown and the HTML report share."""

from __future__ import annotations

import numpy as np

from ecgpipe.config import config_from_dict
from ecgpipe.protocols import PROTOCOLS, STRATIFIED
from ecgpipe.protocols import short as protocol_short
from ecgpipe.recording_endpoints import worst_negatives
from ecgpipe.results import EndpointClassRate, SubjectOutcomes, outcomes_of_0_17

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


def record_scores(report: dict) -> list[str]:
    """Protocols whose comparison rows carry record-level macro-F1 (CSV-labelled datasets): a column each."""
    return [p for p in report["protocols"] if any("record_macro_f1" in row["protocols"].get(p, {}) for row in report["comparison"])]


def selection_protocol(report: dict) -> str:
    """The protocol the best row was chosen under (the run's config decides, ``PipelineConfig.selection_protocol``)."""
    return config_from_dict(report["config"], "report.json").selection_protocol


def versus_best_words(row: dict, protocol: str) -> str:
    """A comparison row's macro-F1 minus the best row's under ``protocol`` with the paired 95 % interval of that
    difference over subjects (``ecgpipe.compare``), e.g. "-0.012 (-0.030 to +0.006)"; "best" for the best row."""
    if row["best"]:
        return "best"
    d = row.get("versus_best", {}).get(protocol)
    if not d or d.get("ci95") is None:
        return "-"
    signed = lambda v: f"{round(v, 3) + 0.0:+.3f}"  # noqa: E731 (no "-0.000")
    lo, hi = d["ci95"]
    return f"{signed(d['difference'])} ({signed(lo)} to {signed(hi)})"


def comparison_units_note(report: dict) -> str:
    """What the comparison's columns count when its rows differ in unit: record-level rows score records, the others
    windows (and under the paper's stratified protocol those share a record's windows between training and test)."""
    per_record = [("per record" in r["classifier"]) for r in report["comparison"]]
    note = (" Rows marked 'per record' classify one row per record, so under every protocol their folds are over records "
            "(no record in both training and test).") if any(per_record) else ""
    if any(per_record) and not all(per_record) and record_scores(report):
        note += (" The other rows classify windows: their accuracy, balanced accuracy and macro-F1 are over windows, and "
                 "under the paper's stratified protocol windows of one record are in training and test alike, which "
                 "flatters their record columns there too (a record is judged by a model that trained on its other "
                 "windows). Compare rows on the record macro-F1 column of a protocol that keeps a record's windows "
                 "together (grouped by subject), which counts records for every row with no record in both training "
                 "and test.")
    return note


def per_record_caveat(report: dict) -> str:
    """Why a window-level classifier's per-record figures under the paper's stratified protocol flatter it: the folds
    split each record's windows, so a record is judged by a model that trained on its other windows."""
    p = report["protocols"].get(STRATIFIED.name, {})
    shared = p.get("level", "window") == "window" and p.get("per_record")
    return (f"Under {STRATIFIED.name} the folds split each record's windows between training and test: its per-record "
            "figures come from models that trained on other windows of the same record, and flatter the classifier. "
            "The record-wise figures are those of the protocols that keep a record's windows together.") if shared else ""


def software_words(report: dict) -> str:
    """The report's software but ecgpipe itself ('python 3.11.7, numpy 2.1.0, ...'), '' in reports before 0.15.0."""
    return ", ".join(f"{k} {v}" for k, v in report.get("software", {}).items() if k != "ecgpipe")


def selected_by_records(report: dict) -> bool:
    """Whether the best row was chosen on record-level macro-F1 (a dataset labelled per record): its ``selected_by``."""
    return "record-level" in report.get("selected_by", "")


def comparison_how(report: dict) -> str:
    """How to read the comparison table: its last column (on the metric the best row was chosen by), why the best
    row's own figures lean optimistic, and what its columns count when rows differ in unit."""
    scope = ("record-level macro-F1 (each record's one class, whatever the row's level)"
             if selected_by_records(report) else "macro-F1 on the same windows")
    return (f"The last column: each row's {scope} minus the best row's, with the 95 % interval of that difference from "
            "a paired bootstrap over subjects (an interval that holds 0: the lead is not shown). The best row is the "
            "highest of several scored on these same folds, so its own figures lean optimistic (the winner of a "
            "comparison, not an independent test)." + comparison_units_note(report))


def comparison_columns(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the comparison table: per row backbone, layer, classifier, and per protocol
    accuracy, balanced accuracy and macro-F1 (pooled out-of-fold) ± the std over folds; for CSV-labelled datasets
    also the record-level macro-F1 (what the best row is chosen on); last, under the selection protocol, each row's
    macro-F1 minus the best row's with its paired interval (is the best row's lead more than chance?)."""
    protocols, by_record, selection = list(report["protocols"]), record_scores(report), selection_protocol(report)
    header = ["backbone", "layer", "classifier"]
    for p in protocols:
        short = protocol_short(p)
        header += [f"{short} acc", f"{short} bal. acc", f"{short} macro-F1"]
    header += [f"{protocol_short(p)} record macro-F1" for p in by_record]
    record = "record " if selected_by_records(report) else ""  # what the best row was chosen by
    header += [f"{protocol_short(selection)} {record}macro-F1 minus best (paired 95 % CI)"]
    rows = [[row["backbone"], str(row["layer"]), row["classifier"],
             *(f"{score:.3f} ± {std:.3f}" for score, std in comparison_scores(row, protocols)),
             *(f"{row['protocols'][p]['record_macro_f1']:.3f}" if "record_macro_f1" in row["protocols"].get(p, {}) else "-"
               for p in by_record),
             versus_best_words(row, selection)]
            for row in report["comparison"]]
    return header, rows


def scored_endpoints(report: dict) -> list[tuple[str, str, dict]]:
    """(protocol, what was scored, endpoints) of the best row: its own rows (segments, or records for a record-level
    classifier), and the records' answer (majority vote or mean probability) where segments of CSV-labelled records
    decide it."""
    out = []
    for name, p in report["protocols"].items():
        level = p.get("level", "window")
        out.append((name, "records" if level == "record" else "segments", p.get("endpoints") or {}))
        if level == "window" and (p.get("per_record") or {}).get("endpoints"):
            rule = "mean probability" if str(p["per_record"].get("rule", "")).startswith("argmax of the mean") else "majority vote"
            out.append((name, f"records, {rule}", p["per_record"]["endpoints"]))
    return [entry for entry in out if entry[2]]


LISTED = 100  # records a report's section lists by name; report.json lists every one


def listed(items: list, key: str, n: int = LISTED) -> tuple[list, str]:
    """The first ``n`` entries of a report's record list and, when there are more, a line saying where the rest
    are: at 10^5 records a few per cent without windows would be thousands of lines of report.md."""
    more = len(items) - n
    return items[:n], (f"... and {more} more (all in report.json: {key})" if more > 0 else "")


def judged(protocol_name: str, what: str = "segments", subject_word: str = "patient") -> bool:
    """Whether goals are judged under a protocol: only one that keeps subjects apart says anything of new patients.
    A record-level classifier (``what`` "records") on a dataset whose subjects are its records keeps them apart
    under any protocol (its folds are over records)."""
    p = PROTOCOLS.get(protocol_name)
    return p is None or p.grouped or (what == "records" and subject_word == "record")


def no_verdict(report: dict, protocol_name: str, what: str) -> str | None:
    """Why a run's report judges no goal of what ``scored_endpoints`` gave as (protocol, what), or None (``judged``)."""
    return None if judged(protocol_name, what, report.get("subject_word", "patient")) else NO_VERDICT


def endpoint_rates(ep: dict) -> str:
    """'sensitivity 0.942  specificity 0.982  ppv 0.980  per-subject mean 0.931 / 0.975' of one endpoint (console
    lines; the means from 0.21.0 on)."""
    pooled = "  ".join(f"{k} {'-' if ep[k] is None else format(ep[k], '.3f')}" for k in ("sensitivity", "specificity", "ppv"))
    means = [ep.get(f"{k}_per_subject") for k in ("sensitivity", "specificity")]
    return pooled + ("  per-subject mean " + " / ".join("-" if m is None else f"{m['mean']:.3f}" for m in means) if any(means) else "")


NO_VERDICT = "no verdict: subjects shared across folds"


def goal_verdict(values: list[tuple[float | None, list[float] | None, float]]) -> str:
    """The verdict on (value, 95 % interval, goal) triples: 'met' when every interval clears its goal; a goal met by
    the point estimate alone is said so (with a few patients of a rhythm the interval is wide, and a rate one patient
    measures has none; the AHA states lower confidence limits beside its goals)."""
    measured = [(v, ci, g) for v, ci, g in values if v is not None]
    if any(v < g for v, _, g in measured):  # a goal measured and missed is said, whatever the others
        return "not met"
    if len(measured) < len(values):
        return "no verdict: nothing to measure"
    if all(ci and ci[0] >= g for _, ci, g in values):
        return "met"
    if any(ci and ci[0] < g for _, ci, g in values):
        return "met; CI reaches below"
    return "met at the point estimate; no interval"


# A rate measured on fewer subjects than this: its percentile bootstrap over subjects holds the true rate less often
# than 95 % (0.81-0.87 at 10 patients, 0.90 at 20 in tests/benchmarks/bench_interval_coverage.py, per-patient rates
# as uneven as paper4's): a "met" beside it says so
FEW_SUBJECTS = 20


def with_few_subjects(verdict: str, n: int | None) -> str:
    """A goal's verdict, and when it is "met" on a rate from fewer than ``FEW_SUBJECTS`` subjects, that it rests on
    an interval too narrow: 'met; from 10 subjects: its interval is too narrow'."""
    few = verdict.startswith("met") and n is not None and 1 < n < FEW_SUBJECTS
    return f"{verdict}; from {n} subjects: its interval is too narrow" if few else verdict


def endpoints_how(subject_word: str) -> str:
    """The sentence above the endpoint tables: what is pooled, what is averaged, over what the intervals are."""
    return (f"Positives are the endpoint's classes pooled; intervals: 95 % bootstrap over {subject_word}s. Sensitivity "
            f"and specificity pool every window (EC57's gross statistics); the per-{subject_word} column averages each "
            f"{subject_word}'s own (its average statistics), so one with a single window weighs as much as one with hundreds.")


ENDPOINT_ALIGN = "|---|---|---:|---:|---:|---:|---:|---:|---|"  # Markdown's row under endpoint_table's header: one per column


def endpoint_table(endpoints: dict, no_verdict: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of binary clinical endpoints (``EndpointResult`` as JSON), with their goals; not judged
    where ``no_verdict`` says why (a goal is a promise about new patients: ``NO_VERDICT`` under a protocol that shares
    them). PPV depends on the share of positives, which a capped sample (``max_per_class``) sets: shown with it."""
    header = ["endpoint", "positive classes", "positives / negatives", "sensitivity (95 % CI)", "specificity (95 % CI)",
              "per subject: mean sensitivity / specificity (lowest)", "PPV (at this share of positives)", "balanced accuracy", "goal"]
    rows = []
    for name, ep in endpoints.items():
        declared = [(ep[k], ep["ci95"].get(k), ep[f"goal_{k}"]) for k in ("sensitivity", "specificity")
                    if ep.get(f"goal_{k}") is not None]
        goals = [f"{k} ≥ {ep[f'goal_{k}']:.2f}" for k in ("sensitivity", "specificity") if ep.get(f"goal_{k}") is not None]
        rests_on = min((ep.get(f"{side}_subjects") or 0 for side, k in (("positive", "sensitivity"), ("negative", "specificity"))
                        if ep.get(f"goal_{k}") is not None), default=None)
        verdict = f" ({no_verdict or with_few_subjects(goal_verdict(declared), rests_on or None)})" if declared else ""
        goal = (", ".join(goals) + verdict if goals else "") + (f" {ep['goal_source']}" if ep.get("goal_source") else "")
        share = ep["positives"] / (ep["positives"] + ep["negatives"]) if ep["positives"] + ep["negatives"] else 0.0
        ppv = "-" if ep["ppv"] is None else f"{ep['ppv']:.3f} ({share:.0%})"
        held = (f" ({ep['positive_subjects']} / {ep['negative_subjects']} subjects)"
                if ep.get("positive_subjects") is not None else "")
        rows.append([name, " + ".join(ep["classes"]), f"{ep['positives']} / {ep['negatives']}{held}", _with_ci(ep, "sensitivity", 3),
                     _with_ci(ep, "specificity", 3), per_subject_means(ep), ppv, _with_ci(ep, "balanced_accuracy", 3), goal.strip() or "-"])
    return header, rows


def per_subject_means(ep: dict) -> str:
    """'0.931 (0.874 - 0.975) / 0.976 (0.962 - 0.987) (0.400 / 0.810)': EC57's average statistics of an endpoint, the
    mean of each subject's own rate, and the lowest subject's ('-' in reports before 0.21.0)."""
    means = [ep.get(f"{k}_per_subject") for k in ("sensitivity", "specificity")]
    if not any(means):
        return "-"
    cells = ["-" if m is None else _with_ci({"v": m["mean"], "ci95": {"v": m["ci95"]}}, "v", 3) for m in means]
    return " / ".join(cells) + " (" + " / ".join("-" if m is None else f"{m['lowest']:.3f}" for m in means) + ")"


def endpoint_class_table(endpoints: dict, no_verdict: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the endpoints' per-rhythm rates (``by_class``): the AHA states its shock-advisory
    goals per rhythm (sensitivity for VF, for rapid VT; specificity for sinus rhythm, for other rhythms)."""
    header = ["endpoint", "rhythm", "n", "measure", "share right (95 % CI)", "goal"]
    rows = []
    for name, ep in endpoints.items():
        for c in ep.get("by_class") or []:
            rate = EndpointClassRate.model_validate(c)
            ci = f" ({rate.ci95[0]:.3f} - {rate.ci95[1]:.3f})" if rate.ci95 else ""
            if rate.goal is None:
                goal = "-"
            else:
                verdict = no_verdict or with_few_subjects(goal_verdict([(rate.rate, rate.ci95, rate.goal)]), rate.subjects)
                goal = f"≥ {rate.goal:.2f} ({verdict})"
            n = f"{rate.n} ({rate.subjects} subjects)" if rate.subjects is not None else str(rate.n)
            rows.append([name, rate.name, n, rate.measure, f"{rate.rate:.3f}{ci}", goal])
    return header, rows


def hardest_subjects(protocol: dict, n: int = 8, min_segments: int = 10) -> list[dict]:
    """The (patient, class) pairs with the lowest recall among those with at least ``min_segments`` segments, as dicts
    (subject, class, n, recall, predicted)."""
    stored = outcomes_of_0_17(protocol, "per_subject").get("per_subject")  # a report before 0.18.0: a list of dicts
    outcomes = SubjectOutcomes.model_validate(stored) if stored else None
    if outcomes is None or not len(outcomes):
        return []
    counts, recall = outcomes.n, outcomes.recall
    candidates = np.flatnonzero((counts >= min_segments) & (recall < 1.0))
    return outcomes.pairs(candidates[np.lexsort((-counts[candidates], recall[candidates]))][:n])


def predicted_as(row: dict) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(row["predicted"].items(), key=lambda kv: -kv[1]))


def stage_times_words(report: dict) -> str:
    """`` (segments 113 s, ..., features 52 s at 136 img/s, ...)``: where the run's time went."""
    seconds = report.get("stage_seconds") or {}
    if not seconds:
        return ""
    rate = report.get("feature_img_s")
    words = [f"{stage} {s:.0f} s" + (f" at {rate:.0f} img/s" if stage == "features" and rate else "") for stage, s in seconds.items()]
    return " (" + ", ".join(words) + ")"



RECORDINGS_HOW = ("Every window of the recordings: its reference is the annotated rhythm it lies in, whole (windows across "
                  "a change or in noise left out), and every rhythm that is not one of the endpoint's classes is a "
                  "negative, configured or not. Windows the model gives no call (a gap or a flat stretch, left unscored "
                  "as `ecgpipe predict` leaves them) count on neither side of the rates: their number is shown beside "
                  "the windows, and false alarms per hour are per scored hour. An annotated run is detected when a "
                  "called run overlaps it; a called run that overlaps none is a false alarm (ANSI/AAMI EC57's episode rule: a call "
                  "that runs on around a short annotated run counts none); false-positive minutes per hour count the "
                  "time of the negative windows called positive, however the calls run.")
RECORDING_HEADER = ["endpoint", "decision", "windows: sensitivity / specificity (95 % CI over subjects)",
                    "per subject: mean sensitivity / specificity (lowest)",
                    "annotated runs overlapped by a call (all; long)", "called runs (on an annotated run: episode PPV)",
                    "false alarms; per hour; false-positive min per hour (95 % CIs)",
                    "negatives most often called positive"]
RECORDING_ALIGN = "|---|---|---:|---:|---:|---:|---:|---|"  # Markdown's row under RECORDING_HEADER: one per column


def _with_ci(tally: dict, name: str, digits: int) -> str:
    """A whole-recording rate with its interval over subjects (``ci95``: recording_endpoints.subject_intervals;
    absent from reports before 0.10.0)."""
    v, ci = tally[name], (tally.get("ci95") or {}).get(name)
    return "-" if v is None else f"{v:.{digits}f}" + (f" ({ci[0]:.{digits}f} - {ci[1]:.{digits}f})" if ci else "")


def _called(r: dict) -> str:
    """'40 (33: 0.825)': the called runs, how many overlap an annotated run, and that share. One long call over
    several short annotated runs counts each of them as overlapped: this share says how many calls were right."""
    right = r["called_runs"] - r["false_alarms"]
    return f"{r['called_runs']} ({right}: {right / r['called_runs']:.3f})" if r["called_runs"] else "0"


def _wrong_time(r: dict) -> str:
    """'; 1.23 (0.5 - 2.1) min/h': the false-positive minutes per hour (absent from reports before 0.20.0)."""
    return "" if r.get("false_positive_min_per_hour") is None else f"; {_with_ci(r, 'false_positive_min_per_hour', 2)} min/h"


def recording_rows(recordings: dict[str, dict], label=lambda name, r: name) -> list[list[str]]:
    """One row per endpoint scored over whole recordings (``RecordingTally.to_json()`` with its decision), for the
    run's report and ``ecgpipe evaluate``'s; ``label(name, r)`` names the endpoint."""
    rows = []
    for name, r in recordings.items():
        decision = (f"detector over {r['width']} windows, change penalty {r['penalty']:g}" if r["detector"]
                    else f"4-class calls pooled over {r['width']} windows")
        rates = " / ".join(_with_ci(r, k, 3) for k in ("sensitivity", "specificity"))
        per_hour = _with_ci(r, "false_alarms_per_hour", 2)
        worst = worst_negatives(r["negatives_by_label"], 3)
        unscored = (r.get("unscored_positive_windows", 0), r.get("unscored_negative_windows", 0))  # since 0.15.0
        no_call = f"; {unscored[0]} / {unscored[1]} without a call" if any(unscored) else ""
        rows.append([label(name, r), decision, f"{rates} ({r['positive_windows']} / {r['negative_windows']} windows{no_call})",
                     per_subject_means(r),
                     f"{r['runs_detected']} of {r['runs']}; {r['long_runs_detected']} of {r['long_runs']} (>= {r['long_run_s']:g} s)",
                     _called(r), f"{r['false_alarms']}; {per_hour} per hour" + _wrong_time(r),
                     ", ".join(f"{lab} {r['negatives_by_label'][lab][1]} of {n}" for lab, n, _ in worst) or "-"])
    return rows


def recordings_summary(rec: dict) -> str:
    """How the run's whole-recording endpoints were scored, in a sentence."""
    return (f"{rec['n_records']} records ({rec['hours']:.1f} h), each scored by the endpoint detectors of the "
            f"{rec['classifier']} row fitted on the training windows of the grouped fold ({rec['n_folds']} folds) that held "
            "its patient out: new patients, as `ecgpipe predict` meets them. The decision (windows averaged, change "
            "penalty) is the config's, not chosen inside the folds: settings picked by looking at these patients' "
            "results make these figures optimistic.")


def recording_words(r: dict) -> str:
    """One endpoint over whole recordings in a line (the CLI's summaries)."""
    rates = " / ".join(_with_ci(r, k, 3) for k in ("sensitivity", "specificity"))
    means = [r.get(f"{k}_per_subject") for k in ("sensitivity", "specificity")]  # since 0.22.0
    if any(means):
        rates += " (per-subject mean " + " / ".join("-" if m is None else f"{m['mean']:.3f}" for m in means) + ")"
    return (f"windows sens / spec {rates}, {r['runs_detected']} of {r['runs']} annotated runs detected, "
            f"{r['false_alarms']} false alarms" + ("" if r["false_alarms_per_hour"] is None else f", {_with_ci(r, 'false_alarms_per_hour', 2)} per hour")
            + ("" if r.get("false_positive_min_per_hour") is None else f", {r['false_positive_min_per_hour']:.2f} false-positive min/h"))


def accounting_line(a: dict[str, int]) -> str:
    """Every record of the run once, in words (``report_build.record_accounting``), and what is not in it."""
    return (f"Records: {a['records']} in the run: {a['used']} used ({a['windows']} windows), "
            f"{a['excluded_label']} with an excluded label, {a['too_short']} shorter than one window, "
            f"{a['no_window_of_a_class']} with no window of a configured class, {a['failed']} failed"
            + (" (above, \"Skipped records\")" if a["failed"] else "")
            + (f", {a['absent']} listed in the labels CSV without any file in the folder (left out; report.json "
               "`absent_records` names them)" if a.get("absent") else "") + "."
            + (f" Not in the run: {a['unlisted']} record(s) with files in the folder but no row in the labels CSV "
               "(report.json `unlisted_records` names them)." if a.get("unlisted") else "")
            + (f" A pilot: at most {a['max_records_per_database']} records of each database (run.max_records), a "
               "seeded sample of any that has more." if a.get("max_records_per_database") else ""))
