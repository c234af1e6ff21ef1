"""Per-round metrics: helpers, a stand-in run with an analytic model, and a real Run."""
import json

import numpy as np
import pytest
import torch

from smeme import metrics
from smeme.data.base import Standardizer
from smeme.data.toy import ToyDomain, sparse_share_after
from smeme.models import GaussianMixtureModel
from smeme.schedule import VPSchedule

FAST = {"steps": 8}  # PF-ODE steps: these tests check plumbing, not accuracy


def test_wilson_interval():
    lo, hi = metrics.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = metrics.wilson_interval(50, 100)
    assert lo == pytest.approx(1 - hi) and lo == pytest.approx(0.4038, abs=1e-3)
    assert metrics.wilson_interval(0, 0) == (0.0, 1.0)


def test_category_shares():
    s = metrics.category_shares(np.array(["a", "b", "a", "a"], dtype=object))
    assert s["a"]["share"] == 0.75 and s["b"]["count"] == 1
    assert s["a"]["lo"] < 0.75 < s["a"]["hi"]


def _toy_model(domain, std):
    """Mixture of small Gaussians filling the two squares (standardised space), 0.9 / 0.1."""
    means, weights = [], []
    for region, w in (("dense", 0.9), ("sparse", 0.1)):
        x0, x1, y0, y1 = domain.boxes()[region]
        g = np.stack(np.meshgrid(np.linspace(x0 + 0.1, x1 - 0.1, 5), np.linspace(y0 + 0.1, y1 - 0.1, 5)), -1).reshape(-1, 2)
        means.append(std.forward(g))
        weights += [w / len(g)] * len(g)
    cov = np.diag((0.08 / std.std) ** 2)
    return GaussianMixtureModel(weights, np.concatenate(means), cov, VPSchedule())


class StandInRun:
    """What round_metrics needs of a Run: domain, standardizer, config, load_model."""

    def __init__(self, domain, standardizer, models, config=None):
        self.domain, self.standardizer, self._models = domain, standardizer, models
        self.config = config or {}

    def load_model(self, k):
        return self._models[k]


def _toy_run(config=None):
    domain = ToyDomain()
    std = Standardizer(np.array([0.0, 0.0]), np.array([0.85, 0.3]))
    model = _toy_model(domain, std)
    return StandInRun(domain, std, {0: model}, config), model


def test_round_metrics_toy_round0_json_ready():
    run, model = _toy_run()
    m = metrics.round_metrics(run, model, 0, n=1024, steps=30, density_kw=FAST)
    json.dumps(m, allow_nan=False)
    assert m["on_support"] > 0.9
    shares = m["shares"]["region"]
    assert abs(sum(s["share"] for s in shares.values()) - 1) < 1e-12
    assert 0.05 < m["sparse_share"] < 0.16
    # round 0's closed form is the model's own split over the two squares
    on = shares["dense"]["count"] + shares["sparse"]["count"]
    assert m["sparse_share_closed_form"] == pytest.approx(shares["sparse"]["count"] / on)
    assert m["surprise_pre"] == m["cross_entropy_pfode"]  # round 0: same model
    # toy entropy (piecewise uniform, area 1): 0.325 nats; the k-NN estimate is near it
    assert abs(m["entropy_knn"] - ToyDomain().pretrained_entropy()) < 0.25
    assert m["cross_entropy_pfode"] is not None and np.isfinite(m["cross_entropy_pfode"])


def test_round_metrics_closed_form_from_history_and_config():
    run, model = _toy_run(config={"explore": {"lam": 0.1, "lam_schedule": "constant"}})
    m = metrics.round_metrics(run, model, 2, n=256, steps=10, logp=False)
    assert m["sparse_share_closed_form"] == pytest.approx(sparse_share_after(0.1, 2))
    m = metrics.round_metrics(run, model, 2, n=256, steps=10, logp=False, lam_history=[0.1, 0.3])
    assert m["closed_form"]["exponent"] == pytest.approx(0.9 * 0.7)
    assert "cross_entropy_pfode" not in m


def test_toy_closed_form_tilts_the_pretrained_models_split():
    # p_k ~ p_pre^g on two equal-area squares: the mass ratio goes to ratio^g
    cf = metrics.toy_closed_form(ToyDomain(), [0.1, 0.1], pre_sparse_share=0.08)
    ratio = (0.92 / 0.08) ** (0.9 * 0.9)
    assert cf["sparse_share"] == pytest.approx(1 / (1 + ratio), rel=1e-9)
    assert cf["pre_sparse_share"] == pytest.approx(0.08)
    assert cf["entropy_gain"] > 0


def test_surprise_uses_round0_model():
    run, base = _toy_run()
    domain, std = run.domain, run.standardizer
    wide = GaussianMixtureModel([1.0], np.zeros((1, 2)), np.eye(2), VPSchedule())  # N(0, I) in z
    m = metrics.round_metrics(run, wide, 1, n=512, steps=20, density_kw=FAST, lam_history=[0.1])
    # samples of a wide Gaussian are surprising under the two-square model
    assert m["surprise_pre"] > m["cross_entropy_pfode"] + 1.0
    assert m["on_support"] < 0.8


def test_round_metrics_triangles_validity():
    from smeme.data.triangles import TriangleDomain

    domain = TriangleDomain()
    feat_mean, feat_std = np.array([0.28, 0.33, 1.5]), np.array([0.05, 0.05, 0.3])
    std = Standardizer(feat_mean, feat_std)
    model = GaussianMixtureModel([1.0], np.zeros((1, 3)), np.eye(3) * 0.5, VPSchedule())
    run = StandInRun(domain, std, {0: model})
    m = metrics.round_metrics(run, model, 0, n=512, steps=20, density_kw=FAST)
    json.dumps(m, allow_nan=False)
    assert 0.5 < m["validity"] <= 1.0
    assert set(m["shares"]) == {"side_type", "angle_type"}
    assert "sparse_share" not in m and "closed_form" not in m


def test_round_metrics_on_a_real_run(tmp_path):
    from smeme import pipeline
    from smeme.deferred import measure
    run = pipeline.pretrain_run(tmp_path / "run", "toy", preset="tiny", steps=30, n=2000)
    m0 = run.metrics()[0]
    for key in ("entropy_knn", "on_support", "sparse_share"):
        assert key in m0, key
    assert "cross_entropy_pfode" not in m0  # deferred: computed on request (smeme.deferred)
    measure(run, [0])
    for key in ("cross_entropy_pfode", "surprise_pre"):
        assert key in run.all_metrics()[0], key
    m = metrics.round_metrics(run, run.load_model(0), 1, n=256, steps=10, density_kw=FAST, lam_history=[0.1])
    pre = m0["closed_form"]["pre_sparse_share"]  # the pre-trained model's own split
    ratio = ((1 - pre) / pre) ** 0.9
    assert m["sparse_share_closed_form"] == pytest.approx(1 / (1 + ratio))
    assert torch.is_tensor(next(run.load_model(0).parameters()))
