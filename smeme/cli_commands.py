"""What each `smeme` subcommand does, once smeme/cli.py has parsed its options: one handler
per subcommand (`cmd_<name>(args) -> exit status`) and the file helpers they share.

Handlers import what they need when they run, so a command loads only its own modules.
Errors are CliError (bad input, one sentence); smeme.cli.main turns every error into one line
on standard error and an exit status.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import sys
import time

from .progress import Bar

MAX_NOISE_NUMBERS = 2 ** 28    # sample: n x steps x features of fixed noise held at once (1 GiB)
IMAGE_RUNS = ("digits", "sd")  # the run kinds `grid` draws


class CliError(Exception):
    """Bad command-line input (exit 2)."""


# -- small helpers ---------------------------------------------------------------------------
def _write_text_atomic(path: str, text: str) -> None:
    from .store import atomic_write_bytes

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CliError(f"Cannot write '{path}': it is a folder; give a file name, e.g. '{os.path.join(path, 'out.csv')}'.")
    if not os.path.isdir(folder):
        raise CliError(f"Cannot write '{path}': the folder {folder} does not exist.")
    try:
        atomic_write_bytes(path, text.encode())
    except OSError as exc:
        problem = write_problem(exc, path)
        if problem is None:
            raise
        raise CliError(problem) from None


_TEMP_NAME = re.compile(r"^\.(?P<name>.+?)\.(?:[A-Za-z0-9_]{8}\.tmp|[a-z]+-[A-Za-z0-9_]+)$")
_WHY_NOT_WRITTEN = {errno.EROFS: "is read-only",
                    errno.EACCES: "does not let smeme write in it (permission denied)",
                    errno.EPERM: "does not let smeme write in it (operation not permitted)",
                    errno.ENOENT: "does not exist or does not accept new files",
                    errno.ENOTDIR: "is not a folder"}


def write_problem(exc: OSError, target=None) -> str | None:
    """One sentence for a failed write or folder creation, naming the file or folder meant
    (never a temp file's name) and why its folder refused it; None for other errors."""
    why = _WHY_NOT_WRITTEN.get(exc.errno)
    path = target if target is not None else exc.filename
    if why is None or path is None:
        return None
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    temp = _TEMP_NAME.match(name)
    if temp and target is None:
        path = os.path.join(folder, temp.group("name"))
    if exc.errno == errno.ENOENT and target is None and not os.path.isdir(folder):
        return f"Cannot read or create '{path}': its folder {folder} does not exist."
    if name == ".lock":  # the store's lock file: the run folder itself refused a write
        return f"Cannot write in the run folder {folder}: it {why}."
    return f"Cannot save '{path}': its folder {folder} {why}."


def _points_csv(columns, values) -> str:
    """A CSV of `values` (n, len(columns)) under a header of `columns`, floats to 9 significant
    digits and NaN as an empty field: what pandas' to_csv(index=False, float_format='%.9g')
    writes, without importing pandas (0.6 CPU-s at start-up)."""
    import numpy as np

    values = np.asarray(values)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([str(c) for c in columns])
    if np.issubdtype(values.dtype, np.floating):
        writer.writerows([["" if v != v else f"{v:.9g}" for v in row] for row in values.tolist()])
    else:
        writer.writerows(values.tolist())
    return buf.getvalue()


def read_points(path: str, columns: list[str]):
    """The run's columns of a points CSV as a float array; one clear sentence if unusable."""
    import numpy as np
    import pandas as pd

    from .data.csv import MAX_ABS, MAX_FILE_BYTES  # MAX_ABS: larger values overflow standardising
    from .safe_io import read_capped_bytes

    if os.path.isdir(path):
        raise CliError(f"The points file '{path}' is a folder, not a CSV file.")
    if not os.path.lexists(path):
        raise CliError(f"The points file '{path}' does not exist.")
    blob = read_capped_bytes(path, MAX_FILE_BYTES, CliError, f"The points file '{path}'")  # no FIFO, device
    try:
        frame = pd.read_csv(io.BytesIO(blob))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise CliError(f"Cannot read '{path}' as CSV ({str(exc).strip().splitlines()[0]}).") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CliError(f"'{path}' lacks the run's column(s) {', '.join(missing)} (it has: {', '.join(map(str, frame.columns))}).")
    if len(frame) == 0:
        raise CliError(f"'{path}' holds no rows.")
    for c in columns:
        values = pd.to_numeric(frame[c], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise CliError(f"Row {row + 2} of '{path}' has a non-numeric or non-finite value in column '{c}': {frame[c].iloc[row]!r}.")
        huge = np.abs(values.to_numpy(dtype=float)) > MAX_ABS
        if huge.any():
            row = int(np.flatnonzero(huge)[0])
            raise CliError(f"Row {row + 2} of '{path}' holds {values.iloc[row]:g} in column '{c}', too large for the "
                           f"model (values must be at most {MAX_ABS:g} in magnitude).")
        frame[c] = values
    return frame, frame[columns].to_numpy(dtype=np.float64)


def _parse_value(text: str):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # a nested value is refused by the data set's own check
        return text


_HEADLINE = ("on_support", "entropy_knn", "entropy_knn_on_support", "cross_entropy_pfode", "surprise_pre")


def _format_metrics(metrics: dict) -> str:
    """The headline numbers of a round, plus each category's shares, on one line."""
    parts = [f"{key}={metrics[key]:.4g}" for key in _HEADLINE
             if isinstance(metrics.get(key), (int, float)) and not isinstance(metrics.get(key), bool)]
    for category, shares in (metrics.get("shares") or {}).items():
        if isinstance(shares, dict):
            inner = ",".join(f"{name}:{v['share']:.3f}" for name, v in shares.items()
                             if isinstance(v, dict) and isinstance(v.get("share"), (int, float)))
            if inner:
                parts.append(f"{category}=[{inner}]")
    closed = metrics.get("closed_form") or {}
    if isinstance(closed.get("sparse_share"), (int, float)):
        parts.append(f"closed_form_sparse={closed['sparse_share']:.3f}")
    return " ".join(parts)


_OWN_OPTIONS = {"n": "--n", "seed": "--seed", "name": "--dataset", "path": "--csv"}  # not --data-param keys


# -- commands ------------------------------------------------------------------------------------
def cmd_pretrain(args) -> int:
    from .pipeline import pretrain_run

    params = {}
    for item in args.data_param or []:
        if "=" not in item:
            raise CliError(f"--data-param needs KEY=VALUE, got '{item}'.")
        key, value = item.split("=", 1)
        if key in _OWN_OPTIONS:
            raise CliError(f"--data-param {key}=... is set with its own option, {_OWN_OPTIONS[key]}.")
        params[key] = _parse_value(value)
    if args.dataset == "csv":
        if not args.csv:
            raise CliError("The csv data set needs --csv PATH.")
        params["path"] = args.csv
    elif args.csv:
        raise CliError(f"--csv only applies to --dataset csv, not {args.dataset}.")
    run = pretrain_run(args.run, args.dataset, dataset_params=params, n=args.n, steps=args.steps,
                       seed=args.seed, progress=Bar("pretrain", None if not args.quiet else False),
                       force=args.force, preset=args.preset)
    metrics = run.metrics().get(0, {})
    train = metrics.get("train", {})
    print(f"round 0 saved in {run.folder}: trained {train.get('steps')} steps in {train.get('seconds')} s "
          f"(final loss {train.get('final_loss', float('nan')):.4f}) {_format_metrics(metrics)}".rstrip())
    return 0


def cmd_explore(args) -> int:
    import dataclasses

    from .explore import ExploreConfig, run_rounds
    from .store import Run

    run = Run.open(args.run)
    names = {f.name for f in dataclasses.fields(ExploreConfig)}
    wanted = {"lam": args.lam, "solver": args.solver, "seed": args.seed, "lam_schedule": args.lam_schedule,
              "allow_lam_one": args.allow_lam_one or None, "iterations": args.iterations,
              "reward_target": args.reward_target, "t_r": args.t_r, "ess_fallback": args.ess_fallback,
              "max_validity_drop": args.max_validity_drop, "likelihood_ratio_share": args.likelihood_ratio_share,
              "likelihood_ratio_max_features": args.likelihood_ratio_max_features}
    kwargs = {}
    for key, value in wanted.items():
        if value is None:
            continue
        if key not in names:
            raise CliError(f"This smeme's explore has no setting '{key}'.")
        kwargs[key] = value
    for key in ("ess_fallback", "likelihood_ratio_max_features"):
        if kwargs.get(key) == "none":  # switched off: ExploreConfig's None
            kwargs[key] = None
    if args.density_metrics == "now":
        kwargs["metrics_logp"] = True
    config = ExploreConfig(**{**run.domain.explore_defaults(), **kwargs})

    def on_round(k, metrics):
        print(f"round {k}: {_format_metrics(metrics)}", flush=True)

    bar = Bar("explore", None if not args.quiet else False)

    def on_iteration(k, i, total, loss):
        bar.label = f"round {k}"
        bar(i, total, loss)

    with run.lock():
        run_rounds(run, args.rounds, config, on_iteration=on_iteration, on_round=on_round)
    return 0


def cmd_sample(args) -> int:
    from .pipeline import sample_run
    from .store import Run

    run = Run.open(args.run)
    numbers = args.n * args.steps * len(run.domain.columns)
    if numbers > MAX_NOISE_NUMBERS:
        raise CliError(f"{args.n:,} samples x {args.steps:,} steps x {len(run.domain.columns)} features need "
                       f"{numbers:,} noise numbers, more than the limit of {MAX_NOISE_NUMBERS:,}; "
                       "ask for fewer samples or steps.")
    raw = sample_run(run, args.round, args.n, seed=args.seed, steps=args.steps,
                     progress=Bar("sample", None if not args.quiet else False))
    raw = raw.reshape(len(raw), -1)
    _write_text_atomic(args.out, _points_csv(run.domain.columns, raw))
    return 0


def cmd_logp(args) -> int:
    import numpy as np

    from .pipeline import logp_run
    from .store import Run

    run = Run.open(args.run)
    frame, raw = read_points(args.points, list(run.domain.columns))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # the check below names the rows
        logp = logp_run(run, args.round, raw)
    bad = np.flatnonzero(~np.isfinite(logp))
    if len(bad):
        raise CliError(f"The model's log-density is not finite at {len(bad):,} of the {len(logp):,} points of "
                       f"'{args.points}' (first: row {bad[0] + 2}), too far from the data for the "
                       "PF-ODE; nothing was written.")
    frame["logp"] = logp
    buf = io.StringIO()
    frame.to_csv(buf, index=False, float_format="%.9g")
    _write_text_atomic(args.out, buf.getvalue())
    return 0


def cmd_report(args) -> int:
    from .images.grid import open_any_run

    run = open_any_run(args.run)  # a feature run or a Stable Diffusion run
    metrics = run.all_metrics()  # with the deferred metrics computed so far
    dataset = run.config["dataset"].get("name") if "dataset" in run.config else run.config.get("kind")
    report = {"run": os.fspath(run.folder), "dataset": dataset,
              "rounds": {str(k): metrics.get(k, {}) for k in run.rounds()}}
    print(json.dumps(report, indent=2, allow_nan=False))
    return 0


def cmd_tilt(args) -> int:
    from .explore import ExploreConfig
    from .store import Run
    from .tilt import check_t_r, run_exact_rounds

    if args.t_r is not None:
        try:
            check_t_r([args.t_r])
        except ValueError as exc:
            raise CliError(f"--t-r {args.t_r:g}: {exc}") from None
    run = Run.open(args.run)
    start = run.latest_round if args.round is None else args.round
    if start not in run.rounds():
        raise CliError(f"The run has no round {start} (it has {', '.join(map(str, run.rounds()))}).")
    config = ExploreConfig(lam=args.lam, **({} if args.t_r is None else {"t_r": args.t_r}),
                           **({} if args.reward_target is None else {"reward_target": args.reward_target}))
    lams = [config.lam_at(k) for k in range(1, args.rounds + 1)]
    targets = [("data", 0.0)] + ([("smoothed", config.t_r)] if args.reward_target == "smoothed" else [])
    for target, t_r in targets:  # the paper's target, and the smoothed one beside it when asked for
        rows = run_exact_rounds(run, lams, t_r, start, resolution=args.resolution,
                                progress=Bar("log-density", None if not args.quiet else False))
        for row in rows:
            print(json.dumps({"target": target, **row}, allow_nan=False), flush=True)
    return 0


def round_list(text: str) -> list[int]:
    """--rounds '0,1,2' -> [0, 1, 2]; CliError (one sentence) for anything else."""
    try:
        rounds = [int(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise CliError(f"--rounds needs comma-separated round numbers like 0,1,2, got '{text}'.") from None
    if not rounds:
        raise CliError("--rounds names no round; give e.g. 0,1,2.")
    return rounds


def cmd_grid(args) -> int:
    from .images.grid import open_any_run, save_grid

    rounds = round_list(args.rounds)
    run = open_any_run(args.run)
    kind = run.config.get("kind") or run.config.get("dataset", {}).get("name")
    if kind not in IMAGE_RUNS:
        raise CliError(f"grid draws image runs (digits or Stable Diffusion), but {args.run} is a {kind} run; "
                       "use 'smeme sample' for its points.")
    save_grid(run, rounds, args.n, args.seed, args.out)
    return 0


def cmd_export(args) -> int:
    from .bundle import export_run

    print(f"bundle written to {export_run(args.run, args.out)}")
    return 0


def cmd_import(args) -> int:
    from .bundle import import_bundle

    if args.runs is None:
        from .services.settings import runs_dir

        args.runs = runs_dir()
    print(f"run imported into {import_bundle(args.bundle, args.runs, name=args.name, overwrite=args.force)}")
    return 0


def cmd_budget(args) -> int:
    from .budget import budget_sweep, explore_config_for, parse_rounds
    from .store import Run

    ks = parse_rounds(args.rounds)
    config = explore_config_for(Run.open(args.run), lam=args.lam, seed=args.seed, trajectories=args.trajectories,
                                steps=args.solver_steps, metrics_n=args.metrics_n,
                                metrics_logp=False if args.no_logp else None)
    bar = Bar("budget", None if not args.quiet else False)
    started = time.monotonic()
    said = set()

    def progress(index, k, r, i, total):
        bar.label = f"K={k} round {r}"
        bar(i, total)
        if not bar.enabled and not args.quiet and (k, r) not in said:  # a log or a pipe: one line a round
            said.add((k, r))
            print(f"budget: K = {k} ({index + 1} of {len(ks)}), round {r} of {k} "
                  f"({time.monotonic() - started:.0f} s so far)", file=sys.stderr, flush=True)

    budget_sweep(args.run, args.iterations, ks, config, progress=progress, force=args.force,
                 on_result=lambda row: print(json.dumps(row, allow_nan=False), flush=True))
    return 0


def cmd_sd_explore(args) -> int:
    from .images.sd_explore import sd_explore_command

    sd_explore_command(vars(args))
    return 0


def cmd_metrics(args) -> int:
    from .deferred import measure, pending
    from .store import open_run

    run = open_run(args.run)
    rounds = None if args.rounds is None else round_list(args.rounds)
    todo = set(pending(run, rounds))
    bar = Bar("metrics", None if not args.quiet else False)

    def progress(index, count, k, done, total):
        bar.label = f"round {k} ({index + 1} of {count})"
        bar(done, total)

    for k, values in measure(run, rounds, progress=progress).items():
        print(json.dumps({"round": k, **values, "computed": k in todo}, allow_nan=False), flush=True)
    return 0
