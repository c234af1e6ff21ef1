"""Data sets: toy two-square density, triangles, any numeric CSV, digits (images work).

`make_dataset(name, ...)` builds one; `domain_from_config(cfg)` rebuilds a run's Domain
from the dict its `to_config()` wrote.
"""
from __future__ import annotations

import importlib
import inspect


class DataError(ValueError):
    """Bad input data; the message is one sentence naming the problem."""


from .base import Dataset, Domain, Standardizer  # noqa: E402

NAMES = ("toy", "triangles", "csv", "digits")
DEFAULT_N = {"toy": 20_000, "triangles": 8_192}


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
    if name == "digits":
        return importlib.import_module("smeme.data.digits").make_digits
    raise DataError(f"Unknown data set '{name}'; choose one of {', '.join(NAMES)}.")


def _check_params(name: str, build, params: dict) -> None:
    """Refuse parameters the builder does not take, listing those it does (n and seed have
    their own options)."""
    accepted = [p for p in inspect.signature(build).parameters if p not in ("n", "seed")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        listed = ", ".join(accepted) if accepted else "none"
        raise DataError(f"The {name} data set has no parameter {', '.join(map(repr, unknown))}; "
                        f"it accepts: {listed}.")


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
    if name == "digits":
        digits = importlib.import_module("smeme.data.digits")
        if hasattr(digits, "domain_from_config"):
            return digits.domain_from_config(cfg)
        return digits.DigitsDomain.from_config(cfg)
    raise DataError(f"Unknown data set '{name}' in the domain config; expected one of {', '.join(NAMES)}.")


__all__ = ["DataError", "Dataset", "Domain", "Standardizer", "make_dataset", "domain_from_config"]
