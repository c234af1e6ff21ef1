"""Linear fine-tuning solvers: Adjoint Matching (default) and the blog's student-teacher.

Both: solver(model_ft, model_base, reward_grad, config, sampling_model=None, on_iteration=None,
cancel=None) -> SolverResult (losses, timings, health, convergence); model_ft changes in place.
"""
from .adjoint_matching import AdjointMatchingConfig, adjoint_matching
from .base import SolverDivergedError, SolverError, SolverResult, trainable_parameters
from .student_teacher import StudentTeacherConfig, student_teacher

__all__ = [
    "AdjointMatchingConfig", "adjoint_matching", "StudentTeacherConfig", "student_teacher",
    "SolverError", "SolverDivergedError", "SolverResult", "trainable_parameters",
]
