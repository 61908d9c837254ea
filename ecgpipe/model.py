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

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import ecgpipe
from ecgpipe.config import PipelineConfig
from ecgpipe.errors import EcgpipeError

FORMAT = "ecgpipe-model"
FORMAT_VERSION = 1
# Types beyond skops' defaults that an ecgpipe artifact may contain; anything else is refused.
TRUSTED_TYPES = ["ecgpipe.classify.BlockWeights"]


class ModelError(EcgpipeError):
    """A model artifact cannot be used. ``str(err)`` is ``"<file>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


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

    def predict(self, cnn: np.ndarray | None, rhythm: np.ndarray | None) -> np.ndarray:
        """Class indices of windows from their CNN and rhythm features (whichever the classifier uses)."""
        from ecgpipe.classify import design_matrix

        return np.asarray(self.classifier.predict(design_matrix(cnn, rhythm, self.config.classifier)), dtype=np.int64)


def save_model(path: str | Path, classifier, cfg: PipelineConfig, *, weights_source: str, n_cnn: int | None, training: dict) -> None:
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
        "classifier": classifier,
    }
    tmp = Path(f"{path}.tmp")
    sio.dump(payload, tmp)
    tmp.replace(path)  # a reader never sees half an artifact


def load_model(path: str | Path) -> TrainedModel:
    """Load an artifact written by :func:`save_model`; refuse (``ModelError``) anything else."""
    import skops.io as sio

    path = Path(path)
    if not path.is_file():
        raise ModelError(path, "model file not found")
    if not zipfile.is_zipfile(path):
        raise ModelError(path, "not an ecgpipe model artifact (not a skops archive; pickle files are never loaded)")
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
        )
    except Exception as exc:
        raise ModelError(path, f"incomplete or inconsistent model artifact: {type(exc).__name__}: {exc}") from None
    if model.class_names != cfg.class_names or not hasattr(model.classifier, "predict"):
        raise ModelError(path, "inconsistent model artifact: class names or classifier do not match its configuration")
    return model
