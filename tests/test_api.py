"""The public API for a researcher's own model (smeme.explore_rounds): the README's example
run as written, its rounds checked against the closed-form Gaussian tilt; a diffusers UNet
folder; and bad models refused in one sentence."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

import smeme
from smeme.schedule import VPSchedule

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    """The python block under README's '### Your own model'."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Your own model"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_reaches_the_exact_gaussian_rounds(capsys):
    scope: dict = {"__name__": "readme_example"}
    exec(compile(readme_example(), str(README), "exec"), scope)  # noqa: S102 - our own README
    rounds, config = scope["rounds"], scope["config"]
    assert [r.round for r in rounds] == [1, 2]
    # exact: 1/s_k^2 = 1/s_{k-1}^2 - lam / (ab(t_r) s_{k-1}^2 + 1 - ab(t_r)), from s_0 = 1
    ab_r = float(VPSchedule().ab(torch.tensor(config.t_r)))
    s2 = 1.0
    for r in rounds:
        s2 = 1 / (1 / s2 - config.lam / (ab_r * s2 + 1 - ab_r))
        assert isinstance(r.model, scope["Gaussian"])  # the caller's own module, tuned
        assert r.model.log_s.exp().item() == pytest.approx(r.metrics["s"])
        assert r.metrics["s"] == pytest.approx(math.sqrt(s2), rel=0.02)
        assert r.metrics["lam"] == config.lam and r.metrics["iterations"] == config.iterations
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == ["round 1", "round 2"]


def test_bad_models_are_refused_in_one_sentence():
    with pytest.raises(smeme.ExploreError, match="torch.nn.Module"):
        smeme.explore_rounds(object(), rounds=1)
    with pytest.raises(smeme.ExploreError, match="schedule"):
        smeme.explore_rounds(torch.nn.Linear(2, 2), rounds=1, sample_shape=(2,))
    with pytest.raises(smeme.ExploreError, match="eps"):
        smeme.explore_rounds(torch.nn.Linear(2, 2), VPSchedule(), rounds=1, sample_shape=(2,))
    with pytest.raises(smeme.ExploreError, match="at least 1"):
        smeme.explore_rounds(torch.nn.Linear(2, 2), VPSchedule(), rounds=0, sample_shape=(2,))


def test_a_local_diffusers_unet_folder_runs_a_round(tmp_path):
    pytest.importorskip("diffusers")
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=4, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 8), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    unet.save_pretrained(str(tmp_path / "unet"))
    DDPMScheduler(num_train_timesteps=100).save_pretrained(str(tmp_path / "scheduler"))
    model = smeme.noise_predictor(tmp_path)
    assert model.sample_shape == (1, 4, 4) and model.schedule.n == 100
    config = smeme.ExploreConfig(lam=0.1, iterations=2, trajectories=4, steps=4, likelihood_ratio_share=0.0,
                                 weight_ema=None)
    (only,) = smeme.explore_rounds(tmp_path, config=config, rounds=1)
    assert only.round == 1 and only.metrics["iterations"] == 2
    moved = [not torch.equal(a, b) for a, b in zip(only.model.state_dict().values(), model.state_dict().values())]
    assert any(moved)  # the round tuned the folder's UNet
    with pytest.raises(ValueError, match="not a diffusers UNet folder"):
        smeme.noise_predictor(tmp_path / "scheduler")
