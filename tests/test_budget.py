"""The budget sweep (smeme.budget, `smeme budget`: the paper's Figure 2d), CI-sized.

Mechanics only (a tiny model and solver): one JSON line per K with its fields, each K on
its own branch run, the original run untouched, refusals in one sentence, progress and
cancel. The full-size sweep's numbers are in BENCHMARKS.md.
"""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from smeme.budget import branch_folder, budget_sweep, explore_config_for
from smeme.cli import main
from smeme.explore import ExploreError
from smeme.store import Run

TINY = ["--trajectories", "32", "--solver-steps", "10", "--metrics-n", "256", "--no-logp"]
TINY_CONFIG = dict(trajectories=32, steps=10, metrics_n=256, metrics_logp=False, max_validity_drop=1.0)


@pytest.fixture(scope="module")
def toy_src(tmp_path_factory):
    from smeme.pipeline import pretrain_run

    folder = tmp_path_factory.mktemp("budget") / "toy"
    pretrain_run(folder, "toy", preset="tiny", steps=100, n=2000)
    return folder


@pytest.fixture
def toy_run(toy_src, tmp_path):
    return Path(shutil.copytree(toy_src, tmp_path / "toy"))


def snapshot(folder: Path):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_budget_prints_one_line_per_k_and_leaves_the_run_alone(toy_run, capsys):
    before = snapshot(toy_run)
    code, out, err = cli(capsys, "budget", "--run", toy_run, "--iterations", 5, "--rounds", "1,2",
                         "--lam", 0.2, "--seed", 3, *TINY)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["rounds"] for r in rows] == [1, 2]
    assert [r["iterations_per_round"] for r in rows] == [5, 2]  # integer division of the budget
    round0 = Run.open(toy_run).metrics()[0]["entropy_knn"]
    for row in rows:
        k = row["rounds"]
        assert isinstance(row["entropy_knn"], float) and 0 <= row["sparse_share"] <= 1
        assert 0 < row["sparse_share_closed_form"] < 1
        assert len(row["entropy_knn_per_round"]) == k + 1 and row["entropy_knn_per_round"][0] == round0
        assert row["entropy_knn_per_round"][-1] == row["entropy_knn"]
        assert set(row["shares"]["region"]) >= {"dense", "sparse"} and row["lam"] == 0.2 and row["seed"] == 3
        branch = Run.open(row["run"])
        assert branch.rounds() == list(range(k + 1))
        assert Path(row["run"]) == branch_folder(toy_run, 5, k, 0.2, 3)
        assert [branch.metrics()[r]["iterations"] for r in range(1, k + 1)] == [row["iterations_per_round"]] * k
    assert snapshot(toy_run) == before  # the original keeps its single round and metrics
    assert Run.open(toy_run).rounds() == [0]


def test_budget_refusals_are_one_sentence(toy_run, capsys):
    code, out, err = cli(capsys, "budget", "--run", toy_run, "--iterations", 3, "--rounds", "1,4", *TINY)
    assert code == 2 and out == "" and err.count("\n") == 1 and "cannot be split into 4 rounds" in err
    code, _, err = cli(capsys, "budget", "--run", toy_run, "--iterations", 3, "--rounds", "1,x", *TINY)
    assert code == 2 and "like 1,2,3,4" in err
    assert not (toy_run.parent / "toy-budget").exists()  # refused before anything was written
    assert cli(capsys, "budget", "--run", toy_run, "--iterations", 2, "--rounds", "1", *TINY)[0] == 0
    branch = branch_folder(toy_run, 2, 1, 0.1, 0)
    kept = snapshot(branch)
    code, _, err = cli(capsys, "budget", "--run", toy_run, "--iterations", 2, "--rounds", "1", *TINY)
    assert code == 2 and "--force" in err and snapshot(branch) == kept
    code, out, _ = cli(capsys, "budget", "--run", toy_run, "--iterations", 2, "--rounds", "1", "--force", *TINY)
    assert code == 0 and json.loads(out)["run"] == str(branch)


def test_progress_covers_the_sweep_and_cancel_stops_it(toy_run):
    config = explore_config_for(Run.open(toy_run), **TINY_CONFIG)
    seen = []
    rows = budget_sweep(toy_run, 4, [1, 2], config, progress=lambda *a: seen.append(a))
    assert len(rows) == 2
    assert seen[0] == (0, 1, 1, 1, 4) and seen[-1] == (1, 2, 2, 2, 2)
    assert {(i, k, r) for i, k, r, _, _ in seen} == {(0, 1, 1), (1, 2, 1), (1, 2, 2)}

    cancel = threading.Event()

    def stop_in_second_k(index, k, r, i, total):
        if index == 1:
            cancel.set()

    rows = budget_sweep(toy_run, 4, [1, 2], config, progress=stop_in_second_k, cancel=cancel, force=True)
    assert [r["rounds"] for r in rows] == [1]
    with pytest.raises(ExploreError, match="at least 1 solver iteration"):
        budget_sweep(toy_run, 0, [1], config)
