"""Linear fine-tuning solvers: Adjoint Matching (default) and the blog's student-teacher.

Both: solver(model_ft, model_base, reward_grad, config, sampling_model=None,
on_iteration=None, cancel=None) -> list of per-iteration losses; model_ft changes in place.
"""
from .adjoint_matching import AdjointMatchingConfig, adjoint_matching
from .base import (ResidualNoisePredictor, SolverDivergedError, SolverError, gaussian_sampler_moments,
                   trainable_parameters)
from .student_teacher import StudentTeacherConfig, student_teacher

__all__ = [
    "AdjointMatchingConfig", "adjoint_matching", "StudentTeacherConfig", "student_teacher",
    "ResidualNoisePredictor", "SolverError", "SolverDivergedError", "gaussian_sampler_moments",
    "trainable_parameters",
]
