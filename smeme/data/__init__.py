"""Data sets: toy two-square density, triangles, any numeric CSV, digits (images work).

`make_dataset(name, ...)` builds one; `domain_from_config(cfg)` rebuilds a run's Domain
from the dict its `to_config()` wrote.
"""
from __future__ import annotations

import importlib


class DataError(ValueError):
    """Bad input data; the message is one sentence naming the problem."""


from .base import Dataset, Domain, Standardizer  # noqa: E402

NAMES = ("toy", "triangles", "csv", "digits")
DEFAULT_N = {"toy": 20_000, "triangles": 8_192}


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
    if name == "digits":
        make_digits = importlib.import_module("smeme.data.digits").make_digits
        return make_digits(n=n, seed=seed, **params)
    raise DataError(f"Unknown data set '{name}'; choose one of {', '.join(NAMES)}.")


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
