"""Fields (smeme.services.fields) against closed forms: analytic Gaussian-mixture models stand in
for a run's rounds, so the score, the reward's gradient and the learned change are exact."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from smeme.data.base import Standardizer
from smeme.data.toy import ToyDomain
from smeme.models.analytic import GaussianMixtureModel
from smeme.schedule import VPSchedule
from smeme.services import fields, motion

SCHED = VPSchedule()


def mixture(shift: float) -> GaussianMixtureModel:
    return GaussianMixtureModel([0.8, 0.2], [[-0.7 + shift, 0.1], [0.9, -0.4 + shift]],
                                [[[0.2, 0.05], [0.05, 0.3]], [[0.25, 0.0], [0.0, 0.15]]], SCHED)


class AnalyticRun:
    """What the fields read from a run, with exact models as its rounds."""

    def __init__(self, folder, models: dict, metrics: dict):
        self.folder, self._models, self._metrics = folder, models, metrics
        self.domain, self.config = ToyDomain(), {"dataset": {"name": "toy"}}
        self.standardizer = Standardizer(np.array([-0.4, 0.1]), np.array([0.9, 0.45]))
        (folder / "metrics.json").write_text("{}")

    def rounds(self):
        return sorted(self._models)

    def metrics(self):
        return self._metrics

    def load_model(self, k):
        return self._models[k]


def exact_raw_score(model, std: Standardizer, raw: np.ndarray, t: float) -> np.ndarray:
    """d/dx log p_x(x, t) by central differences of the exact log-density in data units."""
    h, out = 1e-5, np.zeros_like(raw)
    for c in range(raw.shape[1]):
        e = np.zeros(raw.shape[1])
        e[c] = h
        lp = lambda x: model.log_prob(torch.as_tensor(std.forward(x)), t).numpy()  # noqa: E731
        out[:, c] = (lp(raw + e) - lp(raw - e)) / (2 * h)  # the -sum log std term cancels
    return out


@pytest.mark.parametrize("t", [0.01, 0.05, 0.5])
def test_the_score_in_data_units_is_the_gradient_of_the_log_density(t):
    model, std = mixture(0.0), Standardizer(np.array([-0.4, 0.1]), np.array([0.9, 0.45]))
    raw = np.random.default_rng(0).normal(size=(50, 2))
    assert np.allclose(fields.raw_score(model, std, raw, t), exact_raw_score(model, std, raw, t), rtol=1e-5, atol=1e-5)


def test_reward_arrows_are_minus_lambda_times_the_previous_score_at_t_r(tmp_path):
    m0, m1, m2 = mixture(0.0), mixture(0.3), mixture(0.5)
    run = AnalyticRun(tmp_path, {0: m0, 1: m1, 2: m2},
                      {1: {"lam": 0.5, "t_r": 0.05, "reward": "previous"},
                       2: {"lam": 0.3, "t_r": 0.1, "reward": "previous"}})
    a = fields.reward_arrows(run, 2, (0, 1), n=9)
    raw = np.column_stack([a["x"], a["y"]])
    want = -0.3 * exact_raw_score(m1, run.standardizer, raw, 0.1)
    assert np.allclose(np.column_stack([a["u"], a["v"]]), want, rtol=1e-5, atol=1e-5)
    assert len(raw) == 81 and np.ptp(a["x"]) > 0 and np.ptp(a["y"]) > 0


def test_the_pretrained_reward_reads_round_0_scaled_by_the_kept_mass(tmp_path):
    m0, m1, m2 = mixture(0.0), mixture(0.3), mixture(0.5)
    run = AnalyticRun(tmp_path, {0: m0, 1: m1, 2: m2},
                      {2: {"lam": 0.3, "t_r": 0.05, "reward": "pretrained", "lam_history": [0.5, 0.3]}})
    a = fields.reward_arrows(run, 2, (0, 1), n=5)
    raw = np.column_stack([a["x"], a["y"]])
    want = -0.3 * 0.5 * exact_raw_score(m0, run.standardizer, raw, 0.05)
    assert np.allclose(np.column_stack([a["u"], a["v"]]), want, rtol=1e-5, atol=1e-5)


def test_the_learned_change_is_the_score_difference_and_zero_for_a_round_against_itself(tmp_path):
    m0, m1 = mixture(0.0), mixture(0.4)
    same = AnalyticRun(tmp_path, {0: m0, 1: m0}, {1: {"lam": 0.3, "t_r": 0.05}})
    zero = fields.change_arrows(same, 1, 0.05, (0, 1), n=7)
    assert np.all(zero["u"] == 0) and np.all(zero["v"] == 0)
    other = tmp_path / "other"
    other.mkdir()
    run = AnalyticRun(other, {0: m0, 1: m1}, {1: {"lam": 0.3, "t_r": 0.05}})
    for t in (0.02, 0.3):
        d = fields.change_arrows(run, 1, t, (0, 1), n=7)
        raw = np.column_stack([d["x"], d["y"]])
        want = exact_raw_score(m1, run.standardizer, raw, t) - exact_raw_score(m0, run.standardizer, raw, t)
        assert np.allclose(np.column_stack([d["u"], d["v"]]), want, rtol=1e-5, atol=1e-5)
    # it fades with t: the two models' noised marginals converge to the same Gaussian
    size = lambda t: np.hypot(*[fields.change_arrows(run, 1, t, (0, 1), n=7)[c] for c in "uv"]).mean()  # noqa: E731
    assert size(0.9) < 0.2 * size(0.05)


def test_paths_start_from_one_noise_and_end_on_the_data(tmp_path):
    m0, m1 = mixture(0.0), mixture(0.4)
    run = AnalyticRun(tmp_path, {0: m0, 1: m1}, {1: {"lam": 0.3, "t_r": 0.05}})
    p = fields.paths(run, 1, (0, 1), n=6, steps=40)
    assert p["now"].shape == p["before"].shape == (41, 6, 2)
    assert p["t"][0] == 1.0 and p["t"][-1] == fields.PATHS_T_MIN
    assert np.allclose(p["now"][0], p["before"][0])  # the same starting noise through both rounds
    assert not np.allclose(p["now"][-1], p["before"][-1])


def test_arrow_scales_are_fixed_over_rounds_and_the_figure_draws_both_fields(tmp_path):
    models = {0: mixture(0.0), 1: mixture(0.2), 2: mixture(0.6)}
    run = AnalyticRun(tmp_path, models, {k: {"lam": 0.3, "t_r": 0.05} for k in (1, 2)})
    scales = fields.arrow_scales(run, (0, 1), n=9)
    assert scales["reward"] > 0 and scales["change"] > 0 and scales["cell"] > 0
    xs = np.linspace(-1, 1, 5)
    hm = {"xs": xs, "ys": xs, "logp": np.zeros((5, 5))}
    fig = motion.field_figure(hm, fields.reward_arrows(run, 1, (0, 1), 9), fields.change_arrows(run, 1, 0.05, (0, 1), 9),
                              scales, 0.05, 1)
    names = [t.name for t in fig.data if t.type == "scatter"]
    assert names == ["reward gradient", "learned change"]


def test_runs_without_a_plane_of_their_columns_are_refused(tmp_path):
    run = AnalyticRun(tmp_path, {0: mixture(0.0)}, {})
    with pytest.raises(fields.FieldsUnavailable, match="only its pre-trained round"):
        fields.check_run(run)

    class Mapped(ToyDomain):
        name = "mapped"

        def to_features(self, raw):
            return np.log1p(np.abs(raw))
    run.domain = Mapped()
    with pytest.raises(fields.FieldsUnavailable, match="maps its columns"):
        fields.check_run(run)


def test_paths_follow_the_exact_flow_of_a_gaussian(tmp_path):
    """For data N(m, s^2 I) the probability-flow ODE carries the noise e along
    x_t = sqrt(ab_t) m + sqrt(ab_t s^2 + 1 - ab_t) eps along one eps: every state of every path
    is known (eps from the starting noise at t = 1)."""
    from smeme.models.analytic import GaussianModel
    from smeme.sampling import FixedNoise
    m, s = np.array([0.8, -0.5]), 0.6
    gauss = GaussianModel(m, s ** 2 * np.eye(2), SCHED)
    run = AnalyticRun(tmp_path, {0: gauss, 1: gauss}, {1: {"lam": 0.3, "t_r": 0.05}})
    p = fields.paths(run, 1, (0, 1), n=5, steps=60)
    e = FixedNoise.from_seed(fields.PATHS_SEED, 5, (2,), 1, dtype=torch.float64).x_init.numpy()
    ab = SCHED.ab(torch.as_tensor(p["t"])).numpy()[:, None, None]
    sd = np.sqrt(ab * s ** 2 + 1 - ab)
    eps = (e - np.sqrt(ab[0]) * m) / sd[0]  # the path starts at the noise itself, at t = 1
    z = np.sqrt(ab) * m + sd * eps[None]
    want = run.standardizer.inverse(z)
    assert np.allclose(p["now"], want, atol=2e-4) and np.allclose(p["before"], want, atol=2e-4)
