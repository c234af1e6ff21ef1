"""`python -m smeme` / `smeme`: pretrain, explore, sample, logp, report, tilt, grid, export, import,
budget, sd-explore; every subcommand's options are defined here, what each does in
smeme/cli_commands.py.

Errors: one sentence on standard error and a non-zero exit status (2 bad input, 1 failure,
130 interrupted), never a traceback. Output files are written atomically, so a failed
command leaves every existing file as it was.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys

from .cli_commands import (CliError, cmd_budget, cmd_explore, cmd_export, cmd_grid, cmd_import, cmd_logp,
                           cmd_metrics, cmd_pretrain, cmd_report, cmd_sample, cmd_sd_explore, cmd_tilt,
                           write_problem)

EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130

# Limits on numbers that size an allocation or a loop (README, "CLI limits"); the limit on
# fixed noise held at once is cli_commands.MAX_NOISE_NUMBERS.
MAX_SAMPLES = 100_000          # sample --n
MAX_SAMPLE_STEPS = 1_000       # sample --steps (DDPM steps)
MAX_DATA_ROWS = 1_000_000      # pretrain --n (as a CSV's row limit)
MAX_TRAIN_STEPS = 1_000_000    # pretrain --steps
MAX_ROUNDS = 100               # explore --rounds, tilt --rounds
MAX_ITERATIONS = 10_000        # explore --iterations
MAX_RESOLUTION = 1_000         # tilt --resolution (points per axis)
MAX_GRID_COLUMNS = 64          # grid --n
MAX_THREADS = 256              # --threads
MAX_SEED = 2 ** 32 - 1         # --seed
MAX_ROUND = 10 ** 9            # --round (a round number; larger ones cannot exist)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        command = " ".join(self.prog.split()[1:])  # prog is 'smeme' or 'smeme <command>'
        hint = f"python -m smeme {command} --help" if command else "python -m smeme --help"
        raise CliError(f"{message[0].upper()}{message[1:]} (see '{hint}').")


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
_thread_count = _int_in(1, MAX_THREADS)


def _threads(text: str):
    """An argparse type: 'auto' or a whole number of threads in [1, MAX_THREADS]."""
    return "auto" if text.strip().lower() == "auto" else _thread_count(text)


_threads.__name__ = "threads"


def _share(text: str) -> float:
    """An argparse type: a share in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:  # also nan
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got '{_shown(text)}'")
    return value


def _features_or_none(text: str):
    """An argparse type: a number of features >= 1, or 'none' (returned as the string 'none')."""
    if text.strip().lower() in ("none", "off"):
        return "none"
    return _int_in(1, 1_000_000)(text)


def _share_or_none(text: str):
    """An argparse type: a share in (0, 1), or 'none' (returned as the string 'none')."""
    if text.strip().lower() in ("none", "off"):
        return "none"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:  # also nan
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, or 'none', got '{_shown(text)}'")
    return value


_share_or_none.__name__ = "share"


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--threads", type=_threads, default=argparse.SUPPRESS,
                        help="torch threads, or 'auto': two while another core is idle, else one, "
                             "re-decided as it runs (default: $SMEME_THREADS or auto)")
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
                   help="'data' (default): the paper's reward -lam log p at the data end (score at t_r, deconvolved); "
                        "'smoothed': -lam log p(x, t_r), a different, smoothed target")
    p.add_argument("--t-r", type=float, dest="t_r", help="noise level the reward's score is read at (default: 0.05)")
    p.add_argument("--ess-fallback", type=_share_or_none, dest="ess_fallback", metavar="SHARE",
                   help="a likelihood-ratio step whose weights' effective sample size falls below this share of the "
                        "trajectories goes to the adjoint term in full; 'none' tempers the weights instead "
                        "(default: 0.5)")
    p.add_argument("--lr-share", type=_share, dest="likelihood_ratio_share", metavar="SHARE",
                   help="share of the solver's stochastic steps, the earliest, that carry the likelihood-ratio term; "
                        "0: Adjoint Matching alone (default: 0.8, off above --lr-max-features columns)")
    p.add_argument("--lr-max-features", type=_features_or_none, dest="likelihood_ratio_max_features", metavar="N",
                   help="the most columns whose rounds run the likelihood-ratio term; 'none': any number "
                        "(default: 3)")
    p.add_argument("--max-validity-drop", type=_share, dest="max_validity_drop", metavar="SHARE",
                   help="a round whose on-support share falls more than this below the previous round's (0.2: 20 "
                        "points) is rejected and the previous round stays the latest; 1 turns the guard off "
                        "(default: 0.2)")
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
    from . import images  # noqa: F401  (registers the digits data set and the image model kinds)
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
