"""Data sets: toy two-square density, triangles, any numeric CSV; a registry for more.

`make_dataset(name, ...)` builds one; `domain_from_config(cfg)` rebuilds a run's Domain
from the dict its `to_config()` wrote. Data sets defined above the core (the digits of
smeme.images) add themselves with `smeme.extensions.register_dataset`: this package
imports none of them.
"""
from __future__ import annotations

import inspect
import math

from ..extensions import DATASETS


class DataError(ValueError):
    """Bad input data; the message is one sentence naming the problem."""


from .base import Dataset, Domain, Standardizer  # noqa: E402

NAMES = ("toy", "triangles", "csv")  # built in; dataset_names() adds the registered ones
DEFAULT_N = {"toy": 20_000, "triangles": 8_192}


def dataset_names() -> tuple[str, ...]:
    return NAMES + tuple(sorted(DATASETS))


def _builder(name: str):
    if name == "toy":
        from .toy import make_toy
        return make_toy
    if name == "triangles":
        from .triangles import make_triangles
        return make_triangles
    if name == "csv":
        from .csv import load_csv
        return load_csv
    if name in DATASETS:
        return DATASETS[name][0]
    raise DataError(f"Unknown data set '{name}'; choose one of {', '.join(dataset_names())}.")


def _check_params(name: str, build, params: dict) -> None:
    """Refuse parameters the builder does not take, listing those it does (n and seed have
    their own options)."""
    signature = inspect.signature(build).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()):
        return  # a lazy wrapper (a registered data set) passes them on; the builder itself checks
    accepted = [p for p in signature if p not in ("n", "seed")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        listed = ", ".join(accepted) if accepted else "none"
        raise DataError(f"The {name} data set has no parameter {', '.join(map(repr, unknown))}; "
                        f"it accepts: {listed}.")
    for key, value in params.items():  # a number where the builder's default is one
        default = signature[key].default
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value):
                raise DataError(f"The {name} data set's parameter {key} must be a finite number, got {value!r}.")


def make_dataset(name: str, n: int | None = None, seed: int = 0, **params) -> Dataset:
    """Build data set `name`; n=None takes its default size (csv: every row)."""
    build = _builder(name)
    _check_params(name, build, params)
    if name == "csv":
        if "path" not in params:
            raise DataError("The csv data set needs a file: pass path=...")
        return build(params.pop("path"), n=n, seed=seed, **params)
    if name in DEFAULT_N:
        return build(DEFAULT_N[name] if n is None else n, seed, **params)
    return build(n=n, seed=seed, **params)


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
