"""Build a noise predictor from its stored configuration (the `model` part of config.json).

Kinds: 'mlp' (MLPNoisePredictor); 'unet2d' and 'sd' are dispatched lazily to the
modules that implement them, so importing this file never pulls in diffusers.
"""
from __future__ import annotations

import importlib

from ..schedule import Schedule
from .base import NoisePredictor
from .mlp import MLPConfig, MLPNoisePredictor

# kind -> (module, builder function) for models implemented elsewhere, imported on demand.
_LAZY = {
    "unet2d": ("smeme.models.unet", "build_from_config"),
    "sd": ("smeme.models.sd", "build_from_config"),
}


def mlp_config_to_dict(config: MLPConfig) -> dict:
    return {"kind": "mlp", **config.to_dict()}


def build_model(model_cfg: dict, schedule: Schedule) -> NoisePredictor:
    """A freshly initialised model of the kind and size that `model_cfg` names."""
    if not isinstance(model_cfg, dict):
        raise ValueError(f"A model configuration must be a dict, got {type(model_cfg).__name__}.")
    kind = model_cfg.get("kind", "mlp")
    params = {k: v for k, v in model_cfg.items() if k != "kind"}
    if kind == "mlp":
        allowed = set(MLPConfig.__dataclass_fields__)
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(f"Unknown MLP model setting(s) {unknown}; allowed: {sorted(allowed)}.")
        if "dim" not in params:
            raise ValueError("The MLP model configuration has no 'dim'.")
        types = {name: f.type for name, f in MLPConfig.__dataclass_fields__.items()}
        return MLPNoisePredictor(MLPConfig(**{k: float(v) if types[k] in (float, "float") else int(v)
                                              for k, v in params.items()}), schedule)
    if kind in _LAZY:
        module_name, fn_name = _LAZY[kind]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"Model kind {kind!r} needs {module_name}, which is not available ({exc}).") from exc
        builder = getattr(module, fn_name, None)
        if builder is None:
            raise ValueError(f"{module_name} has no {fn_name}() to build a {kind!r} model.")
        return builder(params, schedule)
    raise ValueError(f"Unknown model kind {kind!r} (expected 'mlp', 'unet2d' or 'sd').")
