"""Torch threads 1, 2 and 'auto' for one default toy round through the CLI, the other core idle or busy.

    python bench/bench_threads.py [--run TOY_RUN] [--repeats 3] [--others idle,busy,half]

Each configuration runs `SMEME_THREADS=T python -m smeme explore --run <copy> --rounds 1 --quiet`
in a fresh process on a fresh copy of a pre-trained toy run (pre-trained here unless --run names
one) and reports the median wall seconds. The other core is: idle (nothing else running; the
load average before and after says whether it was), busy (a spinning Python process for the whole
round) or busy from half-way (the spinner starts after half of the 1-thread round's median time:
how fast 'auto' backs off). Writes bench/results/threads.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import Recording  # (bench/ is this script's folder)

ROOT = Path(__file__).resolve().parents[1]
SPIN = "import time\nt = time.time()\nwhile time.time() - t < 600: pass"


def pretrained_toy(folder: Path) -> Path:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SMEME_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "smeme", "pretrain", "--dataset", "toy", "--run", str(folder), "--quiet"],
                   env=env, check=True, timeout=1800)
    return folder


def one_round(src: Path, threads: str, other: str, spin_after: float) -> float:
    """Wall seconds of one CLI round; `other` is 'idle', 'busy' or 'half' (busy after spin_after s)."""
    work = Path(tempfile.mkdtemp(prefix="bench_threads_")) / "run"
    shutil.copytree(src, work)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SMEME_THREADS": threads}
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if other == "busy" else None
    try:
        if spinner is not None:
            time.sleep(0.5)
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "smeme", "explore", "--run", str(work), "--rounds", "1",
                                 "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if other == "half":
            try:
                proc.wait(timeout=spin_after)
            except subprocess.TimeoutExpired:
                spinner = subprocess.Popen([sys.executable, "-c", SPIN])
        _, err = proc.communicate(timeout=1800)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(err)
        return wall
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
        shutil.rmtree(work.parent, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a pre-trained toy run (default: pre-train one)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--others", default="idle,busy,half", help="which of idle, busy, half to measure")
    args = ap.parse_args()
    src = args.run or pretrained_toy(Path(tempfile.mkdtemp(prefix="bench_threads_src_")) / "toy")
    with Recording("threads", capability="Threads", command=" ".join(["python bench/bench_threads.py",
                                                                     *sys.argv[1:]])) as rec:
        measure(rec, src, args.repeats, args.others.split(","))


def measure(rec: Recording, src: Path, repeats: int, others: list[str]) -> None:
    results: dict = {}
    for other in others:
        ones = [w for (o, t), w in results.items() if t == "1"]
        spin_after = statistics.median(ones[0]) / 2 if ones else 5.0
        for threads in ("1", "2", "auto"):
            walls = [one_round(src, threads, other, spin_after) for _ in range(repeats)]
            results[other, threads] = walls
            print(f"other core {other}: SMEME_THREADS={threads} median {statistics.median(walls):.2f} s "
                  f"({', '.join(f'{w:.2f}' for w in walls)}) load {os.getloadavg()[0]:.2f}", flush=True)
    for other in others:
        med = {t: statistics.median(results[other, t]) for t in ("1", "2", "auto")}
        best = min(med["1"], med["2"])
        rec.row(f"a default toy round through the CLI, other core {other}: 1 / 2 / auto threads",
                f"{med['1']:.1f} / {med['2']:.1f} / {med['auto']:.1f} s wall (auto {med['auto'] / best:.2f}x "
                f"the better fixed count)", "auto never loses: <= 1.1x the better of 1 and 2 (issue 23)",
                met=med["auto"] <= 1.1 * best, seconds_1=med["1"], seconds_2=med["2"], seconds_auto=med["auto"])


if __name__ == "__main__":
    main()
