"""Deferred metrics: the metrics a round leaves out of its commit, computed after it.

A round commits with the metrics that define it (metrics.json, smeme.fsio's commit point)
and is visible at once. The metrics its run kind defers (`run.deferred_metrics`, a
smeme.metrics.DeferredMetrics: for point data the PF-ODE cross-entropy and surprise) are
computed later, on request (`smeme metrics`, the app's background job), from the committed
round, and written to a file of the round's own:

    round_<k>.deferred.json  {"schema_version": 1, "round": k, "weights_sha256": <of round_<k>.safetensors>,
                              "settings": <what they were computed with>, "metrics": {name: number or null},
                              "seconds": <how long they took>}

Each file is written atomically (fsio.atomic_write_json: a reader sees all of it or none) and
needs no lock: a committed round is never overwritten, so two writers of one round write the
same numbers. Read back it is a cache: a file counts only when it passes `check_record` (it
names its round, that round's weights by their sha256, the settings the round's record implies
and exactly the deferred names); a missing, damaged or stale one is computed again. Values
in a round's own record (a round measured with them, or made before they were deferred) win.
Bundles carry the files that pass the check, and import refuses any other (`check_files`).
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import time
from pathlib import Path

from .fsio import StoreError, atomic_write_json, jsonable
from .safe_io import read_capped_bytes, read_json

SCHEMA_VERSION = 1
FILE_RE = re.compile(r"^round_(\d{1,6})\.deferred\.json$")
RECORD_KEYS = {"schema_version", "round", "weights_sha256", "settings", "metrics", "seconds"}
MAX_RECORD_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 1 << 30  # as smeme.store reads a round's weights

_digests: dict[tuple, str] = {}
_digests_lock = threading.Lock()


def deferred_path(folder, k: int) -> Path:
    return Path(folder) / f"round_{int(k)}.deferred.json"


def weights_sha256(path) -> str:
    """sha256 of a round's weights file (not through a link), memoised per file version."""
    st = os.lstat(path)
    key = (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    with _digests_lock:
        if key in _digests:
            return _digests[key]
    digest = hashlib.sha256(read_capped_bytes(path, MAX_WEIGHTS_BYTES, StoreError, Path(path).name,
                                              follow_links=False)).hexdigest()
    with _digests_lock:
        if len(_digests) > 4096:
            _digests.clear()
        _digests[key] = digest
    return digest


def _number(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def check_record(record, k: int, digest: str, spec, settings: dict) -> dict:
    """The metrics of round k's deferred record, or StoreError (one sentence) for the first
    thing that is not what smeme writes for this round, its weights and its settings."""
    where = deferred_path(".", k).name
    if not isinstance(record, dict) or set(record) != RECORD_KEYS:
        extra = sorted(set(record) - RECORD_KEYS) if isinstance(record, dict) else []
        raise StoreError(f"{where} is not a deferred-metrics record" + (f" (unknown field {extra[0]!r})" if extra else ""))
    if type(record["schema_version"]) is not int or record["schema_version"] != SCHEMA_VERSION:
        raise StoreError(f"{where} has schema version {record['schema_version']!r}; this smeme reads {SCHEMA_VERSION}")
    if type(record["round"]) is not int or record["round"] != int(k):
        raise StoreError(f"{where} names round {record['round']!r}, not round {int(k)}")
    if record["weights_sha256"] != digest:
        raise StoreError(f"{where} was computed for other weights than round_{int(k)}.safetensors")
    if record["settings"] != settings:
        raise StoreError(f"{where} was computed with other settings than round {int(k)}'s metrics were")
    values = record["metrics"]
    if not isinstance(values, dict) or set(values) != set(spec.names):
        raise StoreError(f"{where} does not hold exactly the deferred metrics {list(spec.names)}")
    bad = next((name for name, v in values.items() if v is not None and not _number(v)), None)
    if bad is not None:
        raise StoreError(f"{where}: '{bad}' is not a finite number or null")
    if not _number(record["seconds"]) or record["seconds"] < 0:
        raise StoreError(f"{where}: 'seconds' is not a non-negative number")
    return dict(values)


def _read_checked(run, spec, k: int, record: dict) -> dict:
    """Round k's deferred metrics from its file, checked strictly (StoreError otherwise)."""
    stored = read_json(deferred_path(run.folder, k), StoreError, deferred_path(".", k).name,
                       limit=MAX_RECORD_BYTES)
    return check_record(stored, k, weights_sha256(run.round_path(k)), spec, spec.settings(record))


def _ready(run, spec, k: int, record: dict) -> dict | None:
    """Round k's deferred metrics where they are known: in its own record, or in a file that
    passes the check; None when they are still to compute."""
    if all(name in record for name in spec.names):
        return {name: record[name] for name in spec.names}
    try:
        return _read_checked(run, spec, k, record)
    except (StoreError, OSError):  # absent, damaged or stale: computed again
        return None


def pending(run, rounds=None) -> list[int]:
    """The committed rounds (of `rounds`, default all) whose deferred metrics are still to compute."""
    spec = getattr(run, "deferred_metrics", None)
    if spec is None:
        return []
    records, committed = run.metrics(), run.rounds()
    wanted = committed if rounds is None else [int(k) for k in rounds if int(k) in committed]
    return [k for k in wanted if _ready(run, spec, k, records[k]) is None]


def merged(run) -> dict[int, dict]:
    """Every round's metrics record with its deferred metrics folded in where they are known."""
    records = run.metrics()
    spec = getattr(run, "deferred_metrics", None)
    if spec is None:
        return records
    out = dict(records)
    for k in run.rounds():
        values = _ready(run, spec, k, records[k])
        if values is not None:
            out[k] = {**values, **records[k]}
    return out


def measure(run, rounds=None, progress=None, cancel=None, on_round=None) -> dict[int, dict]:
    """{round: its deferred metrics} for `rounds` (default every committed round): read where
    known, computed and written (atomically, one file per round) where not.

    progress(index, count, k, done, total): round k, the index-th of the `count` computed,
    at step `done` of `total`. Stops between rounds when cancel.is_set() (what is written
    stays). on_round(k, values) after each round written. StoreError for a round not committed."""
    spec = getattr(run, "deferred_metrics", None)
    records, committed = run.metrics(), run.rounds()
    wanted = committed if rounds is None else [int(k) for k in rounds]
    missing = [k for k in wanted if k not in committed]
    if missing:
        raise StoreError(f"The run in {run.folder} has no round {missing[0]} (saved rounds: {committed}).")
    if spec is None:
        return {}
    out, todo = {}, []
    for k in wanted:
        values = _ready(run, spec, k, records[k])
        if values is None:
            todo.append(k)
        else:
            out[k] = values
    for i, k in enumerate(todo):
        if cancel is not None and cancel.is_set():
            break
        tick = (lambda done, total, i=i, k=k: progress(i, len(todo), k, done, total)) if progress else None
        out[k] = _compute_and_write(run, spec, k, records[k], tick)
        if on_round is not None:
            on_round(k, out[k])
    return {k: out[k] for k in wanted if k in out}


def _compute_and_write(run, spec, k: int, record: dict, progress) -> dict:
    settings = spec.settings(record)
    start = time.perf_counter()
    values = jsonable(spec.compute(run, k, settings, progress))
    values = {name: values.get(name) for name in spec.names}
    atomic_write_json(deferred_path(run.folder, k), {
        "schema_version": SCHEMA_VERSION, "round": int(k), "weights_sha256": weights_sha256(run.round_path(k)),
        "settings": settings, "metrics": values, "seconds": round(time.perf_counter() - start, 3)})
    return values


def files(folder) -> list[str]:
    """The names in `folder` that look like deferred-metrics files (by name only)."""
    return sorted(p.name for p in Path(folder).iterdir() if FILE_RE.match(p.name))


def _check_file(run, spec, records: dict, committed: list, name: str) -> None:
    """StoreError unless the deferred-metrics file `name` is one smeme writes for a committed round."""
    k = int(FILE_RE.match(name).group(1))
    if name != deferred_path(".", k).name or k not in committed:
        raise StoreError(f"it holds {name}, deferred metrics of a round that is not saved in it")
    if spec is None:
        raise StoreError(f"it holds {name}, but this kind of run defers no metrics")
    _read_checked(run, spec, k, records[k])


def check_files(run) -> None:
    """Every deferred-metrics file in the run's folder passes check_record for a committed
    round of a kind that defers metrics (a bundle's import); StoreError naming the first that does not."""
    spec, records, committed = getattr(run, "deferred_metrics", None), run.metrics(), run.rounds()
    for name in files(run.folder):
        _check_file(run, spec, records, committed, name)


def packable(run) -> list[str]:
    """The deferred-metrics files of the run that a bundle carries: those check_files accepts
    (a damaged or stale one is left out: it is computed again)."""
    spec, records, committed = getattr(run, "deferred_metrics", None), run.metrics(), run.rounds()
    keep = []
    for name in files(run.folder):
        try:
            _check_file(run, spec, records, committed, name)
        except (StoreError, OSError):
            continue
        keep.append(name)
    return keep
