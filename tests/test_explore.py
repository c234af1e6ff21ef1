"""S-MEME rounds (smeme.explore): bad input, rejection, cancel, and the closed forms.

Pre-trained runs are built once per session with the pipeline's real presets (toy:
~20 s, triangles: ~10 s) and copied into each test's folder. Tests marked `slow` check
the quantitative claims of issue 3 and take minutes; the rest take seconds.
"""
from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch

from smeme.explore import ExploreConfig, ExploreError, run_rounds
from smeme.solvers import SolverResult
from smeme.store import Run

# mechanics only: the tiny preset is not accurate, so validity is not judged here
FAST = dict(iterations=3, trajectories=64, steps=20, adam_steps=2, metrics_n=512, metrics_logp=False,
            max_validity_drop=1.0)


@pytest.fixture(scope="session")
def tiny_run_src(tmp_path_factory):
    from smeme.pipeline import pretrain_run

    folder = tmp_path_factory.mktemp("explore") / "tiny_toy"
    pretrain_run(folder, "toy", preset="tiny", steps=100)
    return folder


@pytest.fixture
def tiny_run(tiny_run_src, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(tiny_run_src, dst)
    return Run.open(dst)


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.0, -0.1, 1.5, float("nan"), 1.0])
def test_lambda_outside_unit_interval_is_refused(lam):
    with pytest.raises(ExploreError, match="lambda"):
        ExploreConfig(lam=lam)


def test_lambda_one_needs_the_flag():
    assert ExploreConfig(lam=1.0, allow_lam_one=True).lam == 1.0


@pytest.mark.parametrize("kw, word", [(dict(iterations=0), "budget"), (dict(solver="sgd"), "solver"),
                                      (dict(lam_schedule="cosine"), "schedule"),
                                      (dict(lam_schedule="decreasing", lam_power=0.4), "lam_power"),
                                      (dict(t_r=0.0), "t_r"), (dict(score_clip=0.0), "score_clip"),
                                      (dict(ess_fallback=1.0), "ess_fallback"), (dict(ess_fallback=True), "ess_fallback"),
                                      (dict(ess_fallback="half"), "ess_fallback")])
def test_bad_settings_are_refused(kw, word):
    with pytest.raises(ExploreError, match=word):
        ExploreConfig(**kw)


def test_ess_fallback_is_explores_default_and_reaches_each_round():
    """0.5 by default into every round's solver; None (tempering) and other shares pass through, a
    solver option still overrides it, and a round saved before the field rebuilds with the default.
    The image rounds run no likelihood-ratio term, so the field changes nothing there: the backward
    pass can never extend below the adjoint term's own steps."""
    import importlib

    from smeme.images.digits_rounds import digits_explore_config
    from smeme.models import GaussianModel
    from smeme.schedule import VPSchedule

    assert [ExploreConfig(**kw).solver_config(k).ess_fallback for kw, k in
            [({}, 1), ({}, 3), ({"ess_fallback": None}, 1), ({"ess_fallback": 0.3}, 2),
             ({"ess_fallback": 0.3, "solver_options": {"ess_fallback": 0.2}}, 1)]] == [0.5, 0.5, None, 0.3, 0.2]
    saved = ExploreConfig().to_dict()
    del saved["ess_fallback"]  # metrics of a round explored before the field existed
    assert ExploreConfig.from_dict(saved).ess_fallback == 0.5
    am = importlib.import_module("smeme.solvers.adjoint_matching")
    digits = digits_explore_config().solver_config(1)
    assert digits.likelihood_ratio_share == 0 and digits.ess_fallback == 0.5
    plan = am.plan_steps(GaussianModel(torch.zeros(2), torch.eye(2), VPSchedule()), digits, (2,), torch.float32,
                         "cpu", False)
    assert plan.lr_steps.numel() == 0 and plan.fallback_first == plan.first_adjoint


def test_the_likelihood_ratio_term_is_off_where_its_weights_cannot_be_healthy():
    """Above likelihood_ratio_max_features (3), or where exp(-lam^2 D / 2) < ess_fallback (lam 0.9:
    D >= 2), the term is off for that round; it stays on below, with the bounds None, and a solver
    option or an unknown D keep the setting."""
    import math

    config = ExploreConfig(lam=0.3)
    assert [config.solver_config(1, dim=d).likelihood_ratio_share for d in (1, 2, 3, 4, 8, 64)] == [0.8] * 3 + [0.0] * 3
    assert config.solver_config(1).likelihood_ratio_share == 0.8
    unbounded = ExploreConfig(lam=0.3, likelihood_ratio_max_features=None)
    assert math.exp(-0.09 * 15 / 2) > 0.5 > math.exp(-0.09 * 16 / 2)
    assert [unbounded.solver_config(1, dim=d).likelihood_ratio_share for d in (8, 15, 16)] == [0.8, 0.8, 0.0]
    assert ExploreConfig(lam=0.3, ess_fallback=None, likelihood_ratio_max_features=None).solver_config(
        1, dim=64).likelihood_ratio_share == 0.8
    assert ExploreConfig(lam=0.3, likelihood_ratio_max_features=8).solver_config(1, dim=8).likelihood_ratio_share == 0.8
    forced = ExploreConfig(lam=0.3, solver_options={"likelihood_ratio_share": 0.5})
    assert forced.solver_config(1, dim=64).likelihood_ratio_share == 0.5
    assert unbounded.solver_config(1, dim=64).likelihood_ratio_share == 0.0
    assert ExploreConfig(lam=0.1, likelihood_ratio_max_features=None).solver_config(
        1, dim=64).likelihood_ratio_share == 0.8  # exp(-0.32) = 0.73 > 0.5
    decaying = ExploreConfig(lam=0.9, lam_schedule="decreasing", lam_power=1.0)  # lam_k = 0.9 / k
    assert [decaying.solver_config(k, dim=3).likelihood_ratio_share for k in (1, 2)] == [0.0, 0.8]
    for bad in (0, 2.5, True, "3"):
        with pytest.raises(ExploreError, match="likelihood_ratio_max_features"):
            ExploreConfig(likelihood_ratio_max_features=bad)


def test_a_round_without_the_likelihood_ratio_term_by_dimension_gets_the_larger_budget():
    """Where likelihood_ratio_share_at turns the term off (lam 0.3: D >= 4) the round runs
    ceil(iterations x alone_iterations) iterations of max(adam_steps, alone_adam_steps) Adam steps;
    elsewhere, and where the term is off by setting or forced on by a solver option, the budget as set."""
    config = ExploreConfig(lam=0.3, iterations=30, adam_steps=2)
    budgets = [(c.iterations, c.adam_steps) for c in (config.solver_config(1, dim=d) for d in (2, 3, 4, 64))]
    assert budgets == [(30, 2), (30, 2), (45, 6), (45, 6)]
    assert config.budget_at(1, None) == (30, 2)
    assert ExploreConfig(lam=0.3, iterations=7, alone_iterations=1.2, alone_adam_steps=3).budget_at(1, 16) == (9, 3)
    assert ExploreConfig(lam=0.3, adam_steps=8).budget_at(1, 16)[1] == 8  # never fewer steps than set
    assert ExploreConfig(lam=0.3, likelihood_ratio_share=0.0).budget_at(1, 64) == (15, 2)
    assert ExploreConfig(lam=0.3, solver_options={"likelihood_ratio_share": 0.5}).budget_at(1, 64) == (15, 2)
    assert ExploreConfig(lam=0.3, alone_iterations=1.0, alone_adam_steps=1).budget_at(1, 64) == (15, 2)
    with pytest.raises(ExploreError):
        ExploreConfig(alone_iterations=0.5)


def test_a_round_records_its_likelihood_ratio_share(tiny_run):
    """The toy (D = 2) keeps the term at lam 0.3 and turns it off at lam 0.9 (exp(-0.81) < 0.5); the round's
    record says so, and the app's solver-health line with it. The round that read reward values records
    their ODE steps (RoundReward); the one without the term read none."""
    from smeme.services.results import solver_health

    run_rounds(tiny_run, 1, ExploreConfig(**FAST, lam=0.3))
    run_rounds(tiny_run, 1, ExploreConfig(**FAST, lam=0.9))
    m = tiny_run.metrics()
    assert (m[1]["lr_share"], m[1]["lr_off_by_dimension"]) == (0.8, False)
    assert (m[2]["lr_share"], m[2]["lr_off_by_dimension"]) == (0.0, True)
    assert "lr_ess_min" not in m[2] and "term off" in solver_health(m[2])
    assert m[1]["reward_ode_steps"] in (2, 4, 8) and 0 <= m[1]["reward_steps_tv"] < 0.002
    assert "reward_ode_steps" not in m[2]


def test_bad_solver_option_is_one_sentence(tiny_run):
    with pytest.raises(ExploreError, match="Bad solver setting"):
        run_rounds(tiny_run, 1, ExploreConfig(**FAST, solver_options={"warp": 9}))


@pytest.mark.parametrize("opts", [{"outlier_mode": "median"}, {"weight_ema": 1.0}, {"outlier_factor": 0.0}])
def test_bad_adjoint_options_are_one_sentence(tiny_run, opts):
    with pytest.raises(ExploreError, match="Bad solver setting"):
        run_rounds(tiny_run, 1, ExploreConfig(**FAST, solver_options=opts))


@pytest.mark.parametrize("opts", [{"outlier_mode": "scale"}, {"outlier_mode": "off", "weight_ema": 0.5}])
def test_adjoint_outlier_modes_and_weight_average_run(tiny_run, opts):
    assert run_rounds(tiny_run, 1, ExploreConfig(**FAST, score_clip=3.0, solver_options=opts)) == [1]
    assert tiny_run.metrics()[1]["explore"]["score_clip"] == 3.0


@pytest.mark.parametrize("rounds", [0, -1])
def test_rounds_below_one_are_refused(tiny_run, rounds):
    with pytest.raises(ExploreError, match="rounds"):
        run_rounds(tiny_run, rounds, ExploreConfig(**FAST))


def test_run_without_round_zero_is_refused(tiny_run):
    tiny_run.round_path(0).rename(tiny_run.folder / "moved.safetensors")
    (tiny_run.folder / "round_1.safetensors").write_bytes(b"")  # Run.open would refuse; a live run object may not
    with pytest.raises(ExploreError, match="round 0"):
        run_rounds(tiny_run, 1, ExploreConfig(**FAST))


# -- rounds, rejection, cancel -------------------------------------------------------------
def test_rounds_are_saved_with_metrics_and_continue(tiny_run):
    seen = []
    done = run_rounds(tiny_run, 2, ExploreConfig(**FAST), on_iteration=lambda *a: seen.append(a))
    assert done == [1, 2] and tiny_run.rounds() == [0, 1, 2]
    assert seen[0][:3] == (1, 1, 3) and seen[-1][:3] == (2, 3, 3)
    m = Run.open(tiny_run.folder).metrics()
    assert m[2]["lam_history"] == [0.1, 0.1] and "on_support" in m[2] and "sparse_share_closed_form" in m[2]
    assert isinstance(m[2]["solver_converged"], bool) and m[2]["solver_control_change"] >= 0  # the solver's result
    assert run_rounds(tiny_run, 1, ExploreConfig(**FAST)) == [3]


def test_decreasing_schedule_is_robbins_monro():
    cfg = ExploreConfig(lam=0.3, lam_schedule="decreasing", lam_power=0.6)
    lams = np.array([cfg.lam_at(k) for k in range(1, 10_001)])
    np.testing.assert_allclose(lams, 0.3 / np.arange(1, 10_001) ** 0.6, rtol=1e-12)  # lam / k^power
    assert lams[0] == 0.3 and np.all(np.diff(lams) < 0)
    assert lams.sum() > 50 * (lams ** 2).sum() / 10  # sum grows without bound, squares converge (p = 0.6)


def test_decreasing_schedule_reaches_the_saved_rounds(tiny_run):
    """Each round's metrics carry its own lambda from the schedule, resumed or not."""
    cfg = ExploreConfig(**FAST, lam=0.3, lam_schedule="decreasing", lam_power=0.75)
    run_rounds(tiny_run, 1, cfg)
    run_rounds(Run.open(tiny_run.folder), 1, cfg)
    m = Run.open(tiny_run.folder).metrics()
    assert m[1]["lam"] == pytest.approx(0.3) and m[2]["lam"] == pytest.approx(0.3 / 2 ** 0.75)
    assert m[2]["lam_history"] == pytest.approx([0.3, 0.3 / 2 ** 0.75])


def test_resumed_round_two_equals_two_rounds_in_one_call(tiny_run_src, tmp_path):
    """Round 2 uses round 1 as its base and reward whether it runs in the same call or after a
    reopen: the weights are identical bit for bit."""
    folders = []
    for name, calls in (("one_call", [2]), ("resumed", [1, 1])):
        dst = tmp_path / name
        shutil.copytree(tiny_run_src, dst)
        for rounds in calls:
            run_rounds(Run.open(dst), rounds, ExploreConfig(**FAST))
        folders.append(dst)
    from safetensors.torch import load_file

    a, b = (load_file(str(f / "round_2.safetensors")) for f in folders)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = load_file(str(folders[0] / "round_1.safetensors"))
    assert any(not torch.equal(a[k], c[k]) for k in a)  # round 2 did move


def test_nan_round_is_rejected_and_previous_stays_latest(tiny_run, monkeypatch):
    import smeme.reward as reward  # where a round reads its reward

    run_rounds(tiny_run, 1, ExploreConfig(**FAST))
    real, real_data = reward.score, reward.deconvolved_score
    monkeypatch.setattr(reward, "score", lambda m, x, t: real(m, x, t) * float("nan"))
    monkeypatch.setattr(reward, "deconvolved_score",  # the reward at the data end (reward_target 'data')
                        lambda m, x, t: tuple(v * float("nan") for v in real_data(m, x, t)))
    with pytest.raises(ExploreError, match=r"Round 2 was rejected.*NaN.*round 1 stays the latest"):
        run_rounds(tiny_run, 1, ExploreConfig(**FAST))
    assert Run.open(tiny_run.folder).latest_round == 1


def test_nan_weights_are_rejected(tiny_run, monkeypatch):
    import smeme.explore as explore

    def poisoned(model_ft, *a, **k):
        with torch.no_grad():
            next(model_ft.parameters()).fill_(float("inf"))
        return SolverResult(model=model_ft, losses=[0.1])

    monkeypatch.setattr(explore, "adjoint_matching", poisoned)
    with pytest.raises(ExploreError, match="NaN/inf.*round 0 stays"):
        run_rounds(tiny_run, 1, ExploreConfig(**FAST))
    assert tiny_run.rounds() == [0]


def test_collapsed_validity_is_rejected(tiny_run, monkeypatch):
    import smeme.explore as explore

    def scatter(model_ft, *a, **k):  # a finite round that throws every sample off the support
        with torch.no_grad():
            last = [m for m in model_ft.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.bias.fill_(-25.0)
        return SolverResult(model=model_ft, losses=[0.1])

    monkeypatch.setattr(explore, "adjoint_matching", scatter)
    with pytest.raises(ExploreError, match="on-support share fell"):
        run_rounds(tiny_run, 1, ExploreConfig(**{**FAST, "max_validity_drop": 0.2}))
    assert tiny_run.rounds() == [0]


def test_cancel_mid_round_keeps_finished_rounds(tiny_run):
    stop = threading.Event()

    def on_iteration(k, i, total, loss):
        if k == 2 and i == 1:
            stop.set()

    done = run_rounds(tiny_run, 3, ExploreConfig(**FAST), on_iteration=on_iteration, cancel=stop)
    assert done == [1] and Run.open(tiny_run.folder).rounds() == [0, 1]


def test_student_teacher_round_runs(tiny_run):
    done = run_rounds(tiny_run, 1, ExploreConfig(**{**FAST, "solver": "student-teacher"},
                                                 solver_options={"samples": 512, "batch_size": 128}))
    assert done == [1]
    assert Run.open(tiny_run.folder).metrics()[1]["solver"] == "student-teacher"
