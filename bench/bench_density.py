"""Benchmark of smeme.density.log_prob: speed on grids, accuracy, scaling.

    SMEME_THREADS=1 python bench/bench_density.py [--repeats 5] [--quick]

Timing uses a randomly initialised MLP of the toy preset's size (the cost does not
depend on the weights). Accuracy against a 400-step solve uses an analytic mixture of
narrow Gaussians filling two squares (sharp edges, like the toy), where the exact
log p_{t_min} is also known. Prints medians (and minima) of several runs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from smeme import density  # noqa: E402
from smeme.models import GaussianMixtureModel, MLPConfig, MLPNoisePredictor  # noqa: E402
from smeme.schedule import VPSchedule  # noqa: E402
from smeme.threads import configure  # noqa: E402

from record import Recording  # noqa: E402  (bench/ is this script's folder)

GRID_TARGETS = {40: (1.0, "<= 1 s (the blog's package: 11 s)"), 64: (3.0, "<= 3 s")}


def timed(fn, repeats: int, cpu: list | None = None) -> tuple[float, float]:
    """(median, min) wall seconds over `repeats` calls after one warm-up call; the median CPU
    seconds are appended to `cpu` when given."""
    fn()
    ts, cs = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    if cpu is not None:
        cpu.append(statistics.median(cs))
    return statistics.median(ts), min(ts)


def mlp(dim: int, width: int, depth: int) -> MLPNoisePredictor:
    torch.manual_seed(0)
    model = MLPNoisePredictor(MLPConfig(dim=dim, width=width, depth=depth), VPSchedule())
    for p in model.parameters():  # non-zero output layer: a generic, non-trivial field
        torch.nn.init.normal_(p, std=0.1)
    return model.eval()


def grid_points(res: int) -> torch.Tensor:
    g = torch.linspace(-2.5, 2.5, res)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    return torch.stack([gx.ravel(), gy.ravel()], 1)


def squares_mixture() -> GaussianMixtureModel:
    g = torch.linspace(0, 1, 8, dtype=torch.float64)
    means, weights = [], []
    for x0, x1, w in ((-1.5, -0.25, 0.9), (0.25, 1.5, 0.1)):
        mu = torch.cartesian_prod(x0 + (x1 - x0) * g, -0.6 + 1.2 * g)
        means.append(mu)
        weights.append(torch.full((len(mu),), w / len(mu), dtype=torch.float64))
    return GaussianMixtureModel(torch.cat(weights), torch.cat(means), torch.eye(2) * 0.09**2, VPSchedule())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="skip the scaling tables")
    args = ap.parse_args()
    with Recording("density", capability="Sampling and log-density grids") as rec:
        measure(args, rec)


def measure(args: argparse.Namespace, rec: Recording) -> None:
    threads = configure()
    print(f"torch {torch.__version__}, threads {threads}, default steps {density.DEFAULT_STEPS}, "
          f"grid power {density.GRID_POWER}, t_min {density.DEFAULT_T_MIN}")

    print("\n== accuracy: sharp two-square Gaussian mixture (float64), 320 points, vs 400-step solve ==")
    mix = squares_mixture()
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([mix.sample_data(240, generator=gen), torch.rand(80, 2, generator=gen, dtype=torch.float64) * 4 - 2])
    ref = density.log_prob(mix, x, steps=400)
    exact = mix.log_prob(x, density.DEFAULT_T_MIN)
    print(f"400-step solve vs exact log p_t_min: mean |err| {float((ref - exact).abs().mean()):.4f} (the N(0, I) prior)")
    for steps in (16, 24, 32, 48):
        err = (density.log_prob(mix, x, steps=steps) - ref).abs()
        print(f"steps {steps:3d}: mean |err| {float(err.mean()):.4f}  p99 {float(err.quantile(0.99)):.4f}  max {float(err.max()):.4f}")
        if steps == density.DEFAULT_STEPS:
            rec.row(f"log-density error at the default {steps} RK4 steps, sharp two-square mixture, "
                    "against a 400-step solve", f"mean {float(err.mean()):.4f} nats, p99 {float(err.quantile(0.99)):.4f}",
                    mean_abs_error=float(err.mean()), p99_abs_error=float(err.quantile(0.99)))

    for label, (width, depth) in (("toy preset 96x4", (96, 4)), ("MLP 128x3", (128, 3))):
        model = mlp(2, width, depth)
        print(f"\n== timing: {label}, exact divergence, {density.DEFAULT_STEPS} RK4 steps ==")
        for res in (40, 64):
            pts = grid_points(res)
            cpu: list = []
            med, best = timed(lambda: density.log_prob(model, pts), args.repeats, cpu)
            with torch.no_grad():  # load-independent yardstick: one plain forward pass
                fwd, _ = timed(lambda: model(pts, torch.full((len(pts),), 0.5)), 20)
            evals = 4 * density.DEFAULT_STEPS
            print(f"{res}x{res} grid ({res * res} points): median {med:.3f} s  min {best:.3f} s  "
                  f"= {med / (evals * fwd):.1f} x ({evals} plain forward passes of {fwd * 1e3:.2f} ms)")
            if width == 96:  # the toy preset's size: the one the targets are for
                limit, text = GRID_TARGETS[res]
                rec.row(f"exact log-density, {res}x{res} grid, toy-sized MLP, {density.DEFAULT_STEPS} RK4 steps",
                        f"{med:.3f} s wall, {cpu[0]:.3f} CPU s (medians)", text, met=med <= limit, median_s=med,
                        min_s=best, median_cpu_s=cpu[0])
    if args.quick:
        return
    model = mlp(2, 128, 3)
    print("\n== scaling (MLP 128x3, d = 2 unless stated): median s ==")
    for n in (400, 1600, 4096, 8192):
        med, _ = timed(lambda: density.log_prob(model, grid_points(int(n**0.5)) if n != 8192 else torch.randn(n, 2)), 3)
        print(f"points {n:5d}: {med:.3f} s   ({med / n * 1e6:.0f} us/point)")
    pts = grid_points(40)
    for steps in (8, 16, 32, 64):
        med, _ = timed(lambda: density.log_prob(model, pts, steps=steps), 3)
        print(f"steps {steps:3d} (1600 points): {med:.3f} s   ({med / steps * 1e3:.1f} ms/step)")
    for d in (2, 4, 8, 16, 32, 64):
        m = mlp(d, 128, 3)
        pts = torch.randn(1600, d)
        med, _ = timed(lambda: density.log_prob(m, pts), 3)
        kind = "exact" if d <= density.EXACT_MAX_DIM else "Hutchinson, 1 probe"
        print(f"dim {d:3d} ({kind}, 1600 points): {med:.3f} s")
    orig = density.is_plain_mlp
    density.is_plain_mlp = lambda m: False
    pts = grid_points(40)
    med_ag, _ = timed(lambda: density.log_prob(model, pts), 3)
    density.is_plain_mlp = orig
    med_fast, _ = timed(lambda: density.log_prob(model, pts), 3)
    print(f"\n40x40, hand-written forward-mode path {med_fast:.3f} s vs autograd VJPs {med_ag:.3f} s "
          f"(ratio {med_ag / med_fast:.2f})")


if __name__ == "__main__":
    main()
