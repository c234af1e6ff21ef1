"""smeme: Score-based Maximum Entropy Manifold Exploration (S-MEME).

The public API for a researcher's own model (smeme.api; loaded on first use, so `import
smeme` stays cheap):
    explore_rounds(model, schedule=None, lam=0.1, rounds=3, ...) -> [TunedRound(round, model, metrics)]
    noise_predictor(model, schedule=None, sample_shape=None)     -> the NoisePredictor it drives
    ExploreConfig                                                 every round setting
"""
__version__ = "0.1.0"

_API = ("explore_rounds", "noise_predictor", "TunedRound", "ExploreConfig", "ExploreError")


def __getattr__(name: str):
    if name in _API:
        from . import api, images  # noqa: F401 - images registers the diffusers UNet folder loader

        return getattr(api, name)
    raise AttributeError(f"module 'smeme' has no attribute {name!r}")
