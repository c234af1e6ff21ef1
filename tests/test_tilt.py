"""smeme.tilt against closed forms: Gaussian tilts in the data's
units through a standardiser, and the compact two-square toy's p_pre^((1 - lam)^k)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from smeme.data.toy import ToyDomain
from smeme.schedule import VPSchedule
from smeme.tilt import exact_rounds

SCH = VPSchedule()


def ab(t):
    return float(SCH.ab(torch.tensor(t, dtype=torch.float64)))


def moments(prob, xs, ys):
    """Mean and covariance of grid cell masses."""
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    w = prob.ravel()
    mu = w @ pts
    d = pts - mu
    return mu, (d * w[:, None]).T @ d


def gaussian_logp(xs, ys, mu, cov):
    gx, gy = np.meshgrid(xs, ys)
    d = np.stack([gx - mu[0], gy - mu[1]], axis=-1)
    prec = np.linalg.inv(cov)
    return -0.5 * np.einsum("...i,ij,...j->...", d, prec, d)


def tilted_gaussian(mu, cov, lam, t_r, mean, std):
    """Closed form of p * p_tr^-lam for N(mu, cov) in data units, standardiser (mean, std)."""
    s = np.diag(std)
    s_inv = np.linalg.inv(s)
    mu_z, cov_z = s_inv @ (mu - mean), s_inv @ cov @ s_inv
    a = ab(t_r)
    prec_r = np.linalg.inv(a * cov_z + (1 - a) * np.eye(2))
    prec = np.linalg.inv(cov_z) - lam * prec_r
    cov_t = np.linalg.inv(prec)
    mu_t = cov_t @ (np.linalg.inv(cov_z) @ mu_z - lam * prec_r @ (np.sqrt(a) * mu_z))
    return mean + s @ mu_t, s @ cov_t @ s


@pytest.mark.parametrize("mean, std", [((0.0, 0.0), (1.0, 1.0)), ((0.3, -0.2), (0.7, 0.4))])
def test_two_rounds_of_a_gaussian_match_the_closed_form(mean, std):
    mean, std = np.array(mean), np.array(std)
    mu, cov = np.array([0.5, -0.1]), np.array([[0.09, 0.02], [0.02, 0.04]])
    xs, ys = np.linspace(-1.8, 2.8, 461), np.linspace(-1.9, 1.7, 361)
    lam, t_r = 0.3, 0.05
    rounds = exact_rounds(gaussian_logp(xs, ys, mu, cov), xs, ys, [lam, lam], t_r, ab, mean, std)
    m, c = mu, cov
    for k in (1, 2):
        m, c = tilted_gaussian(m, c, lam, t_r, mean, std)
        got_m, got_c = moments(rounds[k], xs, ys)
        np.testing.assert_allclose(got_m, m, atol=2e-3)
        np.testing.assert_allclose(got_c, c, rtol=0.02, atol=5e-4)
    assert np.linalg.det(c) > 1.5 * np.linalg.det(cov)  # two rounds spread it


def test_the_papers_target_is_the_unsmoothed_power():
    """t_r = 0: each round is p_{k-1}^(1 - lam), for a Gaussian N(mu, cov / (1 - lam)^k) per round."""
    mu, cov = np.array([0.5, -0.1]), np.array([[0.09, 0.02], [0.02, 0.04]])
    xs, ys = np.linspace(-1.8, 2.8, 461), np.linspace(-1.9, 1.7, 361)
    lam = 0.3
    rounds = exact_rounds(gaussian_logp(xs, ys, mu, cov), xs, ys, [lam, lam], 0.0, ab, (0.3, -0.2), (0.7, 0.4))
    for k in (1, 2):
        got_m, got_c = moments(rounds[k], xs, ys)
        np.testing.assert_allclose(got_m, mu, atol=2e-3)
        np.testing.assert_allclose(got_c, cov / (1 - lam) ** k, rtol=0.02, atol=5e-4)
    smoothed = exact_rounds(gaussian_logp(xs, ys, mu, cov), xs, ys, [lam], 0.05, ab, (0.3, -0.2), (0.7, 0.4))
    _, c_smoothed = moments(smoothed[1], xs, ys)
    np.testing.assert_allclose(c_smoothed, tilted_gaussian(mu, cov, lam, 0.05, np.array([0.3, -0.2]),
                                                           np.array([0.7, 0.4]))[1], rtol=0.02, atol=5e-4)
    assert np.linalg.det(c_smoothed) < 0.95 * np.linalg.det(cov / (1 - lam))  # a different, smaller target


def test_compact_toy_follows_p_pre_to_the_power():
    dom = ToyDomain()
    xs, ys = np.linspace(-1.6, 1.6, 641), np.linspace(-0.8, 0.8, 321)
    gx, gy = np.meshgrid(xs, ys)
    raw = np.column_stack([gx.ravel(), gy.ravel()])
    logp = dom.log_density(raw).reshape(gx.shape)
    sparse = (dom.categories(raw)["region"] == "sparse").reshape(gx.shape)
    for lam in (0.1, 0.3):
        rounds = exact_rounds(logp, xs, ys, [lam] * 4, 1e-3, ab)
        for k in range(1, 5):
            assert rounds[k][sparse].sum() == pytest.approx(dom.sparse_share_after(lam, k), rel=0.02)
            assert rounds[k][logp == -np.inf].sum() == 0.0  # no mass created off a compact support


def test_bad_input_is_refused():
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    with pytest.raises(ValueError, match="shape"):
        exact_rounds(np.zeros((5, 4)), xs, ys, [0.1], 0.05, ab)
    with pytest.raises(ValueError, match="t_r"):
        exact_rounds(np.zeros((4, 5)), xs, ys, [0.1], -0.01, ab)
    with pytest.raises(ValueError, match="t_r"):
        exact_rounds(np.zeros((4, 5)), xs, ys, [0.1], 1.0, ab)
    with pytest.raises(ValueError, match="lambda"):
        exact_rounds(np.zeros((4, 5)), xs, ys, [1.5], 0.05, ab)
    with pytest.raises(ValueError, match="finite"):
        exact_rounds(np.full((4, 5), -np.inf), xs, ys, [0.1], 0.05, ab)


def test_t_r_per_round_equals_a_shared_t_r_and_must_match_the_rounds():
    xs, ys = np.linspace(-2, 2, 81), np.linspace(-2, 2, 81)
    logp = gaussian_logp(xs, ys, np.zeros(2), np.diag([0.3, 0.1]))
    same = exact_rounds(logp, xs, ys, [0.2, 0.3], [0.05, 0.05], ab)
    shared = exact_rounds(logp, xs, ys, [0.2, 0.3], 0.05, ab)
    assert all(np.allclose(a, b) for a, b in zip(same, shared))
    other = exact_rounds(logp, xs, ys, [0.2, 0.3], [0.05, 0.2], ab)
    assert not np.allclose(other[2], shared[2])
    with pytest.raises(ValueError, match="2 rounds"):
        exact_rounds(logp, xs, ys, [0.2, 0.3], [0.05], ab)


def test_summary_entropy_matches_the_compact_toy_closed_form():
    from types import SimpleNamespace

    from smeme.data.base import Standardizer
    from smeme.tilt import summarise_rounds

    dom = ToyDomain()
    run = SimpleNamespace(domain=dom, schedule=SCH, standardizer=Standardizer(mean=np.zeros(2), std=np.ones(2)))
    xs, ys = np.linspace(-1.6, 1.6, 641), np.linspace(-0.8, 0.8, 321)
    gx, gy = np.meshgrid(xs, ys)
    logp = dom.log_density(np.column_stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
    rows = summarise_rounds(run, xs, ys, logp, [0.3] * 3, 1e-3)
    for k, row in enumerate(rows):
        # H_k of p_pre^((1 - lam)^k) on the two unit squares; grid cells on the edges blur it a little
        assert row["entropy"] == pytest.approx(dom.entropy_after(0.3, k), abs=0.01), (k, row["entropy"])
    assert rows[3]["entropy"] > rows[0]["entropy"] + 0.25
