"""Torch threads 1 vs 2, with the other core idle and busy (a spinning process).

    python bench/bench_threads.py [--repeats 5]
Workloads: 1,024 samples x 100 DDPM steps (toy preset model) and 200 training steps
(triangles preset). Each configuration runs in a fresh subprocess.
"""
import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = r"""
import statistics, sys, time, torch
sys.path.insert(0, {root!r})
torch.set_num_threads({threads})
from smeme.data import make_dataset
from smeme.models.registry import build_model
from smeme.presets import PRESETS
from smeme.sampling import sample
from smeme.schedule import VPSchedule
from smeme.train import pretrain
import dataclasses
model = build_model({{**PRESETS['toy'].model, 'dim': 2}}, VPSchedule()).eval()
sample(model, 1024, steps=20)
ds = make_dataset('triangles')
p = PRESETS['triangles']
def t(fn):
    out = []
    for _ in range({repeats}):
        t0 = time.perf_counter(); fn(); out.append(time.perf_counter() - t0)
    return statistics.median(out)
s = t(lambda: sample(model, 1024, steps=100))
tr = t(lambda: pretrain(ds, dataclasses.replace(p.train, steps=200), p.model))
print(f"{{s:.3f}} {{tr:.3f}}")
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"# {' '.join(sys.argv)}  (cpus={os.cpu_count()}, load={os.getloadavg()[0]:.2f})")
    for busy in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            time.sleep(0.5)
            for threads in (1, 2):
                code = WORKER.format(root=ROOT, threads=threads, repeats=args.repeats)
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
                if out.returncode != 0:
                    print(out.stderr)
                    continue
                s, tr = map(float, out.stdout.split())
                print(f"other core {'busy' if busy else 'idle'}: threads={threads} sample1024x100={s:.3f}s "
                      f"train200={tr:.3f}s load={os.getloadavg()[0]:.2f}", flush=True)
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()


if __name__ == "__main__":
    main()
