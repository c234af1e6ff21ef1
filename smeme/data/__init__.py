"""Data sets: toy two-square density, triangles, any numeric CSV; a registry for more.

`make_dataset(name, ...)` builds one; `domain_from_config(cfg)` rebuilds a run's Domain
from the dict its `to_config()` wrote. Data sets defined above the core (the digits of
smeme.images) add themselves with `smeme.extensions.register_dataset`: this package
imports none of them.
"""
from __future__ import annotations

from ..extensions import DATASETS


class DataError(ValueError):
    """Bad input data; the message is one sentence naming the problem."""


from .base import Dataset, Domain, Standardizer  # noqa: E402

NAMES = ("toy", "triangles", "csv")  # built in; dataset_names() adds the registered ones
DEFAULT_N = {"toy": 20_000, "triangles": 8_192}


def dataset_names() -> tuple[str, ...]:
    return NAMES + tuple(sorted(DATASETS))


def make_dataset(name: str, n: int | None = None, seed: int = 0, **params) -> Dataset:
    """Build data set `name`; n=None takes its default size (csv: every row)."""
    if name == "toy":
        from .toy import make_toy
        return make_toy(DEFAULT_N["toy"] if n is None else n, seed, **params)
    if name == "triangles":
        from .triangles import make_triangles
        return make_triangles(DEFAULT_N["triangles"] if n is None else n, seed, **params)
    if name == "csv":
        from .csv import load_csv
        if "path" not in params:
            raise DataError("The csv data set needs a file: pass path=...")
        return load_csv(params.pop("path"), n=n, seed=seed, **params)
    if name in DATASETS:
        return DATASETS[name][0](n=n, seed=seed, **params)
    raise DataError(f"Unknown data set '{name}'; choose one of {', '.join(dataset_names())}.")


def domain_from_config(cfg: dict) -> Domain:
    """Rebuild the Domain that `domain.to_config()` described (dispatch on cfg['name'])."""
    name = cfg.get("name") if isinstance(cfg, dict) else None
    if name == "toy":
        from .toy import ToyDomain
        return ToyDomain.from_config(cfg)
    if name == "triangles":
        from .triangles import TriangleDomain
        return TriangleDomain.from_config(cfg)
    if name == "csv":
        from .csv import CsvDomain
        return CsvDomain.from_config(cfg)
    if name in DATASETS:
        return DATASETS[name][1](cfg)
    raise DataError(f"Unknown data set '{name}' in the domain config; expected one of {', '.join(dataset_names())}.")


__all__ = ["DataError", "Dataset", "Domain", "Standardizer", "make_dataset", "domain_from_config",
           "dataset_names"]
