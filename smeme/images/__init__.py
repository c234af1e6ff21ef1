"""Image work on top of the core: 8x8 digits (data, a diffusers UNet, an in-project
classifier, metrics, rounds), Stable Diffusion (loading, LoRA rounds, metrics) and grids.

Nothing in the core imports this package; importing it registers the 'digits' data set
and preset and the 'unet2d' / 'sd' model kinds in smeme.extensions, and the 'sd' run kind
in smeme.store. The modules
behind them load on first use, so the import itself is cheap (no torch, no diffusers).
"""
from __future__ import annotations

from ..extensions import register_dataset, register_model_kind, register_preset
from ..store import register_run_kind


def _make_digits(n=None, seed: int = 0, **params):
    from .digits import make_digits

    return make_digits(n=n, seed=seed, **params)


def _digits_domain(cfg: dict):
    from .digits import DigitsDomain

    return DigitsDomain.from_config(cfg)


def _digits_preset():
    from .unet import digits_preset

    return digits_preset()


def _build_unet(params: dict, schedule=None):
    from .unet import build_from_config

    return build_from_config(params, schedule)


def _load_unet_folder(params: dict, schedule=None):
    from .unet import load_unet_folder

    return load_unet_folder(params, schedule)


def _build_sd(params: dict, schedule=None):
    from .sd import build_from_config

    return build_from_config(params, schedule)


register_dataset("digits", _make_digits, _digits_domain)
register_preset("digits", _digits_preset)
register_model_kind("unet2d", _build_unet)
register_model_kind("sd", _build_sd)
register_model_kind("unet2d_folder", _load_unet_folder)  # a local diffusers UNet (smeme.explore_rounds)


def _open_sd_run(folder):
    from .sd_explore import SDRun

    return SDRun.open(folder)


register_run_kind("sd", lambda cfg: cfg.get("kind") == "sd", _open_sd_run)  # a kind of smeme.store run
