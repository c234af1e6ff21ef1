"""A diffusers `UNet2DModel` as a NoisePredictor, sized for 8x8 digits.

The network is conditioned on the schedule's (fractional) table index t * (N - 1), so the
continuous-time samplers and solvers drive it unchanged. The schedule is a diffusers
`DDPMScheduler` built in code from its settings (no download) and read through
`DiscreteSchedule`; its alphas_cumprod table is stored with the run.

The digits default: channels (32, 64, 64) over 8x8 -> 4x4 -> 2x2 (no downsampling to 1x1),
one ResNet layer per block, no self-attention, GroupNorm with 8 groups, zero-initialised
output; a cosine ("squaredcos_cap_v2") table of 1000 entries floored at ab = 1e-4 (see
make_schedule); EMA 0.995 of the weights (bench/bench_images.py measures its sample quality).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import ConfigBase
from ..models.base import NoisePredictor
from ..presets import Preset
from ..schedule import DiscreteSchedule, Schedule
from ..train import TrainConfig


@dataclass
class UNetConfig(ConfigBase):
    """Shape of a UNet noise predictor (diffusers `UNet2DModel`) and its schedule.

    Args:
        sample_size (`int`, defaults to 8): Image height and width, in pixels.
        channels (`int`, defaults to 1): Image channels.
        block_out_channels (`tuple`, defaults to (32, 64, 64)):
            Channels per level; each level after the first halves the image.
        layers_per_block (`int`, defaults to 1): ResNet layers per block.
        attention (`tuple`, defaults to (False, False, False)):
            Self-attention per level (off by default: 1.7x faster a step, no visible gain at 8x8).
        norm_num_groups (`int`, defaults to 8): GroupNorm groups; every channel count must be divisible by it.
        dropout (`float`, defaults to 0.0): Dropout rate of the ResNet blocks.
        schedule (`str`, defaults to `"cosine"`):
            `"cosine"` or `"linear"` (diffusers DDPMScheduler tables, make_schedule) or `"vp"` (the schedule passed
            in).
    """
    config_error, config_label = ValueError, "UNet model"
    sample_size: int = 8
    channels: int = 1
    block_out_channels: tuple = (32, 64, 64)
    layers_per_block: int = 1
    attention: tuple = (False, False, False)
    norm_num_groups: int = 8
    dropout: float = 0.0
    schedule: str = "cosine"

    def __post_init__(self):
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.attention = tuple(bool(a) for a in self.attention)
        for what, values, high in (("channel count", self.block_out_channels, UNET_MAX_CHANNELS),
                                   ("number of levels", (len(self.block_out_channels),), UNET_MAX_LEVELS),
                                   ("layers_per_block", (int(self.layers_per_block),), UNET_MAX_LAYERS_PER_BLOCK),
                                   ("sample_size", (int(self.sample_size),), UNET_MAX_SAMPLE_SIZE),
                                   ("channels", (int(self.channels),), UNET_MAX_CHANNELS)):
            if any(not 1 <= v <= high for v in values):
                raise ValueError(f"The UNet model's {what} must lie between 1 and {high:,}, got "
                                 f"{', '.join(f'{v:,}' for v in values)}.")
        if len(self.attention) != len(self.block_out_channels):
            raise ValueError(f"UNet 'attention' needs one flag per level ({len(self.block_out_channels)}), "
                             f"got {len(self.attention)}.")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"Every UNet channel count {self.block_out_channels} must be divisible by "
                             f"norm_num_groups={self.norm_num_groups}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown UNet schedule {self.schedule!r} (expected one of {SCHEDULES}).")
        if self.sample_size % (2 ** (len(self.block_out_channels) - 1)):
            raise ValueError(f"sample_size {self.sample_size} cannot be halved {len(self.block_out_channels) - 1} times.")


SCHEDULES = ("vp", "linear", "cosine")
# The UNets' weights (and so their activations) are channels-last: oneDNN's CPU convolutions
# on these small images take ~0.85x the time of the NCHW layout (a digits round: BENCHMARKS.md,
# `bench/bench_images.py --layout`). Saved weights are contiguous either way (run_files).
CONV_MEMORY_FORMAT = torch.channels_last
# Caps on a stored UNet's size (config.json may come from a bundle): far above the digits
# presets (channels <= 64, 3 levels, 8x8 images), low enough to build without exhausting memory.
UNET_MAX_CHANNELS, UNET_MAX_LEVELS, UNET_MAX_LAYERS_PER_BLOCK, UNET_MAX_SAMPLE_SIZE = 1024, 6, 8, 512
AB_MIN = 1e-4  # floor of a cosine table (see make_schedule)


def make_schedule(kind: str = "cosine", num_train_timesteps: int = 1000,
                  beta_start: float = 1e-4, beta_end: float = 0.02) -> DiscreteSchedule:
    """A DiscreteSchedule from a diffusers DDPMScheduler built in code (no download).

    'linear': DDPM's betas 1e-4..0.02 (ab(1) ~ 4e-5). 'cosine': diffusers'
    "squaredcos_cap_v2" with alphas_cumprod floored at AB_MIN: its last entries fall to
    ~2e-9, and the memoryless sampler's first step from there multiplies the model's
    error by sqrt(ab_j / ab_i) ~ 500.
    """
    from diffusers import DDPMScheduler

    if kind not in ("linear", "cosine"):
        raise ValueError(f"Unknown UNet schedule {kind!r} (expected one of {SCHEDULES}).")
    sched = DDPMScheduler(num_train_timesteps=int(num_train_timesteps),
                          beta_schedule="linear" if kind == "linear" else "squaredcos_cap_v2",
                          beta_start=beta_start, beta_end=beta_end)
    table = sched.alphas_cumprod.to(torch.float64)
    if kind == "cosine":
        table = table.clamp(min=AB_MIN)
    return DiscreteSchedule(table)


class UNetNoisePredictor(NoisePredictor):
    def __init__(self, config: UNetConfig, schedule: Schedule):
        super().__init__()
        from diffusers import UNet2DModel

        self.config = config
        self.schedule = schedule
        self.sample_shape = (config.channels, config.sample_size, config.sample_size)
        n = len(config.block_out_channels)
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in config.attention)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention))
        self.unet = UNet2DModel(
            sample_size=config.sample_size, in_channels=config.channels, out_channels=config.channels,
            block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
            down_block_types=down, up_block_types=up, norm_num_groups=config.norm_num_groups,
            attention_head_dim=8, dropout=config.dropout, add_attention=True,
        )
        assert n == len(down)
        # Zero-initialised output convolution: the untrained model predicts eps = 0.
        torch.nn.init.zeros_(self.unet.conv_out.weight)
        torch.nn.init.zeros_(self.unet.conv_out.bias)
        self.unet.to(memory_format=CONV_MEMORY_FORMAT)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        timestep = self.schedule.timestep(t).to(x.dtype)
        return self.unet(x, timestep).sample


def build_from_config(params: dict, schedule: Schedule | None = None) -> UNetNoisePredictor:
    """Builder registered with smeme.models.registry for kind 'unet2d'.

    The config's own `schedule` ('cosine' / 'linear') wins over the one passed in, so a
    run rebuilt from config.json gets the same table it was trained with; 'vp' uses the
    schedule passed in (the continuous VP schedule by default).
    """
    cfg = UNetConfig.from_dict(dict(params))
    if cfg.schedule != "vp":
        schedule = make_schedule(cfg.schedule)
    elif schedule is None:
        from ..schedule import VPSchedule

        schedule = VPSchedule()
    return UNetNoisePredictor(cfg, schedule)


class FolderUNet(NoisePredictor):
    """A diffusers UNet2DModel loaded from a local folder (load_unet_folder), as a NoisePredictor."""

    def __init__(self, unet, schedule: Schedule):
        super().__init__()
        self.unet, self.schedule = unet.to(memory_format=CONV_MEMORY_FORMAT), schedule
        cfg = unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else tuple(cfg.sample_size)[0]
        self.sample_shape = (int(cfg.in_channels), int(size), int(size))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.unet(x, self.schedule.timestep(t).to(x.dtype)).sample


def load_unet_folder(params: dict, schedule: Schedule | None = None) -> FolderUNet:
    """Builder for model kind 'unet2d_folder' ({'folder': path}): an epsilon-predicting
    UNet2DModel saved with save_pretrained (the folder itself or its unet/ sub-folder), read
    offline; the schedule is its scheduler/ sub-folder's alphas_cumprod unless one is passed."""
    from pathlib import Path

    from diffusers import DDPMScheduler, UNet2DModel

    folder = Path(str(params.get("folder", "")))
    unet_dir = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    if not (unet_dir / "config.json").is_file():
        raise ValueError(f"{folder} is not a diffusers UNet folder (it has no config.json).")
    try:
        unet = UNet2DModel.from_pretrained(str(unet_dir), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"The UNet in {unet_dir} cannot be loaded ({str(exc).splitlines()[0]}).") from None
    if schedule is None:
        sched_dir = folder / "scheduler"
        sched = (DDPMScheduler.from_pretrained(str(sched_dir), local_files_only=True)
                 if (sched_dir / "scheduler_config.json").is_file() else DDPMScheduler())
        if sched.config.prediction_type != "epsilon":
            raise ValueError(f"The scheduler in {sched_dir} predicts {sched.config.prediction_type!r}; "
                             "smeme's solvers need an epsilon-predicting UNet.")
        schedule = DiscreteSchedule.from_scheduler(sched)
    return FolderUNet(unet.float(), schedule)


def model_config(config: UNetConfig | None = None) -> dict:
    """The `model` part of a run's config.json for this network."""
    return {"kind": "unet2d", **(config or UNetConfig()).to_dict()}


# -- the digits preset ----------------------------------------------------------------------------
def digits_preset() -> Preset:
    """Registered as smeme.presets' 'digits' preset by smeme.images: a couple of minutes on a CPU
    for samples the digit classifier mostly reads (bench/bench_images.py measures both)."""
    return Preset(model=model_config(UNetConfig()),
                  train=TrainConfig(steps=600, batch_size=128, lr=3e-3, warmup=50, lr_final=0.05, ema=0.995,
                                    small_t_fraction=0.3, small_t_power=2.0, grad_clip=1.0))
