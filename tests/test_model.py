"""The model artifact: a round trip keeps predictions and metadata; altered, foreign or pickled files are refused."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest
import skops.io as sio

from ecgpipe.classify import fit_classifier
from ecgpipe.config import load_config
from ecgpipe.model import ModelError, load_model, save_model


@pytest.fixture(scope="module")
def fused_model(tmp_path_factory):
    """A fitted CNN+rhythm classifier (it contains ecgpipe's own BlockWeights step) saved as an artifact."""
    cfg = load_config("paper4", {"rhythm": {"enabled": True}, "classifier": {"inputs": "cnn+rhythm", "pca": 5}})
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    cnn = rng.normal(size=(120, 20)) + y[:, None]
    rhythm = rng.normal(size=(120, 8)) - y[:, None]
    X = np.hstack([cnn, rhythm])
    model, _ = fit_classifier(X, y, cfg.classifier, n_cnn=20)
    path = tmp_path_factory.mktemp("model") / "model.skops"
    save_model(path, model, cfg, weights_source="test", n_cnn=20, training={"n_segments": 120})
    return {"path": path, "model": model, "cnn": cnn, "rhythm": rhythm, "X": X, "cfg": cfg}


def test_round_trip_keeps_predictions_and_metadata(fused_model):
    loaded = load_model(fused_model["path"])
    expected = fused_model["model"].predict(fused_model["X"])
    assert np.array_equal(loaded.predict(fused_model["cnn"], fused_model["rhythm"]), expected)
    assert loaded.class_names == ["normal", "afib", "vt", "vf"]
    assert loaded.config == fused_model["cfg"]
    assert loaded.backbone == "efficientnet_lite0" and loaded.n_cnn == 20 and loaded.training == {"n_segments": 120}
    with pytest.raises(ValueError, match="needs cnn\\+rhythm features"):
        loaded.predict(fused_model["cnn"], None)


def _rewrite_schema(src, dst, old: str, new: str) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "schema.json":
                text = data.decode()
                assert old in text
                data = text.replace(old, new).encode()
            zout.writestr(item, data)


def test_a_tampered_artifact_is_refused_before_anything_is_built(fused_model, tmp_path):
    bad = tmp_path / "tampered.skops"
    # point the BlockWeights step at os.system: loading it would be code execution
    _rewrite_schema(fused_model["path"], bad, '"__class__": "BlockWeights",\n', '"__class__": "system",\n')
    _rewrite_schema(bad, tmp_path / "t2.skops", '"__module__": "ecgpipe.classify"', '"__module__": "os"')
    with pytest.raises(ModelError, match=r"t2.skops: refused: it contains types ecgpipe does not trust \(os.system\)"):
        load_model(tmp_path / "t2.skops")


def test_foreign_and_pickled_files_are_refused(fused_model, tmp_path):
    foreign = tmp_path / "foreign.skops"
    sio.dump({"classifier": fused_model["model"], "note": "someone else's"}, foreign)
    with pytest.raises(ModelError, match="not an ecgpipe model artifact .no 'ecgpipe-model' format marker"):
        load_model(foreign)
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps(fused_model["model"]))
    with pytest.raises(ModelError, match="pickle files are never loaded"):
        load_model(pickled)
    with pytest.raises(ModelError, match="model file not found"):
        load_model(tmp_path / "missing.skops")
    truncated = tmp_path / "truncated.skops"
    truncated.write_bytes(fused_model["path"].read_bytes()[:2000])
    with pytest.raises(ModelError):
        load_model(truncated)


def test_an_artifact_with_an_invalid_config_or_version_is_refused(fused_model, tmp_path):
    good = sio.load(fused_model["path"], trusted=["ecgpipe.classify.BlockWeights"])
    bad_config = dict(good, config_json=good["config_json"].replace('"name":', '"nmae":'))
    sio.dump(bad_config, tmp_path / "bad-config.skops")
    with pytest.raises(ModelError, match="(?s)incomplete or inconsistent model artifact: .*nmae"):
        load_model(tmp_path / "bad-config.skops")
    sio.dump(dict(good, format_version=99), tmp_path / "future.skops")
    with pytest.raises(ModelError, match="format version 99"):
        load_model(tmp_path / "future.skops")
