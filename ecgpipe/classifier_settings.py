"""Settings of the classification stage: one classifier (``[classifier]``, or each of ``[sweep] classifiers``) and
the binary clinical endpoints (``[endpoints]``). Part of the one validated configuration, ``ecgpipe.config``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator


class _Strict(BaseModel):
    # extra="forbid" turns a misspelt key into an error instead of a silently ignored setting.
    # strict: `pca = true` or `length_s = "2"` is refused, not read as 1 or 2.0 (an integer still fills a float field)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


GAMMA_NAMES = ("scale", "auto")  # scikit-learn's SVC accepts these strings, or a number > 0
# how ecgpipe predict calls an endpoint unless the config or the command line says otherwise: the detector's score
# averaged over 15 windows (30 s of 2-s windows), then calls that change only where those scores pay 4 for it (in an
# SVC's margin units; README "Clinical endpoints" measures both on paper4's new patients)
DEFAULT_DECISION_WINDOWS = 15
DEFAULT_CHANGE_PENALTY = 4.0


def _check_gamma(value: str | float, key: str) -> str | float:
    if isinstance(value, str):
        if value not in GAMMA_NAMES:
            raise ValueError(f"{key} {value!r} is not 'scale', 'auto' or a number > 0")
    elif not value > 0:
        raise ValueError(f"{key} ({value:g}) must be 'scale', 'auto' or a number > 0")
    return value


class ClassifierSettings(_Strict):
    """One classifier on one set of inputs. Features are standardised first (and optionally PCA-reduced)."""

    kind: Literal["svc", "linear_svc", "logreg", "hgb"] = Field(
        "svc", description="'svc' (kernel SVM, the paper's), 'linear_svc' (liblinear), 'logreg' (multinomial), "
        "'hgb' (scikit-learn's histogram gradient boosting: trees, for tabular rhythm and beat features).",
    )
    level: Literal["window", "record"] = Field(
        "window", description="'window': one prediction per window (records of CSV-labelled data then vote); "
        "'record' (CSV-labelled databases only): one row per record, its windows' features summarised by record_stats.",
    )
    record_rule: Literal["vote", "mean_probability"] = Field(
        "vote", description="With level='window', how a record's class comes from its windows (CSV-labelled data, "
        "`predict`'s record class): 'vote' (majority of window classes; ties: the class listed first) or "
        "'mean_probability' (argmax of the windows' mean class probabilities: a confident window counts for more). "
        "'mean_probability' needs probabilities: logreg and hgb have them; an SVC then fits Platt scaling (an internal "
        "5-fold CV: about 5x its fit time); linear_svc has none.",
    )
    record_stats: list[Literal["mean", "std", "min", "max", "median"]] = Field(
        ["mean"], min_length=1, description="With level='record': per-column statistics over a record's windows.")
    name: str | None = Field(None, description="Row label in the comparison table; default derived from the settings.")
    inputs: Literal["cnn", "rhythm", "cnn+rhythm"] = Field(
        "cnn", description="CNN features, RR-interval rhythm features (needs [rhythm] enabled), or both fused."
    )
    rhythm_weight: float = Field(
        0.3, gt=0, lt=1, description="With inputs='cnn+rhythm': share of the squared distance given to the rhythm block."
    )
    pca: int | None = Field(None, gt=0, description="Reduce the CNN features to this many principal components first.")
    kernel: Literal["rbf", "linear", "poly", "sigmoid"] = Field("rbf", description="SVC kernel (kind='svc').")
    C: float = Field(10.0, gt=0, description="Regularisation (inverse strength); the grid below replaces it when tuned.")
    gamma: str | float = Field("scale", description="RBF width (kind='svc'): 'scale', 'auto' or a number > 0.")
    class_weight: Literal["balanced"] | None = None
    subject_balance: float = Field(
        0.0, ge=0, le=1, description="Weight training windows so that a few long recordings do not stand for a class: "
        "within each class a window of a subject with n windows of it weighs n ** -subject_balance (0: every window "
        "alike; 1: every subject alike; class_weight acts on top). Two-class endpoint detectors balance within the "
        "rhythm classes each side pools.",
    )
    tune: StrictBool = Field(False, description="Choose C (and gamma) by an inner CV nested inside every outer fold.")
    C_grid: list[float] = Field([1.0, 10.0, 100.0], description="Values of C tried by the inner CV.")
    gamma_grid: list[str | float] = Field(
        ["scale"], min_length=1, description="Values of gamma tried by the inner CV (kind='svc'): 'scale', 'auto' or numbers > 0.")
    inner_splits: int = Field(3, ge=2, description="Folds of the inner CV (grouped by subject when the outer CV is).")
    inner_choice: Literal["best", "one_se"] = Field(
        "best", description="How the inner CV picks from the grid: 'best' (highest mean macro-F1 over its folds) or "
        "'one_se' (the one-standard-error rule: the most regularised value, smallest C or learning rate, whose mean "
        "is within one standard error of the best's; steadier when the values nearly tie).",
    )
    learning_rate: float = Field(0.05, gt=0, le=1, description="kind='hgb': shrinkage of each tree.")
    learning_rate_grid: list[float] = Field([0.03, 0.1], description="kind='hgb' with tune: learning rates tried by the inner CV.")
    max_iter: int = Field(300, gt=0, description="kind='hgb': boosting rounds (trees per class).")
    max_leaf_nodes: int = Field(31, ge=2, description="kind='hgb': leaves per tree.")
    l2_regularization: float = Field(0.0, ge=0, description="kind='hgb': L2 penalty on leaf values.")
    min_samples_leaf: int = Field(20, ge=1, description="kind='hgb': fewest training rows in a leaf (lower it for small data).")
    seed: int = Field(0, ge=0, lt=2**32, description="kind='hgb' and 'linear_svc': random state (early stopping is off, so fits are "
                      "deterministic; LinearSVC's dual solver shuffles rows).")

    @field_validator("C_grid")
    @classmethod
    def _positive_grid(cls, v):
        if not v or any(c <= 0 for c in v):
            raise ValueError("C_grid needs at least one value, all > 0")
        return v

    @field_validator("gamma")
    @classmethod
    def _gamma(cls, v):
        return _check_gamma(v, "gamma")

    @field_validator("gamma_grid")
    @classmethod
    def _gamma_grid(cls, v):
        return [_check_gamma(g, f"gamma_grid[{i}]") for i, g in enumerate(v)]

    @field_validator("learning_rate_grid")
    @classmethod
    def _rate_grid(cls, v):
        if not v or any(not 0 < r <= 1 for r in v):
            raise ValueError("learning_rate_grid needs at least one value, all in (0, 1]")
        return v

    @model_validator(mode="after")
    def _rule_fits(self):
        if self.record_rule == "mean_probability" and self.kind == "linear_svc":
            raise ValueError("record_rule = 'mean_probability' needs class probabilities; linear_svc has none "
                             "(use kind 'svc', 'logreg' or 'hgb', or record_rule 'vote')")
        if self.record_rule == "mean_probability" and self.level == "record":
            raise ValueError("record_rule applies to window-level classifiers; a level = 'record' classifier answers "
                             "once per record already")
        return self

    def unused_settings(self) -> list[str]:
        """Settings given a value other than their default that this classifier never reads, each with the reason:
        ``inner_choice`` without ``tune``, ``kernel`` for gradient boosting... A misspelt key is already an error
        (extra="forbid"); a setting that silently does nothing is the same mistake one step later. Not a validator:
        a config that extends a preset inherits its settings (its ``unset`` removes them), and a saved model's
        settings must still load; ``preflight`` and ``ecgpipe config`` name them in a warning."""
        hgb_only = ("learning_rate", "learning_rate_grid", "max_iter", "max_leaf_nodes", "l2_regularization",
                    "min_samples_leaf")
        why = {}
        if self.kind not in ("hgb", "linear_svc"):
            why["seed"] = "only kind = 'hgb' or 'linear_svc' reads it"
        if self.kind != "hgb":
            why.update(dict.fromkeys(hgb_only, "only kind = 'hgb' reads it"))
        else:
            why.update(dict.fromkeys(("C", "C_grid"), "gradient boosting has no C (tune learning_rate_grid instead)"))
        if self.kind != "svc":
            why.update(dict.fromkeys(("kernel", "gamma", "gamma_grid"), "only kind = 'svc' reads it"))
        elif self.kernel == "linear":
            why.update(dict.fromkeys(("gamma", "gamma_grid"), "a linear kernel has no gamma"))
        if not self.tune:
            for key in ("C_grid", "gamma_grid", "learning_rate_grid", "inner_splits", "inner_choice"):
                why.setdefault(key, "only read with tune = true (the nested inner CV)")
        if self.inputs == "rhythm":
            why["pca"] = "PCA reduces the CNN block; inputs = 'rhythm' has none"
        if self.inputs != "cnn+rhythm":
            why["rhythm_weight"] = "only inputs = 'cnn+rhythm' weighs two blocks"
        elif self.kind == "hgb":
            why["rhythm_weight"] = "trees ignore a block's scale (a split does not move with it)"
        if self.level != "record":
            why["record_stats"] = "only level = 'record' summarises a record's windows"
        fields = type(self).model_fields
        return [f"{key} = {getattr(self, key)!r}: {reason}" for key, reason in why.items()
                if getattr(self, key) != fields[key].get_default(call_default_factory=True)]

    @property
    def uses_probabilities(self) -> bool:
        return self.record_rule == "mean_probability"

    @property
    def label(self) -> str:
        return self.describe()

    def describe(self, rhythm_block: str = "RR") -> str:
        """The row label; ``rhythm_block`` names what the rhythm block holds ('RR', or 'RR+wave' with waveforms)."""
        if self.name:
            return self.name
        head = {"svc": f"SVC({self.kernel})", "linear_svc": "LinearSVC", "logreg": "LogReg", "hgb": "GradBoost"}[self.kind]
        if self.kind == "hgb":
            parts = [f"lr∈{self.learning_rate_grid} nested" if self.tune else f"lr={self.learning_rate:g}", f"{self.max_iter} trees"]
        else:
            parts = [f"C∈{self.C_grid} nested" if self.tune else f"C={self.C:g}"]
        if self.tune and self.inner_choice == "one_se":
            parts[0] += " (one-SE)"
        if self.pca and self.inputs != "rhythm":  # PCA reduces the CNN block; a rhythm-only row has none
            parts.insert(0, f"PCA {self.pca}")
        if self.class_weight:
            parts.append("balanced")
        if self.subject_balance:
            parts.append("subjects balanced" if self.subject_balance == 1 else f"subjects balanced^{self.subject_balance:g}")
        if self.level == "record":
            parts.append(f"per record ({'/'.join(self.record_stats)})")
        if self.uses_probabilities:
            parts.append("records by mean probability")
        # trees ignore the fused blocks' weighting (a column scale does not move a split): no weight in their label
        fused = f"+{rhythm_block} " if self.kind == "hgb" else f"+{rhythm_block}(w={self.rhythm_weight:g}) "
        inputs = {"cnn": "", "rhythm": f"{rhythm_block} only ", "cnn+rhythm": fused}[self.inputs]
        return f"{inputs}{head} {', '.join(parts)}".strip()


class EndpointSettings(_Strict):
    """A binary clinical endpoint: the configured classes that count as positive (e.g. shockable = VT + VF), scored
    with sensitivity, specificity, PPV and balanced accuracy under every protocol, with a published goal beside them."""

    classes: list[str] = Field(min_length=1, description="Classes (names in [classes]) that are positive.")
    goal_sensitivity: float | None = Field(None, gt=0, le=1, description="A published goal to show beside the result.")
    goal_specificity: float | None = Field(None, gt=0, le=1)
    goal_source: str = Field("", description="Where the goal comes from (e.g. the AHA's shock-advisory goals).")
    class_goals: dict[str, float] = Field(
        {},
        description="Per-rhythm goals, as the AHA states them: for a positive class the share of its segments called "
        "positive (its sensitivity), for a negative class the share called negative (its specificity); e.g. "
        "{vf = 0.90, normal = 0.99}. Every class is scored per rhythm whether or not it has a goal.",
    )
    decision_windows: int = Field(
        DEFAULT_DECISION_WINDOWS, ge=1,
        description="ecgpipe predict and evaluate: windows (odd) over which the endpoint's detector score is averaged; "
        "the model carries it, --endpoint-smooth overrides it.",
    )
    change_penalty: float = Field(
        DEFAULT_CHANGE_PENALTY, ge=0, allow_inf_nan=False,
        description="ecgpipe predict and evaluate: the change penalty of the endpoint's calls, in the detector's score "
        "units (4 measured on an SVC's margins; another classifier kind wants its own); 0 = the averaged score's sign; "
        "the model carries it, --endpoint-penalty overrides it.",
    )

    @field_validator("decision_windows")
    @classmethod
    def _odd_width(cls, width: int) -> int:
        if width % 2 == 0:
            raise ValueError(f"{width} is even: a centred average needs an odd number of windows")
        return width

    @field_validator("class_goals")
    @classmethod
    def _goals_are_shares(cls, goals: dict[str, float]) -> dict[str, float]:
        for name, goal in goals.items():
            if not 0 < goal <= 1:
                raise ValueError(f"class_goals.{name}: {goal} is not a share in (0, 1]")
        return goals


class RecordingSettings(_Strict):
    """``[recordings]``: the endpoints scored over whole recordings, out of fold, as ``ecgpipe predict`` calls them."""

    score: StrictBool = Field(
        False,
        description="Featurise every window of the rhythm-annotated recordings on predict's grid and score each "
        "endpoint over them as predict calls it (its detector averaged and segmented), each record by the detectors "
        "of the grouped fold that held its patient out: windows, annotated runs detected, false alarms per hour. "
        "Costs a feature pass over every window of the recordings.",
    )
