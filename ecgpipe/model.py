"""The trained-model artifact a run leaves behind (``OUT/model.skops``), and loading it safely.

One file holds the fitted classifier (scikit-learn pipeline), the whole run configuration (so prediction cuts windows,
computes spectrograms and taps the backbone exactly as training did), the class names, the backbone/layer and weights
source, the code version and what it was trained on.

The file is a ``skops.io`` archive, never a pickle: loading it builds only objects of the types listed in
:data:`TRUSTED_TYPES` (scikit-learn's own are trusted by skops already) and refuses any other type *before* creating
anything, so a downloaded or tampered artifact cannot run code. The CNN weights are not in the artifact: they are
loaded as in training (local file, torchvision, or the offline package), with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import ecgpipe
from ecgpipe.config import PipelineConfig
from ecgpipe.environment import software_versions
from ecgpipe.errors import EcgpipeError

FORMAT = "ecgpipe-model"
FORMAT_VERSION = 2  # 2: the archive carries an integrity record (content digest, optional HMAC signature)
INTEGRITY_MEMBER = "ecgpipe-integrity.json"
KEY_ENV, KEY_FILE_ENV, REQUIRE_SIGNED_ENV = "ECGPIPE_MODEL_KEY", "ECGPIPE_MODEL_KEY_FILE", "ECGPIPE_REQUIRE_SIGNED"
# Types beyond skops' defaults that an ecgpipe artifact may contain; anything else is refused.
TRUSTED_TYPES = [
    "ecgpipe.classify.BlockWeights",
    "ecgpipe.classify.CappedPCA",  # scikit-learn's PCA, fitted to at most as many components as its rows allow
    # scikit-learn's CalibratedClassifierCV whose fit may take subjects; its own state is one word naming its folds
    "ecgpipe.calibration.SubjectCalibratedClassifier",
    "ecgpipe.kernels.RBFKernelSVC",  # libsvm's SVC on a precomputed RBF kernel: arrays and the SVC, no code
    # scikit-learn's own tree container of HistGradientBoostingClassifier (kind = 'hgb'): plain arrays, no code
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    # Platt scaling of an SVC (record_rule = 'mean_probability'): scikit-learn's calibration containers
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
]


class ModelError(EcgpipeError):
    """A model artifact cannot be used. ``str(err)`` is ``"<file>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # keep both fields when the error crosses process boundaries (Dask, Prefect)
        return (type(self), (self.path, self.problem))


@dataclass
class TrainedModel:
    classifier: object  # fitted sklearn Pipeline
    config: PipelineConfig
    class_names: list[str]
    backbone: str
    layer: str
    weights_source: str
    n_cnn: int | None
    code_version: str
    training: dict
    path: str = ""
    digest: str = ""  # sha256 of the artifact's content (every archive member but the integrity record)
    signed: bool = False  # carries an HMAC-SHA256 signature that was verified with the key
    # per binary endpoint of the config (e.g. shockable = vt + vf): a two-class classifier with the same settings,
    # fitted on every window (endpoint or not); an endpoint without one is read off the 4-class calls
    detectors: dict = field(default_factory=dict)
    # Python, the platform and library versions it was trained with (ecgpipe.environment; none before 0.15.0)
    environment: dict = field(default_factory=dict)

    def endpoint_scores(self, cnn: np.ndarray | None, rhythm: np.ndarray | None) -> dict[str, np.ndarray]:
        """Each detector's score of windows: > 0 means the endpoint (its decision function, or the log-odds of its
        probability for a calibrated one)."""
        from ecgpipe.classify import design_matrix

        X = design_matrix(cnn, rhythm, self.config.classifier)
        return {name: detector_score(detector, X) for name, detector in self.detectors.items()}

    def predict(self, cnn: np.ndarray | None, rhythm: np.ndarray | None) -> np.ndarray:
        """Class indices of windows from their CNN and rhythm features (whichever the classifier uses). A model with
        level = 'record' sees the windows as one record: one class, given to every window."""
        from ecgpipe.aggregate import summarize_rows
        from ecgpipe.classify import design_matrix

        clf = self.config.classifier
        if clf.level == "record":
            n = len(cnn if cnn is not None else rhythm)
            if not n:
                return np.zeros(0, dtype=np.int64)
            rows, stats = [np.arange(n)], list(clf.record_stats)
            summarize = lambda block: None if block is None else summarize_rows(block, rows, stats)  # noqa: E731
            one = self.classifier.predict(design_matrix(summarize(cnn), summarize(rhythm), clf))
            return np.full(n, int(one[0]), dtype=np.int64)
        return np.asarray(self.classifier.predict(design_matrix(cnn, rhythm, clf)), dtype=np.int64)

    def predict_proba(self, cnn: np.ndarray | None, rhythm: np.ndarray | None) -> np.ndarray | None:
        """(n, n_classes) class probabilities of windows, for a model whose record rule is the mean probability;
        None for the others (their record class is the windows' vote)."""
        from ecgpipe.classify import class_probabilities, design_matrix

        clf = self.config.classifier
        if not clf.uses_probabilities:
            return None
        proba = self.classifier.predict_proba(design_matrix(cnn, rhythm, clf))
        return class_probabilities(proba, self.classifier.classes_, len(self.class_names))


def detector_score(detector, X: np.ndarray) -> np.ndarray:
    """A two-class classifier's score for its positive class, > 0 where it calls it: its decision function, or the
    log-odds of its probability for a probability-only one (unbounded like a margin, rather than p - 1/2 in
    [-1/2, 1/2]). The scale still differs by kind (an SVC's margin, a logistic regression's log-odds), so the change
    penalty of ``ecgpipe predict``'s endpoint calls is a per-model setting."""
    classes = getattr(detector, "classes_", ())
    if len(classes) == 1:  # fitted on one side only (a fold without the endpoint's patients): it can answer only that
        return np.full(len(X), 1e6 if bool(classes[0]) else -1e6)
    if hasattr(detector, "decision_function"):
        return np.asarray(detector.decision_function(X), dtype=np.float64)
    p = np.clip(np.asarray(detector.predict_proba(X)[:, 1], dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def save_model(path: str | Path, classifier, cfg: PipelineConfig, *, weights_source: str, n_cnn: int | None, training: dict,
               detectors: dict | None = None) -> None:
    import skops.io as sio

    features = cfg.features
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "code_version": ecgpipe.__version__,
        "config_json": cfg.model_dump_json(),
        "class_names": list(cfg.class_names),
        "backbone": features.backbone,
        "layer": features.layer or "",
        "weights_source": weights_source,
        "n_cnn": int(n_cnn or 0),
        "training_json": json.dumps(training),
        "environment_json": json.dumps(software_versions()),
        "classifier": classifier,
        "detectors": dict(detectors or {}),
    }
    tmp = Path(f"{path}.tmp")
    sio.dump(payload, tmp)
    digest = content_digest(tmp)
    key = signing_key()
    record = {"sha256": digest, **({"hmac_sha256": hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()} if key else {})}
    with zipfile.ZipFile(tmp, "a") as archive:
        archive.writestr(INTEGRITY_MEMBER, json.dumps(record))
    tmp.replace(path)  # a reader never sees half an artifact


def content_digest(path: str | Path) -> str:
    """sha256 over the name and bytes of every member of the archive but the integrity record, in name order: any
    edit (class names, configuration, coefficients) changes it."""
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        for name in sorted(n for n in archive.namelist() if n != INTEGRITY_MEMBER):
            h.update(name.encode() + b"\0")
            h.update(archive.read(name))
    return h.hexdigest()


def signing_key() -> bytes | None:
    """The HMAC key, from $ECGPIPE_MODEL_KEY or the file named by $ECGPIPE_MODEL_KEY_FILE; None when neither is set."""
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV].encode()
    if os.environ.get(KEY_FILE_ENV):
        try:
            return Path(os.environ[KEY_FILE_ENV]).expanduser().read_bytes().strip()
        except OSError as exc:
            raise ModelError(os.environ[KEY_FILE_ENV], f"model signing key file unreadable ({exc.strerror})") from None
    return None


def check_integrity(path: Path, require_signed: bool = False) -> tuple[str, bool]:
    """The artifact's content digest and whether its signature was verified; ``ModelError`` if it was edited,
    corrupted, wrongly signed, or unsigned while ``require_signed``."""
    try:
        with zipfile.ZipFile(path) as archive:
            record = json.loads(archive.read(INTEGRITY_MEMBER))
        digest = content_digest(path)
    except KeyError:
        raise ModelError(path, "refused: no integrity record (written by an older ecgpipe, or altered); "
                               "retrain with this version") from None
    except Exception as exc:
        raise ModelError(path, f"corrupt model artifact: {type(exc).__name__}: {exc}") from None
    if not isinstance(record, dict) or record.get("sha256") != digest:
        raise ModelError(path, "refused: its content does not match its digest: the file was edited or corrupted "
                               "after it was written. Nothing from it was loaded.")
    key, signature = signing_key(), record.get("hmac_sha256")
    signed = False
    if signature and key:
        if not hmac.compare_digest(signature, hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()):
            raise ModelError(path, "refused: wrong signature (signed with another key, or altered and re-digested)")
        signed = True
    if require_signed and not signed:
        why = "it is not signed" if not signature else f"no key to verify its signature (${KEY_ENV} or ${KEY_FILE_ENV})"
        raise ModelError(path, f"refused: signed artifacts are required (${REQUIRE_SIGNED_ENV} / --require-signed) and {why}")
    return digest, signed


def load_model(path: str | Path, require_signed: bool | None = None) -> TrainedModel:
    """Load an artifact written by :func:`save_model`; refuse (``ModelError``) anything else, and any artifact whose
    content no longer matches its digest. ``require_signed`` (default: $ECGPIPE_REQUIRE_SIGNED) refuses unsigned
    artifacts and those whose signature the key does not verify."""
    import skops.io as sio

    path = Path(path)
    if path.is_dir():  # a run's folder given for its artifact
        hint = f": give {path / 'model.skops'}" if (path / "model.skops").is_file() else " (no model.skops in it)"
        raise ModelError(path, f"a folder, not a model file{hint}")
    if not path.is_file():
        raise ModelError(path, "model file not found")
    if not zipfile.is_zipfile(path):
        raise ModelError(path, "not an ecgpipe model artifact (not a skops archive; pickle files are never loaded)")
    if require_signed is None:
        require_signed = os.environ.get(REQUIRE_SIGNED_ENV, "") not in ("", "0", "false")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise ModelError(path, f"not a readable skops archive: {type(exc).__name__}: {exc}") from None
    foreign = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if foreign:
        raise ModelError(
            path, f"refused: it contains types ecgpipe does not trust ({', '.join(foreign)}); the file was altered or "
            "was not written by ecgpipe. Nothing from it was loaded."
        )
    digest, signed = check_integrity(path, require_signed)  # before anything is built from it
    try:
        payload = sio.load(path, trusted=TRUSTED_TYPES)
    except Exception as exc:
        raise ModelError(path, f"corrupt model artifact: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(path, f"not an ecgpipe model artifact (no '{FORMAT}' format marker)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ModelError(path, f"artifact format version {payload.get('format_version')}; this ecgpipe reads {FORMAT_VERSION}")
    try:
        cfg = PipelineConfig.model_validate_json(payload["config_json"])
        model = TrainedModel(
            classifier=payload["classifier"],
            config=cfg,
            class_names=list(payload["class_names"]),
            backbone=str(payload["backbone"]),
            layer=str(payload["layer"]),
            weights_source=str(payload["weights_source"]),
            n_cnn=int(payload["n_cnn"]) or None,
            code_version=str(payload["code_version"]),
            training=json.loads(payload["training_json"]),
            path=str(path),
            digest=digest,
            signed=signed,
            detectors=dict(payload.get("detectors") or {}),  # artifacts written before detectors existed have none
            environment=json.loads(payload.get("environment_json") or "{}"),
        )
    except Exception as exc:
        raise ModelError(path, f"incomplete or inconsistent model artifact: {type(exc).__name__}: {exc}") from None
    if model.class_names != cfg.class_names or not hasattr(model.classifier, "predict"):
        raise ModelError(path, "inconsistent model artifact: class names or classifier do not match its configuration")
    if set(model.detectors) - set(cfg.endpoints) or not all(hasattr(d, "predict") for d in model.detectors.values()):
        raise ModelError(path, "inconsistent model artifact: its endpoint detectors do not match its configuration")
    return model
