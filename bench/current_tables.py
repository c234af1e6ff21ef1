"""Render BENCHMARKS.md's current tables from bench/results/*.json (one table per capability).

    python bench/current_tables.py                    # rewrite the block between the markers
    python bench/current_tables.py --check            # exit 1 if the block is not what the records give
    python bench/current_tables.py --run sampling density   # re-run those benchmarks first
    python bench/current_tables.py --list             # the benchmarks --run knows

Every record (bench/record.py) becomes one or more rows of its capability's table: what, the
command (in code quotes unless it starts with '(': a description of a measurement made without
a script), the machine and its load, the result, the target and whether it is met ("not met
under load" when the load average exceeded BUSY_LOAD), the date it was measured (with its
source when it was not written by the script itself). Capabilities appear in CAPABILITIES'
order, any other after them alphabetically; records within a table in name order. Only the
block between BEGIN and END in BENCHMARKS.md is rewritten.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from record import RESULTS, validate  # noqa: E402

BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- current:begin -->", "<!-- current:end -->"
CAPABILITIES = (
    "Sampling and log-density grids",
    "Pre-training",
    "Toy round",
    "Triangles, 3 rounds through the CLI",
    "CSV log-density",
    "Gaussian fidelity",
    "Budget over K rounds (the paper's Figure 2d)",
    "Digits round",
    "Stable Diffusion round",
    "App page loads",
    "Draw to trained",
    "CLI fixed cost",
    "Test suite",
)
# name -> (the script and arguments `--run NAME` starts, the records it writes); the first four
# take a few minutes on a quiet core, the rest 5-60 minutes.
RUNNERS = {
    "sampling": (["bench/bench_sampling.py", "--repeats", "5"], "sampling"),
    "density": (["bench/bench_density.py", "--quick"], "density"),
    "pretrain": (["bench/bench_pretrain.py", "--datasets", "triangles", "toy", "--repeats", "2"], "pretrain"),
    "cli_overhead": (["bench/bench_cli_overhead.py", "--repeats", "3"], "cli_overhead"),
    "triangles_cli": (["bench/bench_triangles_cli.py"], "triangles_cli"),
    "toy_round": (["bench/bench_round.py", "--repeats", "3"], "toy_round"),
    "toy_round_floor": (["bench/bench_round_floor.py", "--repeats", "3"], "toy_round_floor"),
    "csv_density": (["bench/bench_csv_density.py"], "csv_density"),
    "gaussian_fidelity_d2": (["bench/bench_gaussian_fidelity.py", "--d", "2"], "gaussian_fidelity_d2"),
    "gaussian_fidelity_d3": (["bench/bench_gaussian_fidelity.py", "--d", "3"], "gaussian_fidelity_d3"),
    "gaussian_fidelity_d8": (["bench/bench_gaussian_fidelity.py", "--d", "8"], "gaussian_fidelity_d8"),
    "sd_round_tiny": (["bench/bench_sd_grad_sync.py", "--repeats", "3"], "sd_round_tiny"),
    "app": (["bench/bench_app.py", "--repeats", "5"], "app_cold_start, app_page_switches"),
    "draw": (["bench/bench_draw.py", "--rounds", "2", "--repeats", "3"], "draw_to_trained, app_pages_draw"),
    "digits": (["bench/bench_images.py", "--steps", "600", "--rounds", "1"], "pretrain_digits_600, digits_round_pretrained600"),
}


def load_records(folder: Path = RESULTS) -> list[dict]:
    """Every record in `folder`, validated, sorted by capability order then name."""
    records = [validate(json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]
    order = {c: i for i, c in enumerate(CAPABILITIES)}
    return sorted(records, key=lambda r: (order.get(r["capability"], len(order)), r["capability"], r["name"]))


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def machine_and_load(record: dict) -> str:
    """'2 cores (AMD EPYC), torch 2.13.0, 1 thread; load 1.1 -> 1.4' from what the record has."""
    m = record["machine"]
    parts = []
    if m.get("cpu_count"):
        parts.append(f"{m['cpu_count']} cores" + (f" ({m['cpu_model']})" if m.get("cpu_model") else ""))
    if m.get("gpu"):
        parts.append(m["gpu"])
    if m.get("torch"):
        parts.append(f"torch {m['torch']}")
    if m.get("threads"):
        parts.append(f"{m['threads']} thread" + ("s" if m["threads"] > 1 else ""))
    if m.get("note"):
        parts.append(m["note"])
    load = record["load"]
    if load.get("note"):
        text = f"load {load['note']}"
    elif load.get("before") is not None:
        text = f"load {load['before']:.2f} -> {load['after']:.2f}"
    else:
        text = "load not recorded"
    return ", ".join(parts) + "; " + text


BUSY_LOAD = 2.0  # above this 1-minute load average (2 cores) a miss may be the load's, not the code's


def peak_load(load: dict) -> float | None:
    """The highest load average a record states: before/after, or the numbers of its note outside brackets."""
    values = [v for v in (load.get("before"), load.get("after")) if v is not None]
    if load.get("note"):
        values += [float(v) for v in re.findall(r"\d+(?:\.\d+)?", re.sub(r"\(.*?\)", "", load["note"]))]
    return max(values) if values else None


def target_cell(row: dict, record: dict) -> str:
    peak = peak_load(record["load"])
    loads = [] if peak is None else [peak]
    busy = " under load" if loads and max(loads) > BUSY_LOAD else ""
    status = {True: ": met", False: f": **not met**{busy}", None: ""}[row["met"]]
    return f"{row['target']}{status}"


def date_cell(record: dict) -> str:
    return record["date"] if record["source"] == "measured" else f"{record['date']} ({record['source']})"


def render_table(records: list[dict]) -> list[str]:
    lines = ["| what | command | machine and load | result | target | date |",
             "| --- | --- | --- | --- | --- | --- |"]
    notes = []
    for rec in records:
        for i, row in enumerate(rec["rows"]):
            command = rec["command"] if rec["command"].startswith("(") else f"`{rec['command']}`"
            shared = (command, machine_and_load(rec), date_cell(rec)) if i == 0 else ("same", "same", "same")
            cells = (row["what"], shared[0], shared[1], row["result"], target_cell(row, rec), shared[2])
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        if rec.get("note"):
            notes.append(f"- {rec['note']}")
    return lines + ([""] + notes if notes else [])


def render(records: list[dict]) -> str:
    """The whole block, markers included."""
    lines = [BEGIN, "<!-- Generated by `python bench/current_tables.py` from bench/results/*.json: "
             "edit or add records there, not here. -->"]
    capabilities = list(dict.fromkeys(r["capability"] for r in records))
    for cap in capabilities:
        lines += ["", f"### {cap}", ""] + render_table([r for r in records if r["capability"] == cap])
    return "\n".join(lines + ["", END])


def splice(document: str, block: str) -> str:
    """`document` with its BEGIN..END block replaced by `block` (ValueError if the markers are missing)."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{BENCHMARKS.name} has no '{BEGIN}' ... '{END}' block")
    return document[:start] + block + document[end + len(END):]


def run_benchmarks(names: list[str]) -> None:
    """Run each named benchmark (one thread unless SMEME_THREADS says otherwise), from the repo root."""
    env = {**os.environ, "SMEME_THREADS": os.environ.get("SMEME_THREADS", "1"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for name in names:
        argv = RUNNERS[name][0]
        print(f"# running {name}: {' '.join(argv)}", file=sys.stderr)
        subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", nargs="+", default=[], metavar="NAME", help="benchmarks to re-run first (see --list)")
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when BENCHMARKS.md differs")
    ap.add_argument("--list", action="store_true", help="print the benchmarks --run knows and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name, (cmd, records) in RUNNERS.items():
            print(f"{name:21s} {' '.join(cmd):55s} -> {records}")
        return 0
    unknown = [n for n in args.run if n not in RUNNERS]
    if unknown:
        ap.error(f"no benchmark named {', '.join(unknown)}; known: {', '.join(RUNNERS)}")
    run_benchmarks(args.run)
    document = BENCHMARKS.read_text()
    updated = splice(document, render(load_records()))
    if args.check:
        if updated != document:
            print(f"{BENCHMARKS.name}'s current tables differ from bench/results: "
                  "run `python bench/current_tables.py`", file=sys.stderr)
            return 1
        return 0
    if updated != document:
        BENCHMARKS.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
