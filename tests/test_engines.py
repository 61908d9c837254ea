"""Inference engines (ecgpipe/engines.py): eager PyTorch, ONNX Runtime and OpenVINO give the same features on real
spectrograms; the engine is a speed setting, never part of a key; misuse fails with a clear message."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from ecgpipe.config import FeatureSettings, load_config
from ecgpipe.engines import EngineUnavailable, resolve_engine
from ecgpipe.features import FeatureExtractor
from ecgpipe.spectrogram import spectrogram_chunk
from ecgpipe.stages import features

pytestmark = pytest.mark.system  # real torch models


@pytest.fixture(scope="session")
def real_spectrograms(physionet):
    import wfdb

    cfg = load_config("paper4")
    record = wfdb.rdrecord(str(physionet / "mitdb" / "201"), sampto=360 * 40, channels=[0])
    from scipy.signal import resample_poly

    x = resample_poly(record.p_signal[:, 0], 25, 36)  # 360 -> 250 Hz
    windows = np.stack([x[i * 500 : (i + 1) * 500] for i in range(19)])  # 19 windows: batches of 8 leave a remainder
    return spectrogram_chunk(windows, cfg.segments.target_fs, cfg.spectrogram).astype(np.float16)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_exported_engines_give_torch_features(real_spectrograms, engine):
    settings = FeatureSettings(batch_size=8, engine="torch")
    layers = ("_blocks.4", "_blocks.10")  # the pooled output and two intermediate taps, one pass
    reference = FeatureExtractor(settings, layers).extract(real_spectrograms)
    extractor = FeatureExtractor(settings.model_copy(update={"engine": engine}), layers)
    assert extractor.engine == engine
    got = extractor.extract(real_spectrograms)
    assert set(got) == set(reference) == {"_avg_pooling", *layers}
    for layer, ref in reference.items():
        assert got[layer].shape == ref.shape == (19, ref.shape[1]) and got[layer].dtype == np.float32
        # float32 both ways: only summation order differs
        assert np.abs(got[layer] - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max()), layer
    assert np.abs(ref).max() > 0.1  # real activations, not zeros


def test_auto_is_onnxruntime_on_cpu_and_torch_on_gpu():
    assert resolve_engine("auto", torch.device("cpu")) == "onnxruntime"
    assert resolve_engine("auto", torch.device("cuda")) == "torch"
    assert FeatureExtractor(FeatureSettings(weights="random", backbone="resnet18")).engine == "onnxruntime"
    with pytest.raises(EngineUnavailable, match="CPUs only.*cuda"):
        resolve_engine("openvino", torch.device("cuda"))
    with pytest.raises(ValidationError, match="engine"):
        FeatureSettings(engine="tensorrt")


def test_engine_is_not_part_of_any_key():
    cfg = load_config("paper4")
    other = cfg.with_stage(features=cfg.features.model_copy(update={"engine": "torch"}))
    assert features.array_name(cfg) == features.array_name(other)
    assert features.chunk_keys(cfg, ["k1"]) == features.chunk_keys(other, ["k1"])
    size = cfg.with_stage(features=cfg.features.model_copy(update={"image_size": 128}))
    assert features.array_name(size) != features.array_name(cfg)  # the image size does change values


def test_device_outputs_are_copied_back_once_as_one_float32_array():
    # on a GPU the torch runner leaves each batch's pooled features on the device; extract() joins them at the end
    from ecgpipe.features import _to_numpy

    parts = [torch.arange(6, dtype=torch.bfloat16).view(2, 3), torch.ones(1, 3, dtype=torch.bfloat16)]
    joined = _to_numpy(parts)
    assert joined.dtype == np.float32 and joined.shape == (3, 3)
    assert joined[:2].ravel().tolist() == [0, 1, 2, 3, 4, 5] and joined[2].tolist() == [1, 1, 1]
    assert _to_numpy([np.zeros((2, 3), np.float16), np.ones((1, 3), np.float16)]).dtype == np.float32
