"""Default model and training settings per data set, tuned on the 2-core CPU target.

Each preset: `model` (the registry's model config minus 'dim', which the data fixes) and
`train` (a TrainConfig). 'tiny' is a seconds-long preset for tests; it is not accurate.
Data sets defined above the core register theirs (smeme.extensions.register_preset).
Their measured quality and cost: BENCHMARKS.md (bench/bench_pretrain.py).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .extensions import PRESETS as REGISTERED
from .train import TrainConfig


@dataclass(frozen=True)
class Preset:
    """A data set's default model and training.

    Args:
        model (`dict`): The model registry's config (its 'kind' and fields) minus 'dim', which the data fixes.
        train (`TrainConfig`, defaults to `TrainConfig()`): The pre-training settings.
    """
    model: dict
    train: TrainConfig = field(default_factory=TrainConfig)


PRESETS: dict[str, Preset] = {
    # 3-D features (a/l, b/l, l): a small net reaches >= 98% valid in well under a second of steps.
    "triangles": Preset(
        model={"kind": "mlp", "width": 64, "depth": 3, "time_dim": 32},
        train=TrainConfig(steps=800, batch_size=256, lr=1e-2, warmup=50, small_t_fraction=0.3,
                          small_t_power=2.0),
    ),
    # Two uniform squares: sharp edges need many small-t samples (t = u^3 for most of a batch),
    # depth 4 and large batches to keep samples on the squares.
    "toy": Preset(
        model={"kind": "mlp", "width": 96, "depth": 4, "time_dim": 32},
        train=TrainConfig(steps=2500, batch_size=1024, lr=1e-2, warmup=100, small_t_fraction=0.7,
                          small_t_power=3.0),
    ),
    # Any numeric CSV (2 to 64 columns); steps scale with the rows (sized_preset), 4,000 at
    # 20,000 rows. prior_skip with gaussian_skip makes the model a Gaussian's exact eps at every t
    # plus the net: pre-training fits the data's covariance into the skip and rounds move it,
    # narrow directions included, where the net alone (or linear_skip's series in ab) under-fits
    # the score change at small t (README "Known limits"). The log-density's accuracy:
    # bench/bench_csv_density.py.
    "csv": Preset(
        model={"kind": "mlp", "width": 128, "depth": 3, "time_dim": 32, "prior_skip": 1.0, "gaussian_skip": True},
        train=TrainConfig(steps=4000, batch_size=1024, lr=5e-3, warmup=50, ema=0.999,
                          small_t_fraction=0.5, small_t_power=2.0),
    ),
    # For tests and the app's tests: seconds, not quality.
    "tiny": Preset(
        model={"kind": "mlp", "width": 32, "depth": 2, "time_dim": 16},
        train=TrainConfig(steps=150, batch_size=128, lr=1e-2, warmup=10),
    ),
}


def get_preset(name: str) -> Preset:
    """The preset for a data set (or 'tiny'), built in or registered."""
    if name in PRESETS:
        return PRESETS[name]
    if name in REGISTERED:
        return REGISTERED[name]()
    raise ValueError(f"Unknown preset '{name}'; choose one of {', '.join(sorted([*PRESETS, *REGISTERED]))}.")


CSV_ROWS_PER_STEP, CSV_MIN_STEPS, CSV_MAX_STEPS = 5, 1000, 5000


def sized_preset(name: str, rows: int) -> Preset:
    """The preset for data set `name`, sized to a data set of `rows` rows.

    Only 'csv' scales (every other preset, 'tiny' included, comes back as is): one step per
    CSV_ROWS_PER_STEP rows, kept between CSV_MIN_STEPS and CSV_MAX_STEPS: 20,000 rows get the
    4,000 steps the 0.08-nat log-density target needs, a smaller file has less to learn, and
    the cap bounds the cost (about a minute and a half at one CPU thread).
    """
    chosen = get_preset(name)
    if name != "csv":
        return chosen
    steps = int(min(max(round(rows / CSV_ROWS_PER_STEP), CSV_MIN_STEPS), CSV_MAX_STEPS))
    return dataclasses.replace(chosen, train=dataclasses.replace(chosen.train, steps=steps))


def train_config(name: str, **overrides) -> TrainConfig:
    """The preset's TrainConfig with `overrides` (None values are ignored)."""
    base = get_preset(name).train
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
