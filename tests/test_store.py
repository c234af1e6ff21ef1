"""Runs on disk: round trip, damaged/foreign/mismatched files, atomic writes, locking."""
import json
import multiprocessing as mp
import os

import numpy as np
import pytest
import torch

from smeme.data.base import Standardizer
from smeme.data.toy import ToyDomain
from smeme.models.mlp import MLPConfig, MLPNoisePredictor
from smeme.models.registry import build_model
from smeme.schedule import VPSchedule
from smeme.store import Run, RunLockedError, StoreError, check_target

MODEL_CFG = {"kind": "mlp", "dim": 2, "width": 16, "depth": 2, "time_dim": 8}


def _model(seed=0, cfg=MODEL_CFG):
    torch.manual_seed(seed)
    m = build_model(cfg, VPSchedule())
    for p in m.parameters():  # non-zero everywhere, so a round trip is a real test
        torch.nn.init.normal_(p)
    return m


def _config():
    return {"dataset": {"name": "toy", "params": {}, "domain": ToyDomain().to_config()},
            "model": dict(MODEL_CFG), "train": {"steps": 1}}


def _std():
    return Standardizer(np.array([0.5, -1.0]), np.array([2.0, 3.0]))


@pytest.fixture
def run(tmp_path):
    return Run.create(tmp_path / "run", _config(), _model(), _std())


def test_round_trip(run, tmp_path):
    model = _model()
    run.save_round(1, _model(seed=1), {"knn_entropy": np.float64(1.5), "share": np.array([0.1, 0.9]),
                                         "bad": float("nan")})
    again = Run.open(run.folder)
    assert again.rounds() == [0, 1] and again.latest_round == 1
    loaded = again.load_model(0)
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    x, t = torch.randn(4, 2), torch.rand(4)
    assert torch.equal(model(x, t), loaded(x, t))
    assert again.metrics()[1] == {"knn_entropy": 1.5, "share": [0.1, 0.9], "bad": None}
    np.testing.assert_array_equal(again.standardizer.std, [2.0, 3.0])
    assert isinstance(again.domain, ToyDomain)
    assert again.config["schema_version"] == 1 and again.config["schedule"]["kind"] == "vp"


def test_rounds_are_never_overwritten(run):
    before = run.round_path(0).read_bytes()
    with pytest.raises(StoreError, match="already saved"):
        run.save_round(0, _model(seed=3))
    assert run.round_path(0).read_bytes() == before


def test_create_refuses_existing_run_and_foreign_folder(run, tmp_path):
    with pytest.raises(StoreError, match="already holds a run"):
        Run.create(run.folder, _config(), _model(), _std())
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty"):
        check_target(other, force=True)


def test_overwrite_replaces_only_when_complete(run):
    run.save_round(1, _model(seed=1))
    new = Run.create(run.folder, _config(), _model(seed=5), _std(), overwrite=True)
    assert new.rounds() == [0]
    leftovers = [p.name for p in run.folder.parent.iterdir() if p.name != "run"]
    assert leftovers == []


def test_missing_folder(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Run.open(tmp_path / "nope")


def test_missing_config(tmp_path):
    (tmp_path / "r").mkdir()
    with pytest.raises(StoreError, match="no config.json"):
        Run.open(tmp_path / "r")


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (b"\xff\xfe\x00".decode("latin-1"), "not valid JSON"),
])
def test_corrupt_config(run, text, match):
    (run.folder / "config.json").write_text(text)
    with pytest.raises(StoreError, match=match):
        Run.open(run.folder)


def test_unknown_schema_version(run):
    cfg = json.loads((run.folder / "config.json").read_text())
    cfg["schema_version"] = 99
    (run.folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StoreError, match="schema version 99"):
        Run.open(run.folder)


def test_config_missing_section(run):
    cfg = json.loads((run.folder / "config.json").read_text())
    del cfg["model"]
    (run.folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StoreError, match="model"):
        Run.open(run.folder)


def test_truncated_safetensors(run):
    path = run.round_path(0)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(StoreError, match="round_0.safetensors.*damaged"):
        run.load_model(0)


def test_garbage_safetensors(run):
    run.round_path(0).write_bytes(os.urandom(300))
    with pytest.raises(StoreError, match="round_0.safetensors.*damaged"):
        Run.open(run.folder).load_model(0)


def test_foreign_safetensors(run):
    from safetensors.torch import save_file

    save_file({"encoder.weight": torch.zeros(3, 3)}, str(run.round_path(0)))
    with pytest.raises(StoreError, match="does not hold this run's model"):
        run.load_model(0)


def test_shape_mismatch(run):
    from smeme.store import save_weights

    bigger = MLPNoisePredictor(MLPConfig(dim=2, width=32, depth=2, time_dim=8), VPSchedule())
    save_weights(run.round_path(0), bigger)
    with pytest.raises(StoreError, match=r"shape \(32, 10\).*needs \(16, 10\)"):
        run.load_model(0)


def test_missing_round(run):
    with pytest.raises(StoreError, match="no round 4"):
        run.load_model(4)


def test_atomic_writes_leave_no_temp_files(run):
    run.save_round(1, _model(seed=1), {"a": 1.0})
    run.set_metrics(1, {"a": 2.0})
    run.save_array("samples seed=0 n=10", np.arange(10.0))
    names = {p.name for p in run.folder.rglob("*")}
    assert not [n for n in names if n.endswith(".tmp")], names
    np.testing.assert_array_equal(run.load_array("samples seed=0 n=10"), np.arange(10.0))
    assert run.load_array("never saved") is None


def test_failed_write_keeps_old_file(run, monkeypatch):
    run.set_metrics(0, {"a": 1.0})
    before = (run.folder / "metrics.json").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        run.set_metrics(0, {"a": 2.0})
    assert (run.folder / "metrics.json").read_bytes() == before
    assert not [p for p in run.folder.iterdir() if p.name.endswith(".tmp")]


def test_cache_keys_are_distinct(run):
    a, b = run.cache_path("x/../y"), run.cache_path("x_y")
    assert a != b and a.parent == run.folder / "cache"


def _hold_lock(folder, ready, release):
    run = Run.open(folder)
    with run.lock():
        ready.set()
        release.wait(20)


def test_lock_contention(run):
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(run.folder, ready, release))
    proc.start()
    try:
        assert ready.wait(20)
        with pytest.raises(RunLockedError, match=f"busy: another smeme process \\(pid {proc.pid}\\)"):
            run.save_round(1, _model(seed=1))
        assert run.rounds() == [0]
    finally:
        release.set()
        proc.join(20)
    run.save_round(1, _model(seed=1))  # free again
    with run.lock(), run.lock():  # re-entrant within a process
        pass
