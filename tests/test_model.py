"""The model artifact: a round trip keeps predictions and metadata; altered, foreign or pickled files are refused."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest
import skops.io as sio

from ecgpipe.classify import fit_classifier
from ecgpipe.config import load_config
from ecgpipe.model import INTEGRITY_MEMBER, KEY_ENV, TRUSTED_TYPES, ModelError, content_digest, load_model, save_model


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


def test_endpoint_detectors_travel_with_the_model_and_older_artifacts_load_without_them(fused_model, tmp_path):
    from ecgpipe.model import detector_score

    cfg, X = fused_model["cfg"], fused_model["X"]
    shockable = np.isin(np.repeat(np.arange(4), 30), [2, 3]).astype(int)  # vt + vf
    detector, _ = fit_classifier(X, shockable, cfg.classifier, n_cnn=20)
    path = tmp_path / "with-detectors.skops"
    save_model(path, fused_model["model"], cfg, weights_source="test", n_cnn=20, training={}, detectors={"shockable": detector})
    loaded = load_model(path)
    assert set(loaded.detectors) == {"shockable"}
    scores = loaded.endpoint_scores(fused_model["cnn"], fused_model["rhythm"])["shockable"]
    assert np.allclose(scores, detector_score(detector, X)) and ((scores > 0) == shockable).mean() > 0.9
    assert load_model(fused_model["path"]).detectors == {}  # an artifact written without detectors
    # a detector for an endpoint the configuration does not declare: refused
    odd = tmp_path / "odd.skops"
    save_model(odd, fused_model["model"], cfg, weights_source="test", n_cnn=20, training={}, detectors={"asystole": detector})
    with pytest.raises(ModelError, match="endpoint detectors do not match its configuration"):
        load_model(odd)


def _rewrite_schema(src, dst, old: str, new: str) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "schema.json":
                text = data.decode()
                assert old in text
                data = text.replace(old, new).encode()
            zout.writestr(item, data)


def _redigest(path, keep_signature: bool = False) -> None:
    """What a careless (or malicious) editor could do: replace the digest by a fresh one of the edited content
    (keeping the old signature, or dropping it)."""
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist() if n != INTEGRITY_MEMBER}
        old = json.loads(archive.read(INTEGRITY_MEMBER)) if INTEGRITY_MEMBER in archive.namelist() else {}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    record = {"sha256": content_digest(path), **({"hmac_sha256": old["hmac_sha256"]} if keep_signature and "hmac_sha256" in old else {})}
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(INTEGRITY_MEMBER, json.dumps(record))


def _edit_payload(src, dst, **changes) -> None:
    """Rewrite the artifact's payload (as skops loads it) with ``changes``, keeping the original integrity record."""
    payload = sio.load(src, trusted=TRUSTED_TYPES)
    sio.dump(dict(payload, **changes), dst)
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "a") as out:
        out.writestr(INTEGRITY_MEMBER, archive.read(INTEGRITY_MEMBER))


def test_an_edited_artifact_is_refused_by_its_digest(fused_model, tmp_path):
    """Swapping two classes' names (in the class list and in the config), or negating the classifier's coefficients,
    makes a model that loads and predicts the wrong rhythms: the content digest refuses it."""
    payload = sio.load(fused_model["path"], trusted=TRUSTED_TYPES)
    names = payload["class_names"]
    swapped = [names[0], names[1], names[3], names[2]]
    config = json.loads(payload["config_json"])
    config["classes"] = {k: config["classes"][k] for k in swapped}
    _edit_payload(fused_model["path"], tmp_path / "swapped.skops", class_names=swapped, config_json=json.dumps(config))
    clf = payload["classifier"]
    svc = clf.named_steps["clf"].svc_  # libsvm's model inside the RBF-kernel SVC
    svc.dual_coef_, svc._dual_coef_ = -svc.dual_coef_, -svc._dual_coef_
    _edit_payload(fused_model["path"], tmp_path / "negated.skops", classifier=clf)
    for name in ("swapped", "negated"):
        with pytest.raises(ModelError, match=rf"{name}.skops: refused: its content does not match its digest"):
            load_model(tmp_path / f"{name}.skops")
    assert len(load_model(fused_model["path"]).digest) == 64  # the original still loads, with its digest


def test_signed_artifacts_verify_and_a_wrong_key_or_missing_signature_is_refused(fused_model, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "secret-1")
    cfg, model = fused_model["cfg"], fused_model["model"]
    save_model(tmp_path / "signed.skops", model, cfg, weights_source="test", n_cnn=20, training={})
    loaded = load_model(tmp_path / "signed.skops", require_signed=True)
    assert loaded.signed and loaded.digest == content_digest(tmp_path / "signed.skops")
    # an edited copy that an editor re-digested still fails: the signature is over the digest
    _rewrite_schema(tmp_path / "signed.skops", tmp_path / "edited.skops", '"__class__": "BlockWeights",\n', '"__class__": "BlockWeights",\n ')
    _redigest(tmp_path / "edited.skops", keep_signature=True)
    with pytest.raises(ModelError, match="wrong signature"):
        load_model(tmp_path / "edited.skops")
    _redigest(tmp_path / "edited.skops")  # the signature dropped: only an unsigned artifact, refused when required
    with pytest.raises(ModelError, match="not signed"):
        load_model(tmp_path / "edited.skops", require_signed=True)
    monkeypatch.setenv(KEY_ENV, "another-key")
    with pytest.raises(ModelError, match="wrong signature"):
        load_model(tmp_path / "signed.skops")
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ModelError, match="signed artifacts are required .* no key"):
        load_model(tmp_path / "signed.skops", require_signed=True)
    with pytest.raises(ModelError, match="signed artifacts are required .* not signed"):
        load_model(fused_model["path"], require_signed=True)
    assert not load_model(fused_model["path"]).signed  # unsigned artifacts load unless signatures are required


def test_a_tampered_artifact_is_refused_before_anything_is_built(fused_model, tmp_path):
    bad = tmp_path / "tampered.skops"
    # point the BlockWeights step at os.system: loading it would be code execution
    _rewrite_schema(fused_model["path"], bad, '"__class__": "BlockWeights",\n', '"__class__": "system",\n')
    _rewrite_schema(bad, tmp_path / "t2.skops", '"__module__": "ecgpipe.classify"', '"__module__": "os"')
    with pytest.raises(ModelError, match=r"t2.skops: refused: it contains types ecgpipe does not trust \((os.CappedPCA, )?os.system\)"):
        load_model(tmp_path / "t2.skops")


def test_foreign_and_pickled_files_are_refused(fused_model, tmp_path):
    foreign = tmp_path / "foreign.skops"
    sio.dump({"classifier": fused_model["model"], "note": "someone else's"}, foreign)
    with pytest.raises(ModelError, match="no integrity record"):
        load_model(foreign)
    _redigest(foreign)
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
    good = sio.load(fused_model["path"], trusted=TRUSTED_TYPES)
    bad_config = dict(good, config_json=good["config_json"].replace('"name":', '"nmae":'))
    sio.dump(bad_config, tmp_path / "bad-config.skops")
    _redigest(tmp_path / "bad-config.skops")
    with pytest.raises(ModelError, match="(?s)incomplete or inconsistent model artifact: .*nmae"):
        load_model(tmp_path / "bad-config.skops")
    sio.dump(dict(good, format_version=99), tmp_path / "future.skops")
    _redigest(tmp_path / "future.skops")
    with pytest.raises(ModelError, match="format version 99"):
        load_model(tmp_path / "future.skops")


def test_model_errors_keep_their_message_through_pickle(fused_model, tmp_path):
    """A Dask worker pickles the error it raised: the message (file and problem) must reach the client intact."""
    (tmp_path / "model.pkl").write_bytes(b"not a model")
    with pytest.raises(ModelError) as raised:
        load_model(tmp_path / "model.pkl")
    copy = pickle.loads(pickle.dumps(raised.value))
    assert type(copy) is ModelError and str(copy) == str(raised.value)
    assert copy.path == str(tmp_path / "model.pkl") and "pickle files are never loaded" in copy.problem


def test_every_error_with_its_own_init_survives_pickle():
    """EcgpipeError subclasses whose __init__ takes other arguments than the message need a __reduce__ (RecordError,
    ModelError): without one, unpickling calls __init__(message) and fails, losing the message."""
    import importlib
    import pkgutil

    import ecgpipe
    from ecgpipe.errors import EcgpipeError

    for module in pkgutil.walk_packages(ecgpipe.__path__, "ecgpipe."):
        importlib.import_module(module.name)

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    custom = {cls for cls in subclasses(EcgpipeError) if cls.__module__.startswith("ecgpipe") and "__init__" in vars(cls)}
    assert {cls.__name__ for cls in custom} >= {"ModelError", "RecordError"}
    for cls in custom:
        assert "__reduce__" in vars(cls), f"{cls.__module__}.{cls.__name__} has its own __init__ but no __reduce__"
    from ecgpipe.records import RecordError

    err = RecordError("mitdb/100", "truncated signal file")
    assert str(pickle.loads(pickle.dumps(err))) == "mitdb/100: truncated signal file"


def test_a_detector_without_a_decision_function_scores_in_log_odds():
    """A probability-only detector (e.g. a random forest) scores log p / (1 - p): positive where it calls the
    endpoint, on the scale the endpoint's change penalty is given in; certain calls stay finite."""
    from sklearn.ensemble import RandomForestClassifier

    from ecgpipe.model import detector_score

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    assert not hasattr(forest, "decision_function")
    p = forest.predict_proba(X)[:, 1]
    scores = detector_score(forest, X)
    assert np.isfinite(scores).all() and ((scores > 0) == (p > 0.5)).all()
    middle = (p > 0.01) & (p < 0.99)
    assert np.allclose(scores[middle], np.log(p[middle] / (1 - p[middle])))
