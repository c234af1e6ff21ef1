"""Pre-training: determinism, cancel, schedules, and model quality with the real presets."""
import dataclasses
import threading

import numpy as np
import pytest
import torch

from smeme.data import make_dataset
from smeme.presets import PRESETS, get_preset
from smeme.sampling import sample
from smeme.train import TrainConfig, lr_factor, pretrain, sample_times


def _tiny(steps=30, seed=0):
    p = get_preset("tiny")
    return dataclasses.replace(p.train, steps=steps, seed=seed), p.model


def test_same_seed_same_weights():
    ds = make_dataset("toy", n=500, seed=0)
    cfg, model_cfg = _tiny()
    a, sa, ha = pretrain(ds, cfg, model_cfg)
    b, _, hb = pretrain(ds, cfg, model_cfg)
    c, _, _ = pretrain(ds, dataclasses.replace(cfg, seed=1), model_cfg)
    for (k, x), y, z in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(x, y), k
    assert ha["loss"] == hb["loss"]
    assert any(not torch.equal(x, z) for x, z in zip(a.state_dict().values(), c.state_dict().values()))
    np.testing.assert_allclose(sa.mean, ds.raw.mean(0))


def test_cancel_stops_early_and_progress_reports():
    ds = make_dataset("toy", n=500, seed=0)
    cfg, model_cfg = _tiny(steps=100)
    cancel = threading.Event()
    seen = []

    def progress(step, total, loss):
        seen.append((step, total, loss))
        if step == 7:
            cancel.set()

    _, _, hist = pretrain(ds, cfg, model_cfg, progress=progress, cancel=cancel)
    assert hist["cancelled"] and hist["steps_done"] == 7 and len(seen) == 7
    assert seen[0][:2] == (1, 100) and np.isfinite(seen[-1][2])


def test_cancelled_pretrain_run_saves_nothing(tmp_path):
    from smeme.pipeline import Cancelled, pretrain_run

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        pretrain_run(tmp_path / "r", "toy", n=300, preset="tiny", cancel=cancel)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_lr_schedule_and_time_sampling():
    cfg = TrainConfig(steps=1000, warmup=100, lr_final=0.05, small_t_fraction=0.5, small_t_power=3.0)
    assert lr_factor(0, cfg) == pytest.approx(0.01) and lr_factor(99, cfg) == pytest.approx(1.0)
    assert lr_factor(999, cfg) == pytest.approx(0.05, abs=1e-3)
    t = sample_times(20000, cfg, torch.Generator().manual_seed(0))
    assert t.min() >= cfg.t_min and t.max() <= 1
    # half uniform, half u^3: P(t < 0.001) = 0.5 * 0.001 + 0.5 * 0.1
    assert float((t < 1e-3).float().mean()) == pytest.approx(0.0505, abs=0.01)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="learning rate"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="Unknown training setting"):
        TrainConfig.from_dict({"stepz": 3})


# -- quality with the real presets (CI-sized: each one trains a real model) ------------------
def _train(name, **data_kw):
    ds = make_dataset(name, **data_kw)
    p = PRESETS[name]
    model, st, hist = pretrain(ds, p.train, p.model)
    return ds, model, st, hist


@pytest.mark.slow
def test_triangles_valid():
    from smeme.data.triangles import is_valid, sort_sides

    ds, model, st, _ = _train("triangles")
    z = sample(model, 4096, steps=100, seed=11).double().numpy()
    raw = ds.domain.from_features(st.inverse(z))
    valid = is_valid(sort_sides(raw)).mean()
    assert valid >= 0.98, valid


@pytest.mark.slow
def test_toy_mass_and_support():
    ds, model, st, _ = _train("toy")
    z = sample(model, 8192, steps=100, seed=11).double().numpy()
    region = ds.domain.categories(st.inverse(z))["region"]
    dense, on = (region == "dense").mean(), (region != "off").mean()
    assert abs(dense - 0.90) <= 0.03, dense
    assert on >= 0.97, on
