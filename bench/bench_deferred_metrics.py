"""A 3-round triangles exploration through the CLI with the PF-ODE metrics on the critical path
('now', the old path: computed before each round commits) and off it ('later', the default:
computed afterwards on request by `smeme metrics`), in CPU seconds of the child processes.

    SMEME_THREADS=1 python bench/bench_deferred_metrics.py --repeats 3
    # the code before the change too: any checkout or `git archive` export of it
    SMEME_THREADS=1 python bench/bench_deferred_metrics.py --before /tmp/smeme-before

One triangles run is pre-trained (its default preset) and copied for every exploration, so
every variant explores the same round 0 with the same seeds. The variants alternate within
each repeat, so a change in the machine's load spreads over all of them. Prints one JSON line
per variant (medians over the repeats; the rounds' own solver and metrics seconds read from
metrics.json), then the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = str(Path(__file__).resolve().parent.parent)


def timed(argv: list[str], pythonpath: str) -> tuple[float, float]:
    """(wall, CPU) seconds of `python -m smeme argv` run with `pythonpath` first on the path."""
    import time

    env = {**os.environ, "PYTHONPATH": pythonpath, "SMEME_THREADS": os.environ.get("SMEME_THREADS", "1")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "smeme", *argv], check=True, env=env, cwd=pythonpath,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def round_seconds(folder: Path) -> tuple[float, float]:
    """(solver, metrics) seconds of the explored rounds, as their records in metrics.json say."""
    rounds = json.loads((folder / "metrics.json").read_text())["rounds"]
    later = [m for k, m in rounds.items() if int(k) > 0]
    return sum(m["solver_seconds"] for m in later), sum(m["seconds"] for m in later)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", help="a checkout of the code before the change (its default explore)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="smeme-bench-deferred-"))
    base = tmp / "base"
    timed(["pretrain", "--dataset", "triangles", "--run", str(base), "--quiet"], HERE)
    variants = {"now (PF-ODE metrics before each commit)": (HERE, ["--density-metrics", "now"]),
                "later (default; `smeme metrics` after)": (HERE, [])}
    if args.before:
        variants["before the change (its default)"] = (args.before, [])
    results = {name: [] for name in variants}
    for rep in range(args.repeats):
        for i, (name, (path, extra)) in enumerate(variants.items()):
            folder = tmp / f"r{rep}-{i}"
            shutil.copytree(base, folder, ignore=shutil.ignore_patterns("*.deferred.json", ".lock"))
            wall, cpu = timed(["explore", "--run", str(folder), "--rounds", str(args.rounds), "--quiet", *extra], path)
            solver_s, metrics_s = round_seconds(folder)
            row = {"wall": wall, "cpu": cpu, "solver": solver_s, "metrics": metrics_s}
            if path == HERE and not extra:  # the deferred metrics of the new rounds, on request
                rounds = ",".join(str(k) for k in range(1, args.rounds + 1))
                row["on_request_wall"], row["on_request_cpu"] = timed(
                    ["metrics", "--run", str(folder), "--rounds", rounds, "--quiet"], path)
            results[name].append(row)
    med = statistics.median
    for name, rows in results.items():
        print(json.dumps({"variant": name, "rounds": args.rounds, "repeats": len(rows),
                          **{f"{key}_median_s": round(med(r[key] for r in rows), 2) for key in rows[0]},
                          "cpu_s": [round(r["cpu"], 2) for r in rows]}), flush=True)
    print(json.dumps({"load_average": [round(v, 2) for v in os.getloadavg()], "nproc": os.cpu_count()}))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
