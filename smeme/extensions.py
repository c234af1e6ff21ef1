"""Extension points of the core: data sets, model kinds and presets added by name from above.

The core (smeme.data, smeme.models.registry, smeme.presets) looks names up here and so
never imports the packages that define them; `import smeme.images` fills these tables
(the CLI, the app's services and the pages import it). Nothing here imports torch, so
registering costs nothing.
"""
from __future__ import annotations

from typing import Callable

# data set name -> (make(n=..., seed=..., **params) -> Dataset, domain_from_config(cfg) -> Domain)
DATASETS: dict[str, tuple[Callable, Callable]] = {}
# model kind -> builder(params without 'kind', schedule) -> NoisePredictor
MODEL_KINDS: dict[str, Callable] = {}
# data set name -> make() -> smeme.presets.Preset (built when asked for)
PRESETS: dict[str, Callable] = {}


def register_dataset(name: str, make: Callable, domain_from_config: Callable) -> None:
    DATASETS[name] = (make, domain_from_config)


def register_model_kind(kind: str, builder: Callable) -> None:
    MODEL_KINDS[kind] = builder


def register_preset(name: str, make: Callable) -> None:
    PRESETS[name] = make
