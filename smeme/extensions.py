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


# run kind -> (is_run(folder) -> bool, open(folder) -> run, error types its open raises): run
# folders other than smeme.store's (e.g. Stable Diffusion runs), for code below the images
RUN_KINDS: dict[str, tuple[Callable, Callable, tuple]] = {}


def register_run_kind(kind: str, is_run: Callable, open_run: Callable, errors: tuple) -> None:
    RUN_KINDS[kind] = (is_run, open_run, tuple(errors))


def run_kind_of(folder) -> str | None:
    """The registered run kind whose folder this is, else None (a smeme.store run or none)."""
    return next((kind for kind, (is_run, _, _) in RUN_KINDS.items() if is_run(folder)), None)


def register_dataset(name: str, make: Callable, domain_from_config: Callable) -> None:
    DATASETS[name] = (make, domain_from_config)


def register_model_kind(kind: str, builder: Callable) -> None:
    MODEL_KINDS[kind] = builder


def register_preset(name: str, make: Callable) -> None:
    PRESETS[name] = make
