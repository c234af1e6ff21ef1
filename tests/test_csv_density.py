"""The CSV defaults give log-densities within 0.08 nats of the truth (issue 14).

A 3-component 2-D Gaussian mixture (weights 0.5 / 0.3 / 0.2, different covariances), 20,000
rows written to a CSV, pre-trained through the pipeline with the CSV defaults. The data seed
differs from the one the defaults were tuned on (bench/bench_csv_density.py uses 0).
"""
import numpy as np
import pandas as pd
import pytest
import torch

from smeme.models import GaussianMixtureModel
from smeme.pipeline import logp_run, pretrain_run
from smeme.presets import get_preset, sized_preset
from smeme.schedule import VPSchedule

MIXTURE = ([0.5, 0.3, 0.2], [[0.0, 0.0], [4.0, 1.0], [1.0, 5.0]],
           [[[1.0, 0.3], [0.3, 0.5]], [[0.6, 0.0], [0.0, 1.2]], [[0.8, -0.2], [-0.2, 0.4]]])


@pytest.mark.slow
def test_csv_defaults_log_density_within_008_nats(tmp_path):
    mix = GaussianMixtureModel(*MIXTURE, VPSchedule())
    g = torch.Generator().manual_seed(2026)
    pd.DataFrame(mix.sample_data(20_000, g).numpy(), columns=["p", "q"]).to_csv(tmp_path / "mix.csv", index=False)
    held = mix.sample_data(1_000, g)
    run = pretrain_run(tmp_path / "run", "csv", {"path": tmp_path / "mix.csv"})
    assert run.config["train"]["steps"] == sized_preset("csv", 20_000).train.steps
    est = logp_run(run, 0, held.numpy())
    err = np.abs(est - mix.log_prob(held, 0.0).numpy())
    assert err.mean() <= 0.08, err.mean()


def test_only_csv_steps_scale_with_rows():
    small, large, huge = (sized_preset("csv", n).train.steps for n in (200, 20_000, 1_000_000))
    assert small < large <= huge
    assert sized_preset("csv", 1_000_000).model == sized_preset("csv", 200).model
    for name in ("tiny", "toy", "triangles"):
        assert sized_preset(name, 123_456) == get_preset(name)
