"""A CLI command's fixed cost beyond `import torch` (issue 12: <= 1.5 s).

For each command: the wall time of the whole process and of `python -c "import torch"` run
just before it, and the command's own work (the same command run a second time inside one
process, once everything is imported); overhead = process - torch import - work, the median
over --repeats runs.

    SMEME_THREADS=1 python bench/bench_cli_overhead.py --repeats 5
    PYTHONPATH=/path/to/other/checkout python bench/bench_cli_overhead.py   # compare a version

Prints one JSON line per command, then the load average (`os.getloadavg`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

WORK = """
import sys, time
from smeme.cli import main
argv = sys.argv[1:]
main(argv)
start = time.perf_counter()
main(argv)
print(time.perf_counter() - start)
"""


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def work(argv: list[str]) -> float:
    out = subprocess.run([sys.executable, "-c", WORK, *argv], check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="smeme-bench-cli-")
    run = os.path.join(tmp, "tri")
    commands = {
        "pretrain triangles --steps 1": ["pretrain", "--dataset", "triangles", "--steps", "1", "--run", run,
                                         "--force", "--quiet"],
        "report": ["report", "--run", run],
        "sample --n 100": ["sample", "--run", run, "--n", "100", "--steps", "20", "--out",
                           os.path.join(tmp, "s.csv"), "--quiet"],
    }
    # torch's import and each command alternate, so a change in the machine's load between
    # them does not read as overhead; each repeat's overhead is its own pair's difference
    torch_runs, process_runs = [], {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, argv in commands.items():
            torch_runs.append(wall([sys.executable, "-c", "import torch"]))
            process_runs[name].append((wall([sys.executable, "-m", "smeme", *argv]), torch_runs[-1]))
    print(json.dumps({"command": "python -c 'import torch'", "median_s": round(statistics.median(torch_runs), 3)}),
          flush=True)
    for name, argv in commands.items():
        own = statistics.median(work(argv) for _ in range(args.repeats))
        runs = process_runs[name]
        print(json.dumps({"command": f"python -m smeme {name}",
                          "process_median_s": round(statistics.median(p for p, _ in runs), 3),
                          "work_median_s": round(own, 3),
                          "overhead_beyond_torch_s": round(statistics.median(p - t - own for p, t in runs), 3)}),
              flush=True)
    print(json.dumps({"load_average": [round(v, 2) for v in os.getloadavg()], "nproc": os.cpu_count()}))


if __name__ == "__main__":
    main()
