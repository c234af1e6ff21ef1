"""Multi-process SD rounds: LoRA gradients averaged by Accelerate's DDP wrapper (the default,
accelerator.prepare) against per-parameter hooks calling accelerator.reduce (the former code).

Two CPU processes (torchrun, gloo) run one round on the tests' tiny pipeline through the CLI's
entry point (`smeme sd-explore`); the round's solver seconds (metrics.json) are compared.

    PYTHONPATH=. python3 bench/bench_sd_grad_sync.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUND = dict(iterations=2, trajectories=2, steps=8, adam_steps=4, loss_steps=2, lr=1e-2, sample_n=2, sample_steps=4)


def hooks_instead_of_ddp():
    """The former averaging: a post-accumulate hook per LoRA parameter calling accelerator.reduce."""
    from smeme.images import sd_explore

    def average(model, accelerator):
        if accelerator is None or accelerator.num_processes <= 1:
            return lambda: None

        def hook(p):
            p.grad.copy_(accelerator.reduce(p.grad, reduction="mean"))

        handles = [p.register_post_accumulate_grad_hook(hook) for p in model.lora_params]
        return lambda: [h.remove() for h in handles]

    sd_explore._average_gradients_across = average


def rank_main(mode: str, pipeline: str, folder: str) -> int:
    from smeme import cli
    from smeme.images.sd_explore import SDConfig, SDExploreConfig, SDRun, make_accelerator

    if mode == "hooks":
        hooks_instead_of_ddp()
    acc = make_accelerator(cpu=True)
    if acc.is_main_process:
        SDRun.create(folder, SDConfig(source=pipeline, prompt="a house."), SDExploreConfig(**ROUND))
    acc.wait_for_everyone()
    code = cli.main(["sd-explore", "--cpu", "--run-folder", folder, "--rounds", "1", "--no-metrics"])
    if code == 0 and acc.is_main_process:
        print(json.dumps({"mode": mode, "seconds": SDRun.open(folder).metrics()[1]["seconds"]}), flush=True)
    return code


def launch(mode: str, pipeline: Path, folder: Path) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", SMEME_THREADS="1", ACCELERATE_USE_CPU="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(port), __file__,
           "--rank-run", mode, "--pipeline", str(pipeline), "--folder", str(folder)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("{"))
    return float(json.loads(line)["seconds"])


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rank-run", choices=["ddp", "hooks"])
    p.add_argument("--pipeline")
    p.add_argument("--folder")
    args = p.parse_args()
    if args.rank_run:
        return rank_main(args.rank_run, args.pipeline, args.folder)
    sys.path.insert(0, str(ROOT / "tests"))
    from test_sd import make_tiny_pipeline

    from record import Recording

    with Recording("sd_round_tiny", capability="Stable Diffusion round") as rec, tempfile.TemporaryDirectory() as tmp:
        pipe = make_tiny_pipeline(Path(tmp) / "pipe")
        times = {"ddp": [], "hooks": []}
        for r in range(args.repeats):
            for mode in ("ddp", "hooks"):  # interleaved, so load drifts hit both alike
                times[mode].append(launch(mode, pipe, Path(tmp) / f"{mode}{r}"))
        for mode, ts in times.items():
            print(f"{mode}: median {sorted(ts)[len(ts) // 2]:.2f} s per round over {len(ts)} "
                  f"({', '.join(f'{t:.2f}' for t in ts)})")
        ddp, hooks = (sorted(times[m])[len(times[m]) // 2] for m in ("ddp", "hooks"))
        rec.row("one SD round on the tests' tiny pipeline (2 iterations x 4 Adam steps), two CPU processes "
                "(torchrun, gloo, DDP)", f"{ddp:.2f} s median per round (reduce hooks: {hooks:.2f} s)",
                median_s=ddp, hooks_median_s=hooks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
