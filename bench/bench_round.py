"""One default S-MEME round on the toy model: wall time, where it goes, entropy gain per second.

    SMEME_THREADS=1 python bench/bench_round.py [--run DIR] [--lam 0.1] [--repeats 3]

Pre-trains the toy preset into a temporary folder unless --run names a toy run. For each
solver (Adjoint Matching, student-teacher) it runs one round with ExploreConfig defaults,
then reports solver seconds, metrics seconds, k-NN entropy gain, sparse share against the
closed form, and for Adjoint Matching the split sampling / adjoint / regression.
With --repeats N each solver's round runs N times (same seed: only the timing varies)
and the medians are printed with the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from smeme.threads import configure

from record import Recording  # (bench/ is this script's folder)

ROUND_TARGET_S = 10.0  # issue 14's bar for a default toy round on one thread


def one_round(src: Path, solver: str, lam: float) -> dict:
    from smeme.explore import ExploreConfig, run_rounds
    from smeme.solvers import adjoint_matching as am_mod
    from smeme.store import Run

    import smeme.explore as explore

    work = Path(tempfile.mkdtemp(prefix="bench_round_")) / "run"
    shutil.copytree(src, work)
    run = Run.open(work)
    timings = {}
    real = explore.adjoint_matching

    def timed(*a, **k):  # keep the solver's phase timings
        out = real(*a, **k)
        timings.update(out.timings)
        return out

    explore.adjoint_matching = timed
    try:
        cfg = ExploreConfig(lam=lam, solver=solver, metrics_logp=False)
        t0, c0 = time.perf_counter(), time.process_time()
        run_rounds(run, 1, cfg)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        explore.adjoint_matching = real
    m0, m1 = run.metrics()[0], run.metrics()[1]
    gain = m1["entropy_knn"] - m0["entropy_knn"]
    out = {"solver": solver, "lam": lam, "round_wall_s": round(wall, 2), "round_cpu_s": round(cpu, 2), "solver_s": m1["solver_seconds"],
           "metrics_s": m1.get("seconds"), "entropy_gain_knn": round(gain, 4),
           "entropy_gain_closed_form": m1.get("closed_form", {}).get("entropy_gain"),
           "gain_per_solver_s": round(gain / m1["solver_seconds"], 5),
           "sparse_share": m1.get("sparse_share"), "sparse_share_closed_form": m1.get("sparse_share_closed_form"),
           "sparse_share_round0": m0.get("sparse_share"), "on_support": m1.get("on_support"),
           "phases_s": {k: round(v, 2) for k, v in timings.items()}}
    shutil.rmtree(work.parent, ignore_errors=True)
    del am_mod
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="an existing toy run (default: pre-train one)")
    ap.add_argument("--lam", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3, help="rounds per solver; medians are reported")
    args = ap.parse_args()
    configure()
    print(f"torch threads: {torch.get_num_threads()}")
    if args.run:
        src = Path(args.run)
    else:
        from smeme.pipeline import pretrain_run

        src = Path(tempfile.mkdtemp(prefix="bench_toy_")) / "toy"
        t0 = time.perf_counter()
        pretrain_run(src, "toy")
        print(f"pre-trained the toy preset in {time.perf_counter() - t0:.1f} s")
    with Recording("toy_round", capability="Toy round") as rec:
        for solver in ("adjoint", "student-teacher"):
            record_row(rec, bench_solver(src, solver, args))


def record_row(rec: Recording, out: dict) -> None:
    """The round's time (and its phases) against the bar, its gain and sparse share against the closed form."""
    phases = ", ".join(f"{k} {v}" for k, v in out.get("phases_s", {}).items())
    result = (f"{out['round_wall_s']} s wall, {out['round_cpu_s']} CPU s (median of {out['repeats']}); "
              f"solver {out['solver_s']} s" + (f" ({phases})" if phases else "") +
              f"; k-NN gain {out['entropy_gain_knn']:.4f} (closed form {out['entropy_gain_closed_form']:.4f}), "
              f"sparse share {out['sparse_share']:.4f} (closed form {out['sparse_share_closed_form']:.4f})")
    adjoint = out["solver"] == "adjoint"
    rec.row(f"one default toy round at lam {out['lam']}, {out['solver']}" + ("" if adjoint else " (the blog's solver)"),
            result, f"<= {ROUND_TARGET_S:g} s" if adjoint else "-",
            met=out["round_wall_s"] <= ROUND_TARGET_S if adjoint else None,
            round_wall_s=out["round_wall_s"], round_cpu_s=out["round_cpu_s"], solver_s=out["solver_s"],
            entropy_gain_knn=out["entropy_gain_knn"], sparse_share=out["sparse_share"],
            **{f"{k}_s": v for k, v in out.get("phases_s", {}).items()})


def bench_solver(src: Path, solver: str, args: argparse.Namespace) -> dict:
    load0 = os.getloadavg()[0]
    rows = [one_round(src, solver, args.lam) for _ in range(max(1, args.repeats))]
    out = dict(rows[-1])
    for key in ("round_wall_s", "round_cpu_s", "solver_s", "metrics_s"):
        vals = [r[key] for r in rows if r.get(key) is not None]
        out[key] = round(statistics.median(vals), 2) if vals else None
    out["gain_per_solver_s"] = round(out["entropy_gain_knn"] / out["solver_s"], 5)
    if rows[-1]["phases_s"]:
        out["phases_s"] = {k: round(statistics.median(r["phases_s"][k] for r in rows), 2)
                           for k in rows[-1]["phases_s"]}
    out["repeats"] = len(rows)
    out["load_avg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
