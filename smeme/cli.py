"""`python -m smeme` / `smeme`: pretrain, explore, sample, logp, report, tilt, grid, export, import,
budget, sd-explore; every subcommand's options are defined here.

Errors: one sentence on standard error and a non-zero exit status (2 bad input, 1 failure,
130 interrupted), never a traceback. Output files are written atomically, so a failed
command leaves every existing file as it was.
"""
from __future__ import annotations

import argparse
import csv
import errno
import io
import json
import os
import re
import sys
import time

from . import images  # noqa: F401  (registers the digits data set and the image model kinds)
from .progress import Bar

EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130

# Limits on numbers that size an allocation or a loop (README, "CLI limits").
MAX_SAMPLES = 100_000          # sample --n
MAX_SAMPLE_STEPS = 1_000       # sample --steps (DDPM steps)
MAX_NOISE_NUMBERS = 2 ** 28    # sample: n x steps x features of fixed noise held at once (1 GiB)
MAX_DATA_ROWS = 1_000_000      # pretrain --n (as a CSV's row limit)
MAX_TRAIN_STEPS = 1_000_000    # pretrain --steps
MAX_ROUNDS = 100               # explore --rounds, tilt --rounds
MAX_ITERATIONS = 10_000        # explore --iterations
MAX_RESOLUTION = 1_000         # tilt --resolution (points per axis)
MAX_GRID_COLUMNS = 64          # grid --n
MAX_THREADS = 256              # --threads
MAX_SEED = 2 ** 32 - 1         # --seed
MAX_ROUND = 10 ** 9            # --round (a round number; larger ones cannot exist)


class CliError(Exception):
    """Bad command-line input (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        command = " ".join(self.prog.split()[1:])  # prog is 'smeme' or 'smeme <command>'
        hint = f"python -m smeme {command} --help" if command else "python -m smeme --help"
        raise CliError(f"{message[0].upper()}{message[1:]} (see '{hint}').")


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


def _frame_csv(columns, values, extra: dict | None = None) -> str:
    import pandas as pd

    frame = pd.DataFrame(values, columns=list(columns))
    for name, col in (extra or {}).items():
        frame[name] = col
    buf = io.StringIO()
    frame.to_csv(buf, index=False, float_format="%.9g")
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
              "reward_target": args.reward_target, "t_r": args.t_r}
    kwargs = {}
    for key, value in wanted.items():
        if value is None:
            continue
        if key not in names:
            raise CliError(f"This smeme's explore has no setting '{key}'.")
        kwargs[key] = value
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
    _write_text_atomic(args.out, _frame_csv(run.domain.columns, raw))
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


def cmd_grid(args) -> int:
    from .images.grid import open_any_run, save_grid

    try:
        rounds = [int(r) for r in args.rounds.split(",") if r.strip()]
    except ValueError:
        raise CliError(f"--rounds needs comma-separated round numbers like 0,1,2, got '{args.rounds}'.") from None
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


IMAGE_RUNS = ("digits", "sd")


# -- parser ------------------------------------------------------------------------------------------
def cmd_sd_explore(args) -> int:
    from .images.sd_explore import sd_explore_command

    sd_explore_command(vars(args))
    return 0


def _whole_number(text: str) -> int:
    """int('12') or a whole float such as '1e6'; ArgumentTypeError otherwise."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value.is_integer():  # also nan and inf
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{_shown(text)}'")
    return int(value)


def _shown(text: str, limit: int = 24) -> str:
    """The text as typed, cut to `limit` characters for a message."""
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _number_given(value: int, text: str) -> str:
    """How a message shows a number given on the command line: with thousands separators
    unless that is longer than the text typed (1e300 stays '1e300')."""
    grouped = f"{value:,}"
    return grouped if len(grouped) <= max(len(text), 25) else f"'{_shown(text.strip())}'"


def _int_in(low: int, high: int):
    """An argparse type: a whole number in [low, high], the limit named in the message."""
    def parse(text: str) -> int:
        value = _whole_number(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a number of at least {low}, got {_number_given(value, text)}")
        if value > high:
            raise argparse.ArgumentTypeError(f"expected a number of at most {high:,} (the CLI's limit), "
                                             f"got {_number_given(value, text)}")
        return value
    parse.__name__ = "whole number"  # argparse names the type in some messages
    return parse


_seed = _int_in(0, MAX_SEED)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--threads", type=_int_in(1, MAX_THREADS), default=argparse.SUPPRESS,
                        help="torch threads (default: $SMEME_THREADS or 1, the measured best)")
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar")
    parser = _Parser(prog="smeme", description="S-MEME: score-based maximum entropy manifold exploration.",
                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _add_pretrain(sub, common)
    _add_explore(sub, common)
    _add_sample(sub, common)
    _add_logp(sub, common)
    _add_report(sub, common)
    _add_tilt(sub, common)
    _add_grid(sub, common)
    _add_export(sub, common)
    _add_import(sub, common)
    _add_budget(sub, common)
    _add_sd_explore(sub, common)
    _add_metrics(sub, common)
    return parser


def _add_pretrain(sub, common) -> None:
    p = sub.add_parser("pretrain", parents=[common], help="train a diffusion model on a data set (round 0)")
    p.add_argument("--dataset", required=True, choices=["toy", "triangles", "digits", "csv"], help="the data set")
    p.add_argument("--csv", help="the CSV file for --dataset csv")
    p.add_argument("--steps", type=_int_in(1, MAX_TRAIN_STEPS), help="training steps (default: the data set's preset)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the data set and the training (default: 0)")
    p.add_argument("--n", type=_int_in(1, MAX_DATA_ROWS), help="data set size (default: the data set's own)")
    p.add_argument("--preset", help="model/training preset (default: the data set's; 'tiny' for quick tests)")
    p.add_argument("--data-param", action="append", metavar="KEY=VALUE", help="data set parameter, repeatable")
    p.add_argument("--run", required=True, help="run folder to create")
    p.add_argument("--force", action="store_true", help="replace an existing run in --run (only once the new one is saved)")
    p.set_defaults(func=cmd_pretrain)


def _add_explore(sub, common) -> None:
    p = sub.add_parser("explore", parents=[common], help="S-MEME rounds, continuing from the last finished round")
    p.add_argument("--run", required=True, help="the run folder (its rounds are added to it)")
    p.add_argument("--rounds", required=True, type=_int_in(1, MAX_ROUNDS), help="how many rounds to add")
    p.add_argument("--lam", type=float, help="lambda, the exploration strength per round, in (0, 1) "
                   "(default: the data set's, 0.1 for most)")
    p.add_argument("--solver", choices=["adjoint", "student-teacher"],
                   help="the fine-tuning solver (default: adjoint, Adjoint Matching)")
    p.add_argument("--seed", type=_seed, help="seed of the rounds' noise (default: 0)")
    p.add_argument("--iterations", type=_int_in(1, MAX_ITERATIONS),
                   help="solver iterations per round (default: the data set's)")
    p.add_argument("--lam-schedule", choices=["constant", "decreasing"],
                   help="lambda from round to round: the same, or lambda / k^0.6 in round k (default: constant)")
    p.add_argument("--allow-lam-one", action="store_true", help="allow lambda = 1 (Theorem 5.2's one-step case)")
    p.add_argument("--reward-target", choices=["data", "smoothed"], dest="reward_target",
                   help="'data': the paper's reward -lam log p at the data end (score at t_r, deconvolved); "
                        "'smoothed' (default): -lam log p(x, t_r), a different, smoothed target")
    p.add_argument("--t-r", type=float, dest="t_r", help="noise level the reward's score is read at (default: 0.05)")
    p.add_argument("--density-metrics", choices=["later", "now"], default="later",
                   help="the PF-ODE cross-entropy and surprise: 'later' (default) leaves them out of the rounds' "
                        "time ('smeme metrics' computes them on request); 'now' computes each before its round is saved")
    p.set_defaults(func=cmd_explore)


def _add_sample(sub, common) -> None:
    p = sub.add_parser("sample", parents=[common], help="samples in the data's own columns and units")
    p.add_argument("--run", required=True, help="the run folder")
    p.add_argument("--round", type=_int_in(0, MAX_ROUND), help="round (default: the latest)")
    p.add_argument("--n", required=True, type=_int_in(1, MAX_SAMPLES), help="how many samples")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the sampling noise (default: 0)")
    p.add_argument("--steps", type=_int_in(1, MAX_SAMPLE_STEPS), default=100, help="DDPM steps (default: 100)")
    p.add_argument("--out", required=True, help="the CSV file to write")
    p.set_defaults(func=cmd_sample)


def _add_logp(sub, common) -> None:
    p = sub.add_parser("logp", parents=[common], help="the model's log-density of points, in the data's units")
    p.add_argument("--run", required=True, help="the run folder")
    p.add_argument("--round", type=_int_in(0, MAX_ROUND), help="round (default: the latest)")
    p.add_argument("--points", required=True, help="a CSV of points in the data's columns")
    p.add_argument("--out", required=True, help="the CSV file to write (the points and their log-density)")
    p.set_defaults(func=cmd_logp)


def _add_report(sub, common) -> None:
    p = sub.add_parser("report", parents=[common], help="JSON of the per-round metrics")
    p.add_argument("--run", required=True, help="the run folder")
    p.set_defaults(func=cmd_report)


def _add_tilt(sub, common) -> None:
    p = sub.add_parser("tilt", parents=[common], help="exact S-MEME rounds of a 2-D run's density on a grid "
                       "(what a perfect solver would reach), JSON lines")
    p.add_argument("--run", required=True, help="the run folder (a 2-D run)")
    p.add_argument("--round", type=_int_in(0, MAX_ROUND), help="the round to start from (default: the latest)")
    p.add_argument("--rounds", required=True, type=_int_in(1, MAX_ROUNDS), help="how many exact rounds")
    p.add_argument("--lam", type=float, default=0.1, help="lambda per round, in (0, 1) (default: 0.1)")
    p.add_argument("--reward-target", choices=["data", "smoothed"], dest="reward_target",
                   help="'smoothed' also prints the smoothed reward's target (-lam log p(x, t_r)) beside the paper's "
                        "(default: the paper's target only)")
    p.add_argument("--t-r", type=float, dest="t_r", help="the smoothed reward's noise level (default: explore's)")
    p.add_argument("--resolution", type=_int_in(8, MAX_RESOLUTION), default=200,
                   help="grid points per axis (default: 200)")
    p.set_defaults(func=cmd_tilt)


def _add_grid(sub, common) -> None:
    p = sub.add_parser("grid", parents=[common], help="image grid of samples per round (image runs)")
    p.add_argument("--run", required=True, help="the run folder (an image run)")
    p.add_argument("--rounds", required=True, help="comma-separated rounds, e.g. 0,1,2")
    p.add_argument("--n", type=_int_in(1, MAX_GRID_COLUMNS), default=8, help="samples per round (default: 8)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the shared noise (default: 0)")
    p.add_argument("--out", required=True, help="the image file to write")
    p.set_defaults(func=cmd_grid)


def _add_export(sub, common) -> None:
    p = sub.add_parser("export", parents=[common], help="write a run as a bundle (zip) to share it")
    p.add_argument("--run", required=True, help="the run folder")
    p.add_argument("--out", required=True, help="the bundle file to write (.zip)")
    p.set_defaults(func=cmd_export)


def _add_import(sub, common) -> None:
    p = sub.add_parser("import", parents=[common], help="add a run from a bundle (checked before anything is written)")
    p.add_argument("bundle", help="the bundle file (.zip)")
    p.add_argument("--runs", help="the runs folder (default: the app's, $SMEME_CACHE_DIR/runs)")
    p.add_argument("--name", help="the new run's folder name (default: the bundle's file name)")
    p.add_argument("--force", action="store_true", help="replace an existing run of that name")
    p.set_defaults(func=cmd_import)


def _add_budget(sub, common) -> None:
    p = sub.add_parser("budget", parents=[common], help="one budget of solver iterations over K = 1, 2, ... "
                       "rounds (the paper's Figure 2d), one JSON line per K")
    p.add_argument("--run", required=True, help="the run whose round 0 every K starts from (never changed)")
    p.add_argument("--iterations", required=True, type=_int_in(1, MAX_ROUNDS * MAX_ITERATIONS),
                   help="solver iterations in all (N)")
    p.add_argument("--rounds", default="1,2,3,4", help="the K's, comma-separated (default: 1,2,3,4)")
    p.add_argument("--lam", type=float, help="lambda per round, in (0, 1) (default: the data set's, 0.1 for most)")
    p.add_argument("--seed", type=_seed, help="seed of the rounds' noise (default: 0)")
    p.add_argument("--force", action="store_true", help="redo the branches of an earlier sweep with these settings")
    # solver and metric sizes (CI-sized sweeps; the paper-sized one in BENCHMARKS.md)
    p.add_argument("--trajectories", type=_int_in(1, MAX_SAMPLES),
                   help="trajectories per solver iteration (default: the data set's explore default)")
    p.add_argument("--solver-steps", type=_int_in(1, MAX_SAMPLE_STEPS),
                   help="DDPM steps of each trajectory (default: the data set's explore default)")
    p.add_argument("--metrics-n", type=_int_in(1, MAX_SAMPLES),
                   help="samples for each round's metrics (default: the data set's explore default)")
    p.add_argument("--no-logp", action="store_true",
                   help="skip the PF-ODE cross-entropy metrics (the k-NN entropy and the shares remain)")
    p.set_defaults(func=cmd_budget)


def _add_sd_explore(sub, common) -> None:
    p = sub.add_parser("sd-explore", parents=[common], help="S-MEME rounds on a local Stable Diffusion "
                       "pipeline (LoRA, Adjoint Matching); multi-process: torchrun --nproc_per_node N -m smeme sd-explore")
    p.add_argument("--pipeline", help="local diffusers Stable Diffusion folder (or a model in the local HF cache)")
    p.add_argument("--run", "--run-folder", dest="run", required=True,
                   help="run folder (created on first use); --run-folder under torchrun, whose own --run-path takes --run")
    p.add_argument("--rounds", type=_int_in(1, MAX_ROUNDS), default=3)
    for name, kind in (("--prompt", str), ("--lam", float), ("--lr", float), ("--guidance", float),
                       *((n, _int_in(1, MAX_ITERATIONS)) for n in ("--iterations", "--trajectories", "--steps",
                                                                   "--resolution", "--lora-rank"))):
        p.add_argument(name, type=kind)
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--sample-n", type=_int_in(1, MAX_SAMPLES), help="images per round for metrics")
    p.add_argument("--seed", type=_seed)
    p.add_argument("--inception", help="local inception-2015-12-05.pt (TorchScript) for FID")
    p.add_argument("--clip", help="local CLIP folder for the CLIP score")
    p.add_argument("--no-metrics", action="store_true", help="skip the per-round image metrics (samples, FID, CLIP)")
    p.add_argument("--cpu", action="store_true", help="force CPU even when a GPU is present")
    p.set_defaults(func=cmd_sd_explore)


def _add_metrics(sub, common) -> None:
    p = sub.add_parser("metrics", parents=[common], help="the rounds' deferred metrics (PF-ODE cross-entropy and "
                       "surprise), computed on first request and kept in the run; one JSON line per round")
    p.add_argument("--run", required=True, help="the run folder")
    p.add_argument("--rounds", help="comma-separated rounds, e.g. 0,2 (default: every saved round)")
    p.set_defaults(func=cmd_metrics)


def cmd_metrics(args) -> int:
    from .deferred import measure, pending
    from .store import open_run

    run = open_run(args.run)
    rounds = None
    if args.rounds is not None:
        try:
            rounds = [int(r) for r in args.rounds.split(",") if r.strip()]
        except ValueError:
            raise CliError(f"--rounds needs comma-separated round numbers like 0,1,2, got '{args.rounds}'.") from None
        if not rounds:
            raise CliError("--rounds names no round; give e.g. 0,1,2 or leave it out for every round.")
    todo = set(pending(run, rounds))
    bar = Bar("metrics", None if not args.quiet else False)

    def progress(index, count, k, done, total):
        bar.label = f"round {k} ({index + 1} of {count})"
        bar(done, total)

    for k, values in measure(run, rounds, progress=progress).items():
        print(json.dumps({"round": k, **values, "computed": k in todo}, allow_nan=False), flush=True)
    return 0


def _sentence(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if text.endswith((".", "?", "!")) else text + "."


def main(argv=None) -> int:
    def fail(code: int, message: str) -> int:
        sys.stderr.write(f"smeme: error: {message}\n")
        return code

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        args.threads = getattr(args, "threads", None)
        args.quiet = getattr(args, "quiet", False)
    except CliError as exc:
        return fail(EXIT_BAD_INPUT, _sentence(exc))
    from .store import DiskFullError, RunLockedError, StoreError
    from .threads import configure

    try:
        configure(args.threads)
        return args.func(args)
    except BrokenPipeError:  # e.g. `smeme report ... | head`: the reader left; say nothing
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stdout.fileno())
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return fail(EXIT_INTERRUPTED, "Interrupted; everything saved before the interruption is kept.")
    except (RunLockedError, DiskFullError) as exc:
        return fail(EXIT_FAILURE, _sentence(exc))
    except (FileNotFoundError, NotADirectoryError) as exc:
        return fail(EXIT_BAD_INPUT, write_problem(exc) or _sentence(exc))
    except (CliError, StoreError, ValueError, IsADirectoryError) as exc:
        return fail(EXIT_BAD_INPUT, _sentence(exc))  # DataError is a ValueError
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # a write outside the store's atomic writer
            return fail(EXIT_FAILURE, f"Cannot save {exc.filename or 'a file'}: no space left on device.")
        problem = write_problem(exc)  # a read-only cache, a folder that takes no files (/proc)
        if problem is not None:
            return fail(EXIT_FAILURE, problem)
        return fail(EXIT_FAILURE, f"{type(exc).__name__}: {_sentence(exc)}")
    except Exception as exc:
        if type(exc).__name__ == "ExploreError":
            return fail(EXIT_BAD_INPUT, _sentence(exc))
        return fail(EXIT_FAILURE, f"{type(exc).__name__}: {_sentence(exc)}")


if __name__ == "__main__":
    sys.exit(main())
