"""The shared base of the settings dataclasses (ExploreConfig, TrainConfig, the solvers',
the models', the image work's): to a JSON-ready dict and back, unknown keys refused.

Each config keeps its own checks (in __post_init__) and names its own error class, so a
bad key reads "Unknown explore setting(s) ['x']; allowed: [...]." in the caller's terms.
"""
from __future__ import annotations

from dataclasses import asdict, fields


class ConfigBase:
    """Mixin for a dataclass. Subclasses set, as plain class attributes (not fields):
    `config_error` (the exception for unknown keys), `config_label` (what the settings
    are called in that message), `internal_fields` (run-time fields kept out of both
    dicts) and `ignored_keys` (keys from_dict accepts and drops)."""

    config_error: type[Exception] = ValueError
    config_label = ""
    internal_fields: tuple[str, ...] = ()
    ignored_keys: tuple[str, ...] = ()

    @classmethod
    def setting_names(cls) -> set[str]:
        return {f.name for f in fields(cls)} - set(cls.internal_fields)

    @classmethod
    def check_keys(cls, d) -> None:
        """Raise `config_error` naming every key of `d` that is not a setting."""
        names = cls.setting_names()
        unknown = sorted(set(d) - names - set(cls.ignored_keys))
        if unknown:
            raise cls.config_error(f"Unknown {cls.config_label} setting(s) {unknown}; allowed: {sorted(names)}.")

    @classmethod
    def from_dict(cls, d: dict):
        cls.check_keys(d)
        names = cls.setting_names()
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        """The settings as a dict; tuples become lists (as JSON stores them)."""
        d = asdict(self)
        for name in self.internal_fields:
            d.pop(name)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
