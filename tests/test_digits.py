"""Digits: domain, classifier, UNet pre-training, S-MEME rounds and fixed-noise grids.

CI budget: one pre-training shared by the module (CI_STEPS = 300 steps at lr 3e-3, 1.5-2.5
minutes on the loaded 2-core CPU) and ONE shorter round at a larger lambda (0.2, 5 solver
iterations, about a minute). The full-quality claims (the preset's pre-training and the
default 3 rounds at lambda = 0.1) are measured by bench/bench_images.py; here the same
claims are checked on the reduced budget (measured at this budget: rare share 0.18 ->
0.24, Vendi diversity 4.6 -> 5.0, confidence 0.95 -> 0.93).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

import smeme.images  # noqa: E402,F401  (registers the digits data set, preset and UNet)

CI_STEPS = 300
CI_TRAIN = {"lr": 3e-3}
CI_ROUNDS = 1
CI_LAM = 0.2
CI_SOLVER = {"iterations": 5}


# ---------------------------------------------------------------------------- data and classifier
def test_domain_round_trip_and_imbalance():
    from smeme.data import domain_from_config, make_dataset
    from smeme.images.digits import DigitsDomain, load_all_digits

    ds = make_dataset("digits")
    raw, labels = load_all_digits()
    assert raw.shape == (1797, 64) and ds.raw.shape[1] == 64
    feat = ds.features()
    assert feat.shape == (len(ds.raw), 1, 8, 8) and feat.min() >= -1 and feat.max() <= 1
    np.testing.assert_allclose(ds.domain.from_features(feat), ds.raw)
    counts = np.asarray(ds.info["class_counts"])
    assert counts[:5].min() > 170 and counts[5:].max() < 40  # digits 5-9 at 20%
    assert abs(ds.info["rare_share"] - 1 / 6) < 0.01
    balanced = make_dataset("digits", balanced=True)
    assert len(balanced.raw) == 1797
    dom = domain_from_config(ds.domain.to_config())
    assert isinstance(dom, DigitsDomain) and DigitsDomain.sample_shape == (1, 8, 8)
    st = dom.fit_standardizer(feat)
    np.testing.assert_allclose(st.inverse(st.forward(feat)), feat)
    with pytest.raises(ValueError):
        make_dataset("digits", rare_fraction=0.0)


def test_classifier_is_accurate_and_not_fooled_by_noise():
    from smeme.images.classifier import ClassifierConfig, get_classifier, train_classifier
    from smeme.images.digits import load_all_digits, raw_to_images

    raw, labels = load_all_digits()
    x = raw_to_images(raw)
    perm = np.random.default_rng(0).permutation(len(labels))
    tr, te = perm[:1400], perm[1400:]
    held_out = train_classifier(x[tr], labels[tr], ClassifierConfig(epochs=15))
    assert held_out.accuracy(x[te], labels[te]) >= 0.95
    clf = get_classifier()  # trained on all 1,797 (cached as safetensors)
    assert clf.accuracy(x, labels) >= 0.99
    conf_real = clf.predict_proba(x).max(axis=1).mean()
    noise = np.random.default_rng(1).uniform(-1, 1, (200, 1, 8, 8))
    assert conf_real > 0.95 and clf.predict_proba(noise).max(axis=1).mean() < 0.5
    assert clf.features(x[:5]).shape == (5, 64)
    dom_valid = __import__("smeme.images.digits", fromlist=["DigitsDomain"]).DigitsDomain().on_support(raw)
    assert dom_valid.mean() > 0.95


def test_image_metric_helpers():
    from smeme.images.metrics import frechet_distance, gaussian_cross_entropy, vendi_score

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    s = np.cov(a, rowvar=False)
    assert frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3)) < 1e-9
    assert abs(frechet_distance(np.ones(3), np.eye(3), np.zeros(3), np.eye(3)) - 3) < 1e-9
    assert abs(frechet_distance(np.zeros(3), 4 * np.eye(3), np.zeros(3), np.eye(3)) - 3) < 1e-9
    h = gaussian_cross_entropy(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3))
    assert abs(h - 1.5 * (1 + np.log(2 * np.pi))) < 1e-5  # = entropy of N(0, I_3)
    assert gaussian_cross_entropy(a.mean(0), s, np.zeros(3), 0.5 * np.eye(3)) > h
    one = np.tile([[1.0, 0, 0]], (50, 1))
    three = np.repeat(np.eye(3), 50, axis=0)
    assert abs(vendi_score(one) - 1) < 1e-6 and abs(vendi_score(three) - 3) < 1e-6


def test_unet_builds_from_registry_with_its_schedule():
    from smeme.models.registry import build_model
    from smeme.images.unet import UNetConfig, make_schedule, model_config
    from smeme.schedule import VPSchedule

    cfg = model_config(UNetConfig(block_out_channels=(16, 16), attention=(False, True)))
    m = build_model(cfg, VPSchedule())
    assert m.sample_shape == (1, 8, 8)
    assert torch.allclose(m.schedule.alphas_cumprod, make_schedule("cosine").alphas_cumprod)
    assert float(m.schedule.ab(torch.tensor(1.0))) >= 0.999e-4  # floored table
    x = torch.randn(3, 1, 8, 8)
    assert torch.count_nonzero(m(x, torch.rand(3))) == 0  # zero-initialised output
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(block_out_channels=(12, 16), attention=(False, False))


def test_unet_runs_channels_last_and_saves_the_same_weights_as_nchw(tmp_path):
    """The convolutions run channels-last (the faster CPU layout); outputs and gradients match the
    NCHW layout, saved weights are ordinary contiguous tensors, and a file saved from one layout
    loads into the other unchanged."""
    from smeme.images import unet
    from smeme.models.registry import build_model
    from smeme.run_files import load_weights_into, save_weights
    from smeme.schedule import VPSchedule

    cfg = unet.model_config(unet.UNetConfig(block_out_channels=(16, 16), attention=(False, False)))
    torch.manual_seed(0)
    fast = build_model(cfg, VPSchedule())
    for p in fast.parameters():  # a non-trivial network (the output convolution starts at zero)
        p.data.add_(0.1 * torch.randn_like(p))
    convs = [p for p in fast.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not all(p.is_contiguous() for p in convs)  # really a different layout (not a 1x1 coincidence)
    save_weights(tmp_path / "w.safetensors", fast)
    from safetensors.torch import load_file

    assert all(v.is_contiguous() for v in load_file(str(tmp_path / "w.safetensors")).values())
    plain = build_model(cfg, VPSchedule()).to(memory_format=torch.contiguous_format)
    load_weights_into(tmp_path / "w.safetensors", plain)
    assert all(p.is_contiguous() for p in plain.parameters())
    x, t = torch.randn(5, 1, 8, 8, requires_grad=True), torch.rand(5)
    out_fast = fast(x, t)
    (g_fast,) = torch.autograd.grad(out_fast.square().sum(), x)
    out_plain = plain(x, t)
    (g_plain,) = torch.autograd.grad(out_plain.square().sum(), x)
    assert torch.allclose(out_fast, out_plain, atol=1e-5) and torch.allclose(g_fast, g_plain, atol=1e-4)
    assert float(out_fast.detach().abs().max()) > 1e-3  # the comparison is not between two zero outputs


# ---------------------------------------------------------------------------- a pre-trained model
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from smeme.pipeline import pretrain_run

    folder = tmp_path_factory.mktemp("digits") / "run"
    run = pretrain_run(folder, "digits", steps=CI_STEPS, seed=0, train_params=CI_TRAIN)
    return run


def test_pretrained_samples_are_digits_with_the_training_imbalance(pretrained):
    from smeme.images.classifier import get_classifier
    from smeme.images.digits import load_all_digits, raw_to_images

    m0 = pretrained.metrics()[0]
    raw, _ = load_all_digits()
    real_conf = get_classifier().predict_proba(raw_to_images(raw)).max(axis=1).mean()
    assert m0["confidence"] > real_conf - 0.12, (m0["confidence"], real_conf)
    assert m0["valid_share"] > 0.8
    train_share = pretrained.config["dataset"]["info"]["rare_share"]
    lo, hi = m0["rare_share_ci"]
    assert lo - 0.05 <= train_share <= hi + 0.05, (m0["rare_share"], train_share)
    assert m0["rare_share"] < 0.3  # the imbalance is reproduced, not washed out
    counts = np.asarray(m0["class_counts"])
    assert counts[:5].min() > counts[5:].max() * 0.8  # common classes stay common
    assert m0["frechet_distance"] is not None and m0["train"]["steps"] == CI_STEPS


@pytest.fixture(scope="module")
def explored(pretrained, tmp_path_factory):
    import shutil

    from smeme.images.digits_rounds import run_digits_rounds
    from smeme.store import Run

    folder = tmp_path_factory.mktemp("digits_explored") / "run"
    shutil.copytree(pretrained.folder, folder)
    run = Run.open(folder)
    seen = []
    run_digits_rounds(run, CI_ROUNDS, lam=CI_LAM, solver=CI_SOLVER, on_round=lambda k, m: seen.append(k))
    assert seen == list(range(1, CI_ROUNDS + 1))
    return run


def test_rounds_raise_rare_share_and_diversity_keep_confidence(explored):
    m = explored.metrics()
    first, last = m[0], m[CI_ROUNDS]
    assert explored.rounds() == list(range(CI_ROUNDS + 1))
    assert last["rare_share"] > first["rare_share"] + 0.03, (first["rare_share"], last["rare_share"])
    assert last["diversity"] > first["diversity"], (first["diversity"], last["diversity"])
    assert last["entropy_knn"] > first["entropy_knn"]
    assert last["confidence"] > first["confidence"] - 0.08, (first["confidence"], last["confidence"])
    assert last["frechet_distance"] > first["frechet_distance"]  # the distribution moved
    assert all(np.isfinite(m[k]["loss_last"]) for k in range(1, CI_ROUNDS + 1))


def test_grid_maps_the_same_noise_through_each_round(explored, tmp_path):
    from PIL import Image

    from smeme.images.grid import DIGITS_STEPS, GridError, grid_arrays, make_grid, save_grid, to_uint8
    from smeme.sampling import sample

    rows = grid_arrays(explored, [0, CI_ROUNDS], n=6, seed=11)
    m0 = explored.load_model(0)
    direct = sample(m0, 6, steps=DIGITS_STEPS, seed=11).numpy()
    np.testing.assert_array_equal(rows[0], to_uint8(direct))  # round 0 row == sampling round 0 with that seed
    assert rows[0].shape == (6, 8, 8) and rows[0].dtype == np.uint8
    assert not np.array_equal(rows[0], rows[CI_ROUNDS])
    again = grid_arrays(str(explored.folder), [CI_ROUNDS], n=6, seed=11)
    np.testing.assert_array_equal(again[CI_ROUNDS], rows[CI_ROUNDS])  # deterministic under the seed
    img = make_grid(explored, [0, CI_ROUNDS], n=6, seed=11)
    assert img.size[1] < img.size[0] and img.size[1] >= 2 * 64  # upsampled for display only
    out = save_grid(explored, [0, CI_ROUNDS], 4, 3, tmp_path / "g.png")
    assert Image.open(out).size[0] > 4 * 64
    with pytest.raises(GridError, match="no round"):
        make_grid(explored, [0, 99], n=2, seed=0)
    with pytest.raises(GridError, match="png"):
        save_grid(explored, [0], 2, 0, tmp_path / "g.txt")


def test_images_page_shows_grid_metrics_and_sd_errors(explored, tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SMEME_CACHE_DIR", str(tmp_path))
    shutil.copytree(explored.folder, tmp_path / "runs" / "digits-test")
    page = str(Path(__file__).resolve().parent.parent / "pages" / "4_Images.py")
    at = AppTest.from_file(page, default_timeout=120).run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 1  # the grid
    assert at.dataframe and "rare share" in at.dataframe[0].value.columns
    at.radio(key="img_kind").set_value("Stable Diffusion (local folder)").run()
    assert not at.exception
    # no pipeline on this server: the page says where models are looked up (no path box to type in)
    assert any("No Stable Diffusion pipeline on this server" in i.value for i in at.info)
    assert not [t for t in at.text_input if t.key == "img_sd_src"]
    assert any("Inception" in i.value for i in at.info)
