"""Quantitative claims of issue 3 on real pre-trained models (toy and triangles).

Each data set is pre-trained once per module with its real preset (toy ~20-40 s,
triangles ~10 s on the 2-core CPU) and copied into each test's folder. Rounds use the
ExploreConfig defaults except where a test says otherwise, with fixed seeds, so the
numbers are reproducible; the whole file takes about 5 minutes.

A round is a noisy estimate (fresh trajectories, 30 Adam steps), so the toy claims are
checked on the median of three solver seeds: on this toy a single seed's sparse share
swings by about +-10-15% around the exact tilt, and at lam 0.1 the entropy gain (0.05
nats in round 1) swings ~3x as much in relative terms.

Closed form: p_k ~ p_pre^((1 - lam)^k); metrics.round_metrics
stores it per round as `closed_form` / `sparse_share_closed_form`.
"""
from __future__ import annotations

import math
import shutil
import statistics

import pytest

from helpers import paired_logodds_sd
from smeme.explore import ExploreConfig, run_rounds
from smeme.store import Run

pytestmark = pytest.mark.slow

# the rounds below run explore's defaults (the paper's reward) and are judged against their exact
# rounds (ExploreConfig.target_t_r)
METRICS = dict(metrics_n=16384, metrics_logp=False)
KNN_SD = 0.006  # sd of one k-NN entropy estimate at 16,384 samples (measured over seeds)
SEEDS = (5, 6, 7)  # the defaults were tuned on seeds 0-3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    from smeme.threads import configure

    configure(1)  # the numbers must not depend on the machine's default thread count


@pytest.fixture(scope="module")
def toy_src(tmp_path_factory):
    from smeme.pipeline import pretrain_run

    folder = tmp_path_factory.mktemp("toy") / "toy"
    pretrain_run(folder, "toy")
    return folder


@pytest.fixture(scope="module")
def triangles_src(tmp_path_factory):
    from smeme.pipeline import pretrain_run

    folder = tmp_path_factory.mktemp("tri") / "triangles"
    pretrain_run(folder, "triangles")
    return folder


def _copy(src, tmp_path) -> Run:
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return Run.open(dst)


# -- toy: sparse share, k-NN entropy gain and leakage against the truths ------------------
# Two truths bracket a round. The closed form p_pre^((1 - lam)^k) idealises the model
# as the data (p = 0 off the squares). The exact rounds of the pre-trained model's OWN PF-ODE
# density (smeme.tilt, `python -m smeme tilt`) are what a perfect solver reaches from this
# model: its blurred edges are tilted up too, so it gains more entropy (lam 0.3: +26-31% over
# the closed form in rounds 1-3; lam 0.1: +26-28%) and leaks off the support (lam 0.3: 4.2 / 6.2
# / 8.6% by rounds 1-3), so the "within 25% of the closed form, <= 5% off the support"
# fails a perfect solver at lam 0.3. The exact rounds are therefore the truth: each round's
# log-odds shift of the sparse square (median of 3 seeds the tuning never saw) must be within
# 10% of theirs, with twice the sampling spread of the estimate added, and the off-support share
# within 2 points of theirs (or under 5%).
@pytest.fixture(scope="module")
def toy_exact(toy_src):
    from smeme.tilt import exact_round_grid, summarise_rounds

    run = Run.open(toy_src)
    t_r = ExploreConfig(**METRICS).target_t_r  # the target the rounds run (0: the paper's)
    xs, ys, logp = exact_round_grid(run, 0, resolution=200)  # one PF-ODE grid serves both lambdas
    return {lam: summarise_rounds(run, xs, ys, logp, [lam] * 3, t_r, 0) for lam in (0.1, 0.3)}


@pytest.fixture(scope="module")
def toy_round0(toy_src):
    """Round 0's metrics on the rounds' own fixed noise (METRICS): pre-training measured it on
    4,096 samples, whose sparse share's logit sits 0.013 off the 16,384-sample one, 6% of the
    lam-0.1 round's shift, the same for every seed."""
    from smeme.metrics import round_metrics

    run = Run.open(toy_src)
    return {**round_metrics(run, run.load_model(0).eval(), 0, n=METRICS["metrics_n"], logp=METRICS["metrics_logp"]),
            "sparse_flags": _sparse_flags(run, 0)}


def _sparse_flags(run, k):
    """Which of round k's metric samples (the same fixed noise for every round) land in the sparse square."""
    from smeme.metrics import round_samples

    raw = round_samples(run, run.load_model(k).eval(), METRICS["metrics_n"])
    return run.domain.categories(raw)["region"] == "sparse"


@pytest.fixture(scope="module")
def toy_seeded(toy_src, toy_round0, tmp_path_factory):
    """lam -> the metrics of 3 rounds for each seed in SEEDS (computed once per lam), round 0's
    measured as the rounds are (toy_round0)."""
    done: dict = {}

    def get(lam):
        if lam not in done:
            done[lam] = []
            for seed in SEEDS:
                dst = tmp_path_factory.mktemp(f"toy_{lam}_{seed}") / "run"
                shutil.copytree(toy_src, dst)
                run = Run.open(dst)
                run_rounds(run, 3, ExploreConfig(lam=lam, seed=seed, **METRICS))
                m = run.metrics()
                for k in (1, 2, 3):
                    m[k]["sparse_flags"] = _sparse_flags(run, k)
                    assert m[k]["sparse_share"] == pytest.approx(m[k]["sparse_flags"].mean())  # the metrics' samples
                done[lam].append({**m, 0: toy_round0})
        return done[lam]
    return get


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _median_round(runs, k):
    """Per-seed (sparse share, k-NN gain over round 0, off-support share), medians."""
    def med(f):
        return statistics.median(f(m) for m in runs)
    return (med(lambda m: m[k]["sparse_share"]), med(lambda m: m[k]["entropy_knn"] - m[0]["entropy_knn"]),
            med(lambda m: 1 - m[k]["on_support"]))


@pytest.mark.parametrize("lam", [0.1, 0.3])
def test_toy_rounds_follow_the_exact_tilt(toy_seeded, toy_exact, lam):
    """Each round's log-odds shift of the sparse square, median of 3 unseen seeds, against the
    exact rounds of the pre-trained model's own density (smeme.tilt): within 10%, plus twice
    the sampling sd of the shift itself (round k and round 0 read on the same fixed noise, so the
    sd is that of the paired difference, from the samples; the median seed's)."""
    runs, exact = toy_seeded(lam), toy_exact[lam]
    s0_exact = exact[0]["shares"]["region"]["sparse"]
    for k in (1, 2, 3):
        sparse, _, off = _median_round(runs, k)
        s0 = runs[0][0]["sparse_share"]
        want = _logit(exact[k]["shares"]["region"]["sparse"]) - _logit(s0_exact)
        got = _logit(sparse) - _logit(s0)
        spread = statistics.median(paired_logodds_sd(m[0]["sparse_flags"], m[k]["sparse_flags"]) for m in runs)
        tol = 0.10 + 2 * spread / abs(want)
        assert abs(got / want - 1) <= tol, f"round {k}: log-odds shift {got:.3f} vs exact {want:.3f} (tol {tol:.2f})"
        off_exact = 1 - exact[k]["on_support"]
        assert off <= max(0.05, off_exact + 0.02), f"round {k}: {off:.3f} off the support (exact {off_exact:.3f})"


def test_toy_exact_rounds_leak_past_five_percent_at_lam_03(toy_exact):
    """The truth the band uses: every exact round raises the sparse share and the entropy, and
    at lam 0.3 a perfect solver leaves more than 5% off the support by round 3."""
    for rows in toy_exact.values():
        for k in (1, 2, 3):
            assert rows[k]["shares"]["region"]["sparse"] > rows[k - 1]["shares"]["region"]["sparse"]
            assert rows[k]["entropy"] > rows[k - 1]["entropy"]
    assert 1 - toy_exact[0.3][3]["on_support"] > 0.05


def test_toy_one_default_round_reaches_the_closed_form_gain(toy_seeded):
    """Round 1 of the defaults (lam 0.1), median of the seeds: at least the closed-form one-round
    gain (the exact rounds gain 26-28% more, so this is a lower bound a correct solver meets),
    less twice the spread of a difference of two k-NN estimates (sd ~0.006 nats each at 16,384
    samples: 0.017 nats, a third of the 0.046 being measured). The sparse share is judged against
    the exact rounds, not the closed form, in test_toy_rounds_follow_the_exact_tilt."""
    runs = toy_seeded(0.1)
    cf = runs[0][1]["closed_form"]
    _, gain, off = _median_round(runs, 1)
    assert gain >= cf["entropy_gain"] - 2 * math.sqrt(2) * KNN_SD, (gain, cf["entropy_gain"])
    assert off <= 0.05


def test_student_teacher_raises_the_toy_entropy(toy_src, tmp_path):
    """The blog's solver on the smoothed reward it was built for: it adds grad r to the score at every
    t <= t_near, and the paper's reward (deconvolved, steep at the squares' edges) makes it leak 11% off
    the support at lam 0.3, where the exact round leaks 5.4% (2026-12-07; README, "Known limits")."""
    run = _copy(toy_src, tmp_path)
    run_rounds(run, 1, ExploreConfig(lam=0.3, solver="student-teacher", **{**METRICS, "reward_target": "smoothed"}))
    m = run.metrics()
    assert m[1]["solver"] == "student-teacher"
    assert m[1]["entropy_knn"] > m[0]["entropy_knn"] + 0.01, (m[0]["entropy_knn"], m[1]["entropy_knn"])
    assert m[1]["on_support"] >= 0.9


# -- triangles: >= 4,096 samples per round, validity >= 90%, isosceles and obtuse rise -----
def test_triangles_rounds_keep_validity_and_raise_isosceles_and_obtuse(triangles_src, tmp_path):
    run = _copy(triangles_src, tmp_path)
    rounds = 3
    run_rounds(run, rounds, ExploreConfig(**{**run.domain.explore_defaults(), **METRICS}))  # the CLI's and app's defaults
    m = run.metrics()

    def share(k, key, label):
        return m[k]["shares"][key].get(label, {"share": 0.0})["share"]

    for k in range(rounds + 1):
        assert m[k]["n"] >= 4096 and m[k]["validity"] >= 0.90, (k, m[k]["validity"])
    assert share(rounds, "side_type", "isosceles") > share(0, "side_type", "isosceles")
    assert share(rounds, "angle_type", "obtuse") > share(0, "angle_type", "obtuse")
    assert m[rounds]["entropy_knn"] > m[0]["entropy_knn"]
