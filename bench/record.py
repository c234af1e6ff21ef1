"""One machine-readable record per benchmark run: what BENCHMARKS.md's current tables are made of.

A bench script measures as before (its printed output is unchanged) and, at its end, writes
`bench/results/<name>.json` through `Recording`:

    with Recording("sampling", capability="Sampling and log-density grids", args=args) as rec:
        ...                                   # measure
        rec.row("1,024 samples x 100 steps, triangles", f"{t:.3f} s", "<= 0.2 s", met=t <= 0.2,
                seconds=t)

The record holds: the capability (the table it belongs to), the command that made it, one row
per measured thing (what, a short result text, the target, whether it is met, the raw numbers),
the machine (`os.cpu_count()`, the CPU model from /proc/cpuinfo, torch's version and threads),
the 1-minute load average before and after, the UTC date it was measured and its source
('measured': written by the script). A record copied from an earlier write-up by hand carries
the date and load it was measured at and names that source instead. Nothing is written when the
measurement raises. `python bench/current_tables.py` renders the tables from these files.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA_KEYS = ("name", "capability", "command", "rows", "machine", "load", "date", "source")
ROW_KEYS = ("what", "result", "target", "met", "numbers")


def load_average() -> float | None:
    """The 1-minute load average, rounded to 0.01 (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Cores, CPU model, torch's version and intra-op threads (torch only if already imported), the GPU if any."""
    torch = sys.modules.get("torch")
    gpu = torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "torch": getattr(torch, "__version__", None),
        "threads": torch.get_num_threads() if torch is not None else None,
        **({"gpu": gpu} if gpu else {}),
    }


def command_line() -> str:
    """This process's command as a user would type it from the repository root."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path(__file__).resolve().parent.parent)
    except ValueError:
        pass
    threads = os.environ.get("SMEME_THREADS", "1")
    return " ".join([f"SMEME_THREADS={threads} python", str(script), *sys.argv[1:]])


def validate(record: dict[str, Any]) -> dict[str, Any]:
    """Raise ValueError naming the first missing or ill-typed field; return the record."""
    for key in SCHEMA_KEYS:
        if key not in record:
            raise ValueError(f"benchmark record {record.get('name', '?')!r} lacks the field {key!r}")
    if not record["rows"]:
        raise ValueError(f"benchmark record {record['name']!r} has no rows")
    for row in record["rows"]:
        for key in ROW_KEYS:
            if key not in row:
                raise ValueError(f"a row of benchmark record {record['name']!r} lacks the field {key!r}")
        if row["met"] not in (True, False, None):
            raise ValueError(f"'met' of {row['what']!r} in {record['name']!r} must be true, false or null")
    try:
        _dt.date.fromisoformat(record["date"])
    except (TypeError, ValueError):
        raise ValueError(f"benchmark record {record['name']!r} has no ISO date: {record['date']!r}") from None
    return record


def write(record: dict[str, Any], folder: Path = RESULTS) -> Path:
    """Validate and write `<folder>/<name>.json` atomically (a temp file renamed over it)."""
    validate(record)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record['name']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


class Recording:
    """Collects a run's rows; on a clean exit writes the record with the load before and after."""

    def __init__(self, name: str, *, capability: str, command: str | None = None,
                 note: str = "", folder: Path = RESULTS):
        self.name, self.capability, self.note, self.folder = name, capability, note, folder
        self.command = command or command_line()
        self.rows: list[dict[str, Any]] = []

    def row(self, what: str, result: str, target: str = "-", *, met: bool | None = None,
            **numbers: float) -> None:
        """One measured thing: a short result text, its target, whether it is met, raw numbers."""
        self.rows.append({"what": what, "result": result, "target": target,
                          "met": None if met is None else bool(met), "numbers": numbers})

    def __enter__(self) -> "Recording":
        self.load_before = load_average()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.rows:
            return
        record = {
            "name": self.name, "capability": self.capability, "command": self.command,
            "rows": self.rows, "machine": machine(),
            "load": {"before": self.load_before, "after": load_average()},
            "date": _dt.datetime.now(_dt.timezone.utc).date().isoformat(),
            "source": "measured", "note": self.note,
        }
        path = write(record, self.folder)
        print(f"# record: {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Write a record by hand: a number measured without a record-writing script, or copied from a write-up.

        python bench/record.py --name digits_round --capability "Digits round" \\
            --command "SMEME_THREADS=1 python -m smeme explore --run DIR --rounds 1 --quiet" \\
            --date 2026-12-07 --load "1.3" --source "BENCHMARKS.md history" \\
            --row "one digits round at its default budget :: 58 s wall, 57 CPU s :: <= 60 s on one core :: yes"

    Each --row is 'what :: result :: target :: met' (met: yes, no or -). The machine is this one's
    unless --machine names another ('2 cores, AMD EPYC'). Then `python bench/current_tables.py`.
    """
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="the record's file name in bench/results (no .json)")
    ap.add_argument("--capability", required=True, help="its table, e.g. 'Toy round'")
    ap.add_argument("--command", required=True, help="what was run ('(...)' for a measurement without a script)")
    ap.add_argument("--date", required=True, help="the UTC date it was measured, YYYY-MM-DD")
    ap.add_argument("--load", required=True, help="the 1-minute load average(s) at the time, e.g. '1.3' or '11-17'")
    ap.add_argument("--source", default="BENCHMARKS.md history", help="where the numbers come from")
    ap.add_argument("--machine", default=None, help="a description, when it was not this machine")
    ap.add_argument("--note", default="", help="one line shown under the table")
    ap.add_argument("--row", action="append", required=True, help="'what :: result :: target :: met'")
    ap.add_argument("--folder", type=Path, default=RESULTS, help="where records live (default: bench/results)")
    args = ap.parse_args(argv)
    rows = []
    for text in args.row:
        parts = [p.strip() for p in text.split("::")]
        if len(parts) != 4 or parts[3] not in ("yes", "no", "-"):
            ap.error(f"--row {text!r} is not 'what :: result :: target :: met' with met yes, no or -")
        rows.append({"what": parts[0], "result": parts[1], "target": parts[2],
                     "met": {"yes": True, "no": False, "-": None}[parts[3]], "numbers": {}})
    here = {**machine(), "torch": None, "threads": None}  # torch is not imported here: say nothing of it
    record = {"name": args.name, "capability": args.capability, "command": args.command, "rows": rows,
              "machine": {"note": args.machine} if args.machine else here,
              "load": {"before": None, "after": None, "note": args.load}, "date": args.date,
              "source": args.source, "note": args.note}
    try:
        print(write(record, args.folder))
    except ValueError as err:
        ap.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
