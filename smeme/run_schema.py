"""The strict schema of a run's config.json, per run kind, for runs that arrive from elsewhere.

A bundle's config.json is accepted only when every field at every level is one that smeme
itself writes for that kind of run, and no field names a file (a run keeps its own data):
- point-data and digits runs (smeme.store): the top-level sections; the data set's
  parameters (those its builder takes), its domain (exactly what the rebuilt domain writes
  back), its descriptive info (per data set), its kept training rows' record; the model
  (its builder refuses unknown settings), the schedule, the standardiser and the training
  settings;
- Stable Diffusion runs (smeme.images.sd_explore): kind, schema version, the model and
  exploration settings (each refuses unknown settings), created. The model's `source` names
  the pipeline the run was made with by a model name only (a Hugging Face id `org/name` or a
  pipeline folder's name), never by a path: export writes a pipeline folder's name, import
  refuses anything else. The pipeline is not part of the bundle.
Opening a run already in the cache is more lenient (runs made by older versions keep
working); importing is not.
"""
from __future__ import annotations

import inspect
import re

from .store import StoreError

TOP = {"schema_version", "created", "dataset", "model", "schedule", "standardizer", "train"}
DATASET = {"name", "params", "n", "seed", "columns", "domain", "info", "training_rows"}
TRAINING_ROWS = {"sha256", "shape"}
STANDARDIZER = {"mean", "std"}
# each data set's descriptive info, as its builder writes it
INFO = {"toy": {"name", "params"}, "triangles": {"name", "params", "cell_counts"},
        "csv": {"name", "params", "rows"},
        "digits": {"rare_classes", "rare_fraction", "rare_share", "n", "class_counts"}}
SD_TOP = {"kind", "schema_version", "model", "explore", "created"}
PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
MAX_SCALAR_DEPTH = 3  # parameter values: numbers, strings, or lists / dicts of them


class ConfigSchemaError(StoreError):
    """A run's config.json holds a field the schema does not know, or names a file."""


def _refuse_paths(node, where: str = "") -> None:
    stack = [(node, where)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                at = f"{where}.{key}" if where else str(key)
                if key == "path":
                    raise ConfigSchemaError(f"config.json names a file at '{at}'; a run keeps its own data and "
                                            "names no file outside it")
                stack.append((value, at))
        elif isinstance(node, list):
            stack.extend((v, where) for v in node)


def _only(d, allowed, where: str, required=()) -> dict:
    if not isinstance(d, dict):
        raise ConfigSchemaError(f"config.json's '{where}' is not a JSON object")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ConfigSchemaError(f"config.json has the unknown field '{where}.{unknown[0]}'"
                                if where else f"config.json has the unknown top-level field '{unknown[0]}'")
    missing = [k for k in required if k not in d]
    if missing:
        raise ConfigSchemaError(f"config.json lacks the field '{where}.{missing[0]}'" if where
                                else f"config.json lacks the section '{missing[0]}'")
    return d


def _plain(value, where: str, depth: int = 0) -> None:
    """A parameter value: a number, string, bool or null, or a shallow list / object of them."""
    if isinstance(value, (dict, list)):
        if depth >= MAX_SCALAR_DEPTH:
            raise ConfigSchemaError(f"config.json's '{where}' nests deeper than a setting does")
        for key, v in (value.items() if isinstance(value, dict) else enumerate(value)):
            _plain(v, f"{where}.{key}", depth + 1)


def _numbers(d: dict, where: str, whole: bool = False) -> None:
    for key, value in d.items():
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            raise ConfigSchemaError(f"config.json's '{where}.{key}' is not a {'whole ' if whole else ''}number")


def _builder_params(name: str) -> set[str]:
    """The parameters data set `name`'s builder takes (besides n and seed)."""
    from .data import _builder

    build = _builder(name)
    if name == "digits":  # the registered builder is a lazy wrapper; its target names them
        from .images.digits import make_digits as build
    params = inspect.signature(build).parameters
    return {p for p in params if p not in ("n", "seed") and params[p].kind is not inspect.Parameter.VAR_KEYWORD}


def check_point_config(cfg: dict) -> None:
    """The schema of a smeme.store run's config (toy, triangles, csv, digits, registered data
    sets); ConfigSchemaError (one sentence) for the first field it does not know."""
    from .data import domain_from_config
    from .schedule import schedule_from_config
    from .train import TrainConfig

    _refuse_paths(cfg)
    _only(cfg, TOP, "", required=("schema_version", "dataset", "model", "schedule", "standardizer"))
    ds = _only(cfg["dataset"], DATASET, "dataset", required=("name", "domain"))
    name = ds["name"]
    if not isinstance(name, str):
        raise ConfigSchemaError("config.json's 'dataset.name' is not a name")
    _numbers({k: ds[k] for k in ("n", "seed") if k in ds}, "dataset", whole=True)
    try:
        accepted = _builder_params(name)
        domain_keys = set(domain_from_config(ds["domain"]).to_config())
        schedule_keys = set(schedule_from_config(cfg["schedule"]).to_config())
        train = _only(cfg.get("train", {}), TrainConfig.setting_names(), "train")
        _numbers(train, "train")  # every training setting is a number
        TrainConfig.from_dict(train)
    except ConfigSchemaError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a hostile section trips, in one sentence
        raise ConfigSchemaError(f"config.json does not describe a run smeme knows ({type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:200]})") from None
    _only(ds.get("params", {}), accepted, "dataset.params")
    _only(ds["domain"], domain_keys, "dataset.domain")
    _only(cfg["schedule"], schedule_keys, "schedule")
    _only(cfg["standardizer"], STANDARDIZER, "standardizer", required=tuple(STANDARDIZER))
    if "training_rows" in ds:
        _only(ds["training_rows"], TRAINING_ROWS, "dataset.training_rows", required=tuple(TRAINING_ROWS))
    info = ds.get("info", {})
    known = INFO.get(name, set(info) if isinstance(info, dict) else set())  # a registered data set's own
    info = _only(info, known, "dataset.info")
    if "params" in info:
        _only(info["params"], accepted | {"n", "seed"}, "dataset.info.params")
    if not isinstance(ds.get("columns", []), list) or not all(isinstance(c, str) for c in ds.get("columns", [])):
        raise ConfigSchemaError("config.json's 'dataset.columns' is not a list of names")
    for section, value in (("dataset.params", ds.get("params", {})), ("dataset.info", info),
                           ("model", cfg["model"]), ("train", cfg.get("train", {}))):
        _plain(value, section)


def pipeline_name(source: str) -> str:
    """How a bundle names a Stable Diffusion run's pipeline: a model name as it is (`org/name`,
    `name`), a pipeline folder's path by the folder's name."""
    source = str(source).strip()
    if PIPELINE_NAME.fullmatch(source) and ".." not in source:
        return source
    return re.sub(r"[^A-Za-z0-9._-]", "-", source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]).lstrip(".-") or "pipeline"


def check_sd_config(cfg: dict) -> None:
    """The schema of a Stable Diffusion run's config (its model and explore settings check
    their own fields when the run opens); its pipeline is named by a model name, not a path."""
    _only(cfg, SD_TOP, "", required=("kind", "schema_version", "model"))
    _plain(cfg["model"], "model")
    _plain(cfg.get("explore", {}), "explore")
    source = cfg["model"].get("source", "")
    if source != "" and not (isinstance(source, str) and PIPELINE_NAME.fullmatch(source) and ".." not in source):
        raise ConfigSchemaError(f"config.json's 'model.source' is {str(source)[:60]!r}: a Stable Diffusion run names "
                                "its pipeline by a model name (org/name or a folder's name), never by a path")
