"""The app's one-line solver health summary (smeme.services.results.solver_health)."""
from smeme.services.results import solver_health


def test_solver_health_names_ess_tempering_and_share():
    line = solver_health({"lr_ess_min": 0.12, "lr_ess_median": 0.9, "lr_tempered_iterations": 2,
                          "lr_beta_min": 0.81, "tilt_share_closed_form": 0.93})
    assert "12% of the trajectories at worst, 90% typical" in line
    assert "tempered in 2 iterations (down to beta 0.81)" in line
    assert "93% of the closed form's shift" in line


def test_solver_health_is_silent_without_the_numbers():
    assert solver_health({"entropy_knn": 1.0}) is None
    assert "tempered" not in solver_health({"lr_ess_min": 0.5, "lr_ess_median": 0.8, "lr_tempered_iterations": 0})


def test_solver_health_says_whether_the_solver_converged():
    done = solver_health({"solver_converged": True, "solver_control_change": 0.04})
    assert done == "solver converged (the control moved 4% over the averaged window)."
    line = solver_health({"lr_ess_min": 0.5, "lr_ess_median": 0.8, "solver_converged": False,
                          "solver_control_change": 0.35})
    assert "solver NOT converged" in line and "moved 35%" in line
    assert solver_health({"solver_converged": "yes"}) is None  # only a real flag is shown
    line = solver_health({"solver_converged": False, "solver_control_change": 0.49, "solver_target_fit": 0.08})
    assert line.endswith("moved 49% over the averaged window); its regression target 0.08x the control along it "
                         "(1 at the fixed point)."), line


def test_solver_health_names_the_steps_left_to_adjoint_matching():
    line = solver_health({"lr_ess_min": 0.01, "lr_ess_median": 0.2, "lr_tempered_iterations": 0,
                          "lr_steps_kept_mean": 0.69})
    assert "31% of the likelihood-ratio steps left to Adjoint Matching" in line
    assert "left to" not in solver_health({"lr_ess_min": 0.6, "lr_ess_median": 0.8, "lr_steps_kept_mean": 1.0})


def test_solver_health_says_when_the_likelihood_ratio_term_was_off_by_dimension():
    assert "likelihood-ratio term off for this round" in solver_health({"lr_off_by_dimension": True, "lr_share": 0.0})
    line = solver_health({"lr_off_by_dimension": True, "lr_share": 0.0, "iterations": 45, "explore": {"iterations": 30}})
    assert "(Adjoint Matching alone, on a larger budget: 45 iterations, not 30)" in line, line
    same = solver_health({"lr_off_by_dimension": True, "lr_share": 0.0, "iterations": 30, "explore": {"iterations": 30}})
    assert "larger budget" not in same, same
    assert solver_health({"lr_off_by_dimension": False, "lr_share": 0.8}) is None


def test_solver_health_names_fewer_reward_steps():
    line = solver_health({"reward_ode_steps": 4, "reward_steps_tv": 0.0008})
    assert line == "reward values read with 4 ODE steps (their weights within 0.08% of the full steps')."
    assert solver_health({"reward_ode_steps": 8, "reward_steps_tv": 0.0}) is None  # the full steps: nothing to say
