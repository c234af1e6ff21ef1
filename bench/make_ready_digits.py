"""Make the ready digits model that ships with smeme (smeme/assets/digits-ready.zip + .json).

    SMEME_THREADS=1 nice -n 5 python -m smeme pretrain --dataset digits --steps 1200 --seed 0 --run /tmp/digits-ready
    SMEME_THREADS=1 python bench/make_ready_digits.py --run /tmp/digits-ready
    SMEME_THREADS=1 python bench/make_ready_digits.py --round-only   # the shipped bundle's round, re-measured

It measures, on one thread, the CPU seconds of a training step (a short training from
scratch) and of one digits round at its default budget on the trained model (on a copy:
the shipped run keeps round 0 only), reads the model's round-0 quality (the digit
classifier's confidence, the readable share, the class shares), exports the run as a
bundle and writes the manifest with its SHA-256. CPU seconds of one thread are what one
idle core takes; on a shared machine the wall time is longer (both are recorded).
`--round-only` imports the shipped bundle (checked against its SHA-256) into a temporary
folder and rewrites only the manifest's `round` (after a change of the default budget);
the bundle stays byte for byte.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ASSETS = ROOT / "smeme" / "assets"
QUALITY = ("confidence", "valid_share", "rare_share", "class_shares", "diversity", "entropy_knn")


def step_seconds(steps: int) -> dict:
    """CPU and wall seconds per training step: the steps after the first 5 of a short training
    from scratch (stopped after `steps`, so no round-0 metrics are computed)."""
    import threading

    from smeme.pipeline import Cancelled, pretrain_run

    cancel, marks = threading.Event(), {}

    def progress(step, total, loss):
        if step in (5, steps):
            marks[step] = (time.process_time(), time.perf_counter())
        if step >= steps:
            cancel.set()

    with tempfile.TemporaryDirectory() as tmp:
        try:
            pretrain_run(Path(tmp) / "short", "digits", steps=steps + 50, seed=1, progress=progress, cancel=cancel)
        except Cancelled:
            pass
    (c0, w0), (c1, w1) = marks[5], marks[steps]
    return {"cpu_seconds_per_step": round((c1 - c0) / (steps - 5), 4),
            "wall_seconds_per_step": round((w1 - w0) / (steps - 5), 4), "measured_steps": steps - 5}


def one_round(run_folder: Path) -> dict:
    """One digits round at its default budget on a copy of the run: seconds and what it reaches."""
    from smeme.images.digits_rounds import DIGITS_LAM, DIGITS_ROUND, run_digits_rounds
    from smeme.store import Run

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(run_folder, copy)
        run = Run.open(copy)
        t, cpu = time.perf_counter(), time.process_time()
        run_digits_rounds(run, 1, lam=DIGITS_LAM)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        m = Run.open(copy).metrics()
    return {"cpu_seconds": round(cpu, 1), "wall_seconds": round(wall, 1),
            "solver_wall_seconds": m[1].get("solver_seconds"),
            "lam": DIGITS_LAM, "budget": {k: DIGITS_ROUND[k] for k in ("iterations", "trajectories", "steps")},
            "round_0": {k: m[0].get(k) for k in QUALITY if k != "class_shares"},
            "round_1": {k: m[1].get(k) for k in QUALITY if k != "class_shares"},
            "class_shares_round_0": m[0].get("class_shares"), "class_shares_round_1": m[1].get("class_shares")}


def remeasure_round() -> None:
    """Re-measure the shipped bundle's round at the current default budget; rewrite only the manifest's `round`."""
    from smeme.bundle import import_bundle

    manifest_path = ASSETS / "digits-ready.json"
    manifest = json.loads(manifest_path.read_text())
    bundle = ASSETS / "digits-ready.zip"
    if hashlib.sha256(bundle.read_bytes()).hexdigest() != manifest["sha256"]:
        raise SystemExit(f"{bundle} does not match the SHA-256 in {manifest_path}.")
    with tempfile.TemporaryDirectory() as tmp:
        folder = import_bundle(bundle, Path(tmp), name="ready")
        manifest["round"] = {**one_round(folder), "load_average_at_measurement": round(os.getloadavg()[0], 1)}
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest["round"], indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="the trained digits run (round 0 only)")
    p.add_argument("--round-only", action="store_true",
                   help="re-measure the shipped bundle's round only (the bundle stays as it is)")
    p.add_argument("--step-sample", type=int, default=40, help="training steps timed for the pace (default: 40)")
    args = p.parse_args()
    from smeme import images  # noqa: F401  (registers the digits data set and the UNet)
    from smeme.bundle import export_run
    from smeme.store import Run
    from smeme.threads import configure

    configure()
    if args.round_only:
        remeasure_round()
        return
    if not args.run:
        p.error("--run is required (or --round-only)")
    run_folder = Path(args.run)
    run = Run.open(run_folder)
    if run.rounds() != [0]:
        raise SystemExit(f"{run_folder} has rounds beyond 0; ship a run with round 0 only.")
    m0 = run.metrics()[0]
    load = os.getloadavg()[0]
    pace = step_seconds(args.step_sample)
    rnd = one_round(run_folder)
    ASSETS.mkdir(exist_ok=True)
    bundle = ASSETS / "digits-ready.zip"
    export_run(run_folder, bundle)
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    manifest = {
        "sha256": digest, "bytes": bundle.stat().st_size,
        "made_with": "bench/make_ready_digits.py (see its docstring)",
        "train": {"steps": m0["train"]["steps"], "wall_seconds": m0["train"]["seconds"],
                  "seed": run.config["dataset"]["seed"], **pace,
                  **{k: m0.get(k) for k in QUALITY}},
        "round": rnd,
        "load_average_at_measurement": round(load, 1),
        "torch_threads": 1,
    }
    (ASSETS / "digits-ready.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
