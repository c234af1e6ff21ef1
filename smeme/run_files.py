"""The files inside a run folder besides its JSON: a round's weights (safetensors, checked
against the run's model on loading) and a CSV run's training rows (a plain float64 .npy whose
sha256 and shape the run's config.json records). torch and safetensors are imported where
weights are handled, so commands that fail on their input answer before paying for them."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from .fsio import StoreError, atomic_write_bytes
from .safe_io import read_capped_bytes

CONFIG_FILE = "config.json"
TRAINING_ROWS_FILE = "training_rows.npy"  # the rows a CSV run was trained on (float64, n x columns)
MAX_WEIGHTS_BYTES = 1 << 30  # a round's weights file or a cached array (the digits UNet: ~10 MB)
MAX_TRAINING_ROWS_BYTES = (512 << 20) + (1 << 20)  # 1,000,000 rows x 64 columns of float64, and a header


# -- weights ----------------------------------------------------------------------------
def _state_of(model) -> dict:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def weights_bytes(model, metadata: dict | None = None) -> bytes:
    from safetensors.torch import save

    meta = {"format": "smeme", **{k: str(v) for k, v in (metadata or {}).items()}}
    return save(_state_of(model), metadata=meta)


def save_weights(path: Path, model, metadata: dict | None = None) -> None:
    atomic_write_bytes(path, weights_bytes(model, metadata))


def load_weights_into(path: Path, model) -> None:
    """Load a safetensors file into `model`, checking it is readable, ours and the right shape."""
    import torch
    from safetensors.torch import load

    path = Path(path)
    if not os.path.lexists(path):
        raise StoreError(f"{path.name} is missing from {path.parent}.")
    blob = read_capped_bytes(path, MAX_WEIGHTS_BYTES, StoreError, f"{path.name} in {path.parent}", follow_links=False)
    try:
        tensors = load(blob)
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise StoreError(f"{path.name} in {path.parent} is damaged: it is not a readable safetensors file "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}).") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise StoreError(f"{path.name} in {path.parent} does not hold this run's model: "
                         f"{len(missing)} expected tensor(s) missing (e.g. {missing[:2]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}).")
    for name, ref in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(ref.shape):
            raise StoreError(f"{path.name} in {path.parent}: tensor '{name}' has shape {tuple(got.shape)} "
                             f"but the model in config.json needs {tuple(ref.shape)}.")
        if not torch.isfinite(got).all():
            raise StoreError(f"{path.name} in {path.parent}: tensor '{name}' holds NaN or infinite values.")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})


# -- the training rows ------------------------------------------------------------------
def training_rows_bytes(rows) -> tuple[bytes, dict]:
    """The .npy bytes of `rows` (a finite 2-D float64 array) and the record that config.json
    keeps of them: {'sha256', 'shape'}."""
    rows = np.ascontiguousarray(np.asarray(rows, dtype=np.float64))
    if rows.ndim != 2 or not rows.size or not np.all(np.isfinite(rows)):
        raise ValueError("Training rows must be a non-empty 2-D array of finite numbers.")
    buf = io.BytesIO()
    np.save(buf, rows, allow_pickle=False)
    blob = buf.getvalue()
    return blob, {"sha256": hashlib.sha256(blob).hexdigest(), "shape": [int(n) for n in rows.shape]}


def read_training_rows(folder, record) -> np.ndarray:
    """The run's TRAINING_ROWS_FILE, checked against `record` (its config's dataset.training_rows):
    a regular file (not a link) of at most MAX_TRAINING_ROWS_BYTES, with that sha256, a plain
    float64 array of that shape, finite. StoreError (one sentence) otherwise."""
    folder = Path(folder)
    where = f"{TRAINING_ROWS_FILE} in {folder}"
    if not (isinstance(record, dict) and isinstance(record.get("sha256"), str)
            and isinstance(record.get("shape"), list) and len(record["shape"]) == 2
            and all(type(n) is int and n > 0 for n in record["shape"])):
        raise StoreError(f"{CONFIG_FILE} in {folder} is damaged: dataset.training_rows needs a sha256 and a "
                         "shape of two positive whole numbers.")
    blob = read_capped_bytes(folder / TRAINING_ROWS_FILE, MAX_TRAINING_ROWS_BYTES, StoreError, where,
                             follow_links=False)
    if hashlib.sha256(blob).hexdigest() != record["sha256"]:
        raise StoreError(f"{where} is damaged: its sha256 checksum differs from the one config.json records.")
    try:
        rows = np.load(io.BytesIO(blob), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise StoreError(f"{where} is damaged: it is not a plain .npy array ({exc}).") from None
    if rows.dtype != np.float64 or list(rows.shape) != record["shape"] or not np.all(np.isfinite(rows)):
        raise StoreError(f"{where} is damaged: it is not the finite float64 array of shape "
                         f"{tuple(record['shape'])} that config.json records.")
    return rows
