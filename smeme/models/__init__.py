from .analytic import GaussianMixtureModel, GaussianModel
from .base import NoisePredictor, as_time, expand_like, score
from .mlp import MLPConfig, MLPNoisePredictor

__all__ = [
    "NoisePredictor", "score", "expand_like", "as_time",
    "MLPConfig", "MLPNoisePredictor", "GaussianMixtureModel", "GaussianModel",
]
