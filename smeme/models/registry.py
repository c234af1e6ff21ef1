"""Build a noise predictor from its stored configuration (the `model` part of config.json).

Kinds: 'mlp' (MLPNoisePredictor) is built in; other kinds ('unet2d', 'sd' from
smeme.images) register a builder with `smeme.extensions.register_model_kind`, so the core
imports none of them and importing this file never pulls in diffusers.
"""
from __future__ import annotations

from ..extensions import MODEL_KINDS
from ..schedule import Schedule
from .base import NoisePredictor
from .mlp import MLPConfig, MLPNoisePredictor


def mlp_config_to_dict(config: MLPConfig) -> dict:
    return {"kind": "mlp", **config.to_dict()}


def build_model(model_cfg: dict, schedule: Schedule) -> NoisePredictor:
    """A freshly initialised model of the kind and size that `model_cfg` names."""
    if not isinstance(model_cfg, dict):
        raise ValueError(f"A model configuration must be a dict, got {type(model_cfg).__name__}.")
    kind = model_cfg.get("kind", "mlp")
    params = {k: v for k, v in model_cfg.items() if k != "kind"}
    if kind == "mlp":
        MLPConfig.check_keys(params)
        if "dim" not in params:
            raise ValueError("The MLP model configuration has no 'dim'.")
        types = {name: f.type for name, f in MLPConfig.__dataclass_fields__.items()}
        flags = [k for k in params if types[k] in (bool, "bool")]
        try:
            values = {k: float(v) if types[k] in (float, "float") else int(v) for k, v in params.items() if k not in flags}
        except OverflowError as exc:  # int(inf)
            raise ValueError(f"The MLP model configuration holds a non-finite size ({exc}).") from None
        return MLPNoisePredictor(MLPConfig(**values, **{k: params[k] for k in flags}), schedule)
    if kind in MODEL_KINDS:
        return MODEL_KINDS[kind](params, schedule)
    known = ", ".join(repr(k) for k in ("mlp", *sorted(MODEL_KINDS)))
    raise ValueError(f"Unknown model kind {kind!r} (expected one of {known}; image kinds need smeme.images).")
