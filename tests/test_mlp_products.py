"""The MLP's hand-written products (shared-time first layer, reverse-mode J_eps^T v) against autograd.

The solvers use the hand-written path for plain MLPs; autograd on the textbook forward
(concatenated [x, time features] through the layers) is the reference."""
import pytest
import torch

from smeme.models.base import NoisePredictor
from smeme.models.mlp import MLPConfig, MLPNoisePredictor, distinct_times
from smeme.sampling import time_grid
from smeme.schedule import VPSchedule
from smeme.models.linearize import linearize
from smeme.solvers.lean_adjoint import lean_adjoint, step_coefficients

SKIPS = [dict(), dict(prior_skip=1.0, linear_skip=3), dict(prior_skip=1.0, gaussian_skip=True)]


def random_mlp(seed: int, **skips) -> MLPNoisePredictor:
    torch.manual_seed(seed)
    model = MLPNoisePredictor(MLPConfig(dim=5, width=32, depth=3, **skips), VPSchedule())
    for p in model.parameters():  # (the output layer and skips start at 0: give every weight a value)
        torch.nn.init.normal_(p, std=0.3)
    return model


def reference_eps(model: MLPNoisePredictor, x, t):
    """The textbook forward: every row's time features concatenated to its x, then the layers."""
    out = model.net(torch.cat([x, model.time_embedding(t, x.dtype)], dim=1))
    skip = model.skip(x, t)
    return out if skip is None else out + skip


def times(kind: str, n: int):
    if kind == "shared":
        return torch.tensor(0.3).expand(n)
    if kind == "blocks":  # a loss's rows: K steps of n / K rows each
        return torch.tensor([0.05, 0.4, 0.9, 0.6]).repeat_interleave(n // 4)
    return torch.rand(n)  # training's random times


@pytest.mark.parametrize("skips", SKIPS)
@pytest.mark.parametrize("kind", ["shared", "blocks", "random"])
def test_forward_and_vjp_equal_autograd_on_the_textbook_forward(skips, kind):
    model = random_mlp(0, **skips)
    x, v, t = torch.randn(64, 5), torch.randn(64, 5), times(kind, 64)
    xr = x.clone().requires_grad_(True)
    ref = reference_eps(model, xr, t)
    (ref_vjp,) = torch.autograd.grad(ref, xr, grad_outputs=v)
    eps, product = linearize(model, x, t)
    scale = ref.abs().max()
    assert (model(x, t) - ref).abs().max() <= 1e-5 * scale
    assert (eps - ref).abs().max() <= 1e-5 * scale
    assert (product(v) - ref_vjp).abs().max() <= 1e-5 * ref_vjp.abs().max()


def test_parameter_gradients_through_the_shared_time_layer_equal_the_textbook_forwards():
    model = random_mlp(1, prior_skip=1.0, linear_skip=2)
    x, t = torch.randn(64, 5), times("blocks", 64)
    loss = model(x, t).pow(2).sum()
    fast = torch.autograd.grad(loss, list(model.parameters()))
    slow = torch.autograd.grad(reference_eps(model, x, t).pow(2).sum(), list(model.parameters()))
    for a, b in zip(fast, slow):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max().clamp(min=1e-6)


def test_distinct_times_collapses_runs_and_leaves_random_times_alone():
    t = torch.tensor([0.2, 0.7, 0.1]).repeat_interleave(torch.tensor([4, 8, 4]))
    found, index = distinct_times(t)
    assert torch.equal(found[index], t) and found.numel() == 3
    assert distinct_times(torch.tensor(0.5).expand(9))[1] is None
    rand = torch.rand(16)
    assert torch.equal(distinct_times(rand)[0], rand)


class Wrapped(NoisePredictor):
    """The same MLP behind another class: the solvers differentiate it by autograd."""

    def __init__(self, inner: MLPNoisePredictor):
        super().__init__()
        self.inner, self.schedule, self.sample_shape = inner, inner.schedule, inner.sample_shape

    def forward(self, x, t):
        return self.inner(x, t)


@pytest.mark.parametrize("skips", SKIPS)
def test_the_lean_adjoint_by_hand_equals_the_autograd_one(skips):
    model = random_mlp(2, **skips)
    grid = time_grid(12)
    c_x, c_eps, _, _ = step_coefficients(model.schedule, grid, "score")
    states, a_last = torch.randn(13, 48, 5), torch.randn(48, 5)
    fast_adj, fast_eps = lean_adjoint(model, states, grid, a_last, c_x, c_eps, first=3, chunk=20)
    ref_adj, ref_eps = lean_adjoint(Wrapped(model), states, grid, a_last, c_x, c_eps, first=3, chunk=20)
    assert (fast_eps - ref_eps).abs().max() <= 1e-5 * ref_eps.abs().max()
    assert (fast_adj - ref_adj).abs().max() <= 1e-4 * ref_adj.abs().max()


def test_gaussian_skip_is_its_gaussians_exact_eps_at_every_time():
    """With prior_skip 1 and the net silent (its output layer starts at 0), the Gaussian skip is the exact eps
    of N(0, S), S = Q diag(e) Q^T, at every t: narrow directions (e = 0.02) and t near 0 included."""
    from smeme.models import GaussianModel
    from smeme.models.mlp import SKIP_SCALE

    torch.manual_seed(3)
    model = MLPNoisePredictor(MLPConfig(dim=4, width=16, depth=2, prior_skip=1.0, gaussian_skip=True),
                              VPSchedule()).double()
    with torch.no_grad():
        model.gauss_rotation.normal_(std=0.1)
        model.gauss_log_var.copy_(torch.tensor([0.02, 0.5, 1.0, 3.0]).log() / SKIP_SCALE)
    rotation, variances = model.gaussian_skip_basis()
    assert torch.allclose(rotation @ rotation.T, torch.eye(4, dtype=torch.float64), atol=1e-12)
    exact = GaussianModel(torch.zeros(4), rotation @ torch.diag(variances) @ rotation.T, VPSchedule())
    x = torch.randn(32, 4, dtype=torch.float64)
    t = torch.tensor([1e-4, 0.003, 0.05, 0.3, 0.9, 1.0], dtype=torch.float64).repeat_interleave(32 // 6 + 1)[:32]
    with torch.no_grad():
        assert torch.allclose(model(x, t), exact(x, t), atol=1e-10, rtol=1e-10)
    assert MLPConfig(dim=4, gaussian_skip=True).parameter_count() == MLPConfig(dim=4).parameter_count() + 4 * 4 + 4


def test_pretraining_starts_the_gaussian_skip_at_the_datas_covariance(tmp_path):
    """pretrain() starts a Gaussian skip at the standardised data's covariance (init_gaussian_skip), so the
    untrained model is that Gaussian's exact eps: correlated columns need no rotation found from noise."""
    import numpy as np
    from smeme.data import make_dataset
    from smeme.models import GaussianModel
    from smeme.train import TrainConfig, pretrain

    rng = np.random.default_rng(4)
    a = rng.normal(size=(3, 3))
    rows = rng.multivariate_normal([1.0, -2.0, 0.5], a @ a.T + 0.05 * np.eye(3), size=4000)
    path = tmp_path / "data.csv"
    np.savetxt(path, rows, delimiter=",", header="a,b,c", comments="")
    model, standardizer, _ = pretrain(make_dataset("csv", path=str(path)), TrainConfig(steps=0),
                                      {"kind": "mlp", "width": 16, "depth": 2, "prior_skip": 1.0, "gaussian_skip": True})
    cov = torch.cov(torch.as_tensor(standardizer.forward(rows)).T)
    exact = GaussianModel(torch.zeros(3), cov, VPSchedule())
    x, t = torch.randn(16, 3), torch.linspace(1e-3, 1.0, 16)
    with torch.no_grad():
        assert torch.allclose(model(x, t), exact(x.double(), t.double()).float(), atol=1e-4, rtol=1e-4)
