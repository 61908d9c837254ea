"""Two leads per segment (``segments.n_leads = 2``) as two image channels: reading both leads, their spectrograms and
images, a real flow run that stores and uses them, and prediction with the model that run saves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import wfdb
import zarr

from ecgpipe.config import DatabaseSettings, SpectrogramSettings, load_config
from ecgpipe.records import RecordError, read_record

from conftest import copy_records

# a system test: real Prefect flows, Dask clusters, torch models or processes (`make check` leaves it out)
pytestmark = pytest.mark.system

SLICE = {"mitdb": ["201", "203", "207"], "vfdb": ["418", "426"]}
CAP = 12
CHUNK = 16

TWO_LEADS_TOML = f"""
name = "two-leads"
[databases.mitdb]
lead = ["MLII", "V5"]
second_lead = ["V1", "V2", "V4"]
[databases.vfdb]
lead = [0]
[classes]
normal = ["(N", "(NSR"]
afib = ["(AFIB", "(AFL"]
vt = ["(VT"]
vf = ["(VF", "(VFIB", "(VFL"]
[segments]
n_leads = 2
[sampling]
max_per_class = {CAP}
[cv]
n_splits = 3
protocols = ["stratified_10fold"]
[run]
chunk_size = {CHUNK}
n_workers = 2
"""


def test_both_leads_are_read_in_preference_order(physionet):
    mitdb = DatabaseSettings(lead=["MLII", "V5"], second_lead=["V1", "V5"])
    rec = read_record(physionet / "mitdb", "mitdb", "201", mitdb, n_leads=2)
    assert rec.leads == ["MLII", "V1"] and rec.signals.shape == (2, 650000)
    assert rec.lead == "MLII" and np.array_equal(rec.signal, rec.signals[0])
    one = read_record(physionet / "mitdb", "mitdb", "201", mitdb)
    assert np.array_equal(one.signals[0], rec.signals[0]) and one.signals.shape == (1, 650000)
    # 100 has MLII and V5: V1 is absent, so the second preference wins
    assert read_record(physionet / "mitdb", "mitdb", "100", mitdb, n_leads=2).leads == ["MLII", "V5"]
    # vfdb names both channels "ECG": the second lead is the other channel, not the first one twice
    vf = read_record(physionet / "vfdb", "vfdb", "418", DatabaseSettings(lead=["ECG"]), n_leads=2)
    assert vf.leads == ["ECG", "ECG"] and not np.allclose(vf.signals[0], vf.signals[1])


def test_a_single_lead_record_is_refused_when_two_are_needed(tmp_path):
    signal = np.sin(np.linspace(0, 60, 3000))[:, None]
    wfdb.wrsamp("one", fs=250, units=["mV"], sig_name=["II"], p_signal=signal, fmt=["16"], write_dir=str(tmp_path))
    with pytest.raises(RecordError, match=r"one: segments.n_leads = 2, but the record has a single lead \['II'\]"):
        read_record(tmp_path, "mydb", "one", DatabaseSettings(lead=[0]), n_leads=2, require_annotations=False)


def test_two_lead_spectrograms_are_each_leads_own():
    from ecgpipe.spectrogram import spectrogram_chunk, spectrogram_shape

    s = SpectrogramSettings()
    x = np.random.default_rng(0).normal(size=(5, 2, 500))
    both = spectrogram_chunk(x, 250.0, s)
    assert both.shape == (5, *spectrogram_shape((2, 500), 250.0, s)) == (5, 2, 52, 55)
    for lead in (0, 1):
        assert np.allclose(both[:, lead], spectrogram_chunk(x[:, lead], 250.0, s), atol=1e-5)


def test_two_leads_become_red_and_green_with_their_mean_as_blue():
    from ecgpipe.features import IMAGENET_MEAN, IMAGENET_STD, spectrograms_to_images

    rng = np.random.default_rng(1)
    spec = torch.from_numpy(rng.normal(size=(3, 2, 52, 55)).astype(np.float32))
    images = spectrograms_to_images(spec, 64)
    single = [spectrograms_to_images(spec[:, lead], 64) for lead in (0, 1)]
    assert images.shape == (3, 3, 64, 64)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = images * std + mean  # back to [0, 1]
    lead_pixels = [s * std + mean for s in single]  # one lead: the same picture in all three channels
    assert torch.allclose(pixels[:, 0], lead_pixels[0][:, 0], atol=1e-5)
    assert torch.allclose(pixels[:, 1], lead_pixels[1][:, 1], atol=1e-5)
    assert torch.allclose(pixels[:, 2], (lead_pixels[0][:, 2] + lead_pixels[1][:, 2]) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="spectrograms must be"):
        spectrograms_to_images(torch.zeros(2, 3, 52, 55), 64)


@pytest.fixture(scope="module")
def two_lead_run(tmp_path_factory, physionet, prefect_server):
    from flows.ecg_pipeline import run_pipeline

    tmp = tmp_path_factory.mktemp("two_leads")
    for db, records in SLICE.items():
        copy_records(physionet, tmp / "data", db, records)
    cfg_path = tmp / "two.toml"
    cfg_path.write_text(TWO_LEADS_TOML)
    cfg = load_config(cfg_path)
    report = run_pipeline(cfg, str(tmp / "data"), str(tmp / "out"))
    return {"report": report, "cfg": cfg, "out": tmp / "out", "data": tmp / "data"}


def test_flow_stores_both_leads_and_their_spectrograms(two_lead_run, physionet):
    from ecgpipe.dataset import lead_windows, resampled_leads

    report, cfg = two_lead_run["report"], two_lead_run["cfg"]
    store = zarr.open_group(report["store"], mode="r")
    n = report["n_segments"]
    assert n == 4 * CAP
    signal = store["segments/signal"]
    assert signal.shape == (n, 2, 500) and signal.chunks == (CHUNK, 2, 500)
    (spec_name,) = list(store["spectrograms"].group_keys())
    assert store[f"spectrograms/{spec_name}/data"].shape == (n, 2, 52, 55)
    assert report["spectrogram_shape"] == [2, 52, 55]
    assert "x 2 leads (image channels)" in (two_lead_run["out"] / "report.md").read_text()
    # every stored row holds both leads of its own record at its own start
    sources = store["segments"].attrs["sources"]
    source, start = store["segments/source"][...], store["segments/start"][...]
    stored = signal[...]
    for i in sorted({int(s) for s in source}):
        src = sources[i]
        rec = read_record(physionet / src["database"], src["database"], src["record"], cfg.database(src["database"]), n_leads=2)
        rows = np.flatnonzero(source == i)
        direct = lead_windows(resampled_leads(rec, 250.0), start[rows], 500)
        assert np.allclose(stored[rows], direct, atol=1e-5), src


def test_two_lead_features_use_the_second_lead(two_lead_run):
    """The stored features equal a direct computation from both leads, and differ from the first lead's alone."""
    from ecgpipe.features import FeatureExtractor
    from ecgpipe.spectrogram import spectrogram_chunk

    report, cfg = two_lead_run["report"], two_lead_run["cfg"]
    store = zarr.open_group(report["store"], mode="r")
    rows = np.array([0, CHUNK, report["n_segments"] - 1])
    signal = store["segments/signal"][...][rows]
    extractor = FeatureExtractor(cfg.features)
    both = extractor(spectrogram_chunk(signal, 250.0, cfg.spectrogram).astype(np.float16))
    first_only = extractor(spectrogram_chunk(signal[:, 0], 250.0, cfg.spectrogram).astype(np.float16))
    stored = store[report["comparison"][0]["features_array"]][...][rows]
    assert np.allclose(stored, both, atol=1e-3)
    assert not np.allclose(stored, first_only, atol=1e-2)


def test_predict_with_a_two_lead_model(two_lead_run, physionet, tmp_path):
    from ecgpipe.model import load_model
    from ecgpipe.predict import predict_record

    model = load_model(two_lead_run["out"] / "model.skops")
    assert model.config.segments.n_leads == 2
    # the first 2 minutes of 203, both leads
    rec = wfdb.rdrecord(str(physionet / "mitdb" / "203"), sampto=120 * 360)
    wfdb.wrsamp("203", fs=360, units=rec.units, sig_name=rec.sig_name, p_signal=rec.p_signal, fmt=["16", "16"],
                write_dir=str(tmp_path))
    pred = predict_record(model, str(tmp_path / "203"), smooth=1)
    assert pred.lead == "MLII+V1"
    assert len(pred.window_classes) == 60 and (pred.window_classes >= 0).all()
    wfdb.wrsamp("single", fs=360, units=["mV"], sig_name=["MLII"], p_signal=np.zeros((3600, 1)), fmt=["16"],
                write_dir=str(tmp_path))
    with pytest.raises(RecordError, match="single lead"):
        predict_record(model, str(tmp_path / "single"))
