"""What an unpacked bundle's run must hold before smeme.bundle moves it into place.

In the temporary folder an import extracted it to: config.json follows its run kind's strict
schema (smeme.run_schema), metrics.json has no unknown top-level field, every cached array
loads without pickle, every round file is one metrics.json names (and every round it names
has its file), a point run's round files hold the config's model (tensor names, shapes,
finite values, read with safetensors on the meta device, so a hostile config cannot make us
allocate its model), kept training rows match their checksum, deferred-metrics files are ones
smeme writes for a committed round and its weights (smeme.deferred.check_files), and a Stable Diffusion run's
adapters are LoRA pairs of the config's rank and targets.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .deferred import check_files as check_deferred_files
from .safe_io import read_json
from .store import (CACHE_DIR, CONFIG_FILE, METRICS_FILE, TRAINING_ROWS_FILE, StoreError, open_run, read_training_rows,
                    run_kind)

ROUND_FILE_RE = re.compile(r"^round_(\d{1,6})\.safetensors$")


class BundleError(StoreError):
    """A bundle cannot be written or is refused on import (one sentence naming why)."""


def _check_feature_run(folder: Path) -> None:
    import torch
    from safetensors import SafetensorError, safe_open

    from .store import Run

    run = Run.open(folder)
    run.domain  # the data set's domain rebuilds from the config
    _check_round_files(folder, run.metrics(), first=0)
    _check_training_rows(folder, run)
    check_deferred_files(run)
    try:
        with torch.device("meta"):  # shapes only: a hostile config cannot make us allocate its model
            model = run.new_model()
    except (RuntimeError, NotImplementedError):  # a model that computes while it initialises (digits UNet)
        model = run.new_model()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for k in run.rounds():  # names, shapes and finiteness against the config's model
        where = f"round_{k}.safetensors"
        try:
            with safe_open(run.round_path(k), framework="pt") as f:
                names = set(f.keys())
                if names != set(expected):
                    missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
                    raise BundleError(f"{where} does not hold the config's model: {len(missing)} tensor(s) "
                                      f"missing (e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})")
                for name in sorted(names):
                    shape = tuple(f.get_slice(name).get_shape())
                    if shape != expected[name]:
                        raise BundleError(f"{where}: the tensor {name!r} has shape {shape} but the config's "
                                          f"model needs {expected[name]}")
                    if not bool(torch.isfinite(f.get_tensor(name)).all()):
                        raise BundleError(f"{where}: the tensor {name!r} holds NaN or infinite values")
        except (SafetensorError, OSError, ValueError) as exc:
            if isinstance(exc, BundleError):
                raise
            raise BundleError(f"{where} is not a readable safetensors file ({exc})") from None


def _check_round_files(folder: Path, named: dict, first: int) -> None:
    """Every round file is one metrics.json names, and every round it names from `first` on
    has its file (an SD run's round 0 is its pipeline, not a file)."""
    for p in folder.iterdir():
        m = ROUND_FILE_RE.match(p.name)
        if m and (int(m.group(1)) not in named or p.name != f"round_{int(m.group(1))}.safetensors"):
            raise BundleError(f"it holds {p.name}, a round that its {METRICS_FILE} does not name")
    missing = sorted(k for k in named if k >= first and not (folder / f"round_{k}.safetensors").is_file())
    if missing:
        raise BundleError(f"its {METRICS_FILE} names round {missing[0]}, but round_{missing[0]}.safetensors "
                          "is not in it")


def _check_training_rows(folder: Path, run) -> None:
    """A csv run's kept rows match the checksum and shape its config records; no other run
    holds rows."""
    dataset = run.config["dataset"]
    record = dataset.get("training_rows")
    if record is None:
        if os.path.lexists(folder / TRAINING_ROWS_FILE):
            raise BundleError(f"it holds {TRAINING_ROWS_FILE}, which its {CONFIG_FILE} does not record")
        return
    if dataset.get("name") != "csv":
        raise BundleError(f"its {CONFIG_FILE} records training rows, which only csv runs keep")
    rows = read_training_rows(folder, record)
    if rows.shape[1] != len(run.domain.columns):
        raise BundleError(f"{TRAINING_ROWS_FILE} has {rows.shape[1]} columns but the data set has "
                          f"{len(run.domain.columns)}")


def _check_sd_run(folder: Path) -> None:
    """An SD run's adapters checked without its pipeline: LoRA pairs of the config's rank."""
    run = open_run(folder)
    _check_round_files(folder, run.metrics(), first=1)
    check_deferred_files(run)
    if os.path.lexists(folder / TRAINING_ROWS_FILE):
        raise BundleError(f"it holds {TRAINING_ROWS_FILE}, which a Stable Diffusion run does not keep")
    rank = run.sd_config.lora_rank
    targets = tuple(run.sd_config.lora_targets)
    stray = sorted(set(ROUND_FILE_RE.match(p.name).group(1) for p in folder.iterdir() if ROUND_FILE_RE.match(p.name))
                   - {str(k) for k in run.rounds()})
    if stray:
        raise BundleError(f"round {stray[0]} of the Stable Diffusion run does not follow its earlier rounds")
    for k in run.rounds()[1:]:
        where = f"round_{k}.safetensors"
        state = run.read_adapter(k)
        if not state:
            raise BundleError(f"{where} holds no tensors")
        for name, tensor in state.items():
            module, _, kind = name.rpartition(".lora_")
            if kind not in ("A.weight", "B.weight") or not module.endswith(targets):
                raise BundleError(f"{where} holds the tensor {name!r}, which is not a LoRA weight of the "
                                  f"config's targets {list(targets)}")
            rank_dim = 0 if kind == "A.weight" else 1
            if tensor.dim() < 2 or tensor.shape[rank_dim] != rank:
                raise BundleError(f"{where}: the tensor {name!r} has shape {tuple(tensor.shape)}, "
                                  f"not that of a rank-{rank} LoRA weight as the config says")
            partner = f"{module}.lora_{'B' if kind == 'A.weight' else 'A'}.weight"
            if partner not in state:
                raise BundleError(f"{where} holds {name!r} without its partner {partner!r}")
            if not bool(tensor.isfinite().all()):
                raise BundleError(f"{where}: the tensor {name!r} holds NaN or infinite values")


def check_run(folder: Path) -> None:
    from .run_schema import check_point_config, check_sd_config

    cfg = read_json(folder / CONFIG_FILE, BundleError, CONFIG_FILE)
    if not isinstance(cfg, dict):
        raise BundleError(f"its {CONFIG_FILE} does not hold a JSON object")
    if os.path.lexists(folder / METRICS_FILE):
        metrics = read_json(folder / METRICS_FILE, BundleError, METRICS_FILE)
        unknown = sorted(set(metrics) - {"schema_version", "rounds"}) if isinstance(metrics, dict) else ["(not an object)"]
        if unknown:
            raise BundleError(f"its {METRICS_FILE} has the unknown top-level field {unknown[0]!r}")
    for p in (folder / CACHE_DIR).glob("*") if (folder / CACHE_DIR).is_dir() else ():
        try:
            np.load(p, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            raise BundleError(f"the cached array {CACHE_DIR}/{p.name} is not a plain .npy array "
                              "(arrays that need pickle are refused)") from None
    kind = None
    try:
        kind = "sd" if cfg.get("kind") == "sd" else run_kind(folder)
        (check_sd_config if kind == "sd" else check_point_config)(cfg)
        (_check_sd_run if kind == "sd" else _check_feature_run)(folder)
    except BundleError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a hostile run trips, it is refused in one sentence
        # the run's own messages name the temporary folder; name the member instead
        text = " ".join(str(exc).replace(f" in {folder}", "").replace(str(folder), "the bundle").split())
        if not isinstance(exc, StoreError):  # every kind's errors are StoreErrors
            text = f"its run cannot be opened ({type(exc).__name__}: {text})"
        raise BundleError(text.rstrip(".")) from None
