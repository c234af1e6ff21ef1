"""S-MEME on images: rounds of Adjoint Matching on Stable Diffusion (a LoRA adapter, in latent
space). The digits UNet's rounds: smeme.images.digits_rounds.

Why a kind of its own: an SD run cannot store a full model per round (the UNet alone is
3.4 GB) and has no data set or standardiser. An SD run folder holds:
    config.json                {"kind": "sd", "schema_version", "model": SDConfig, "explore": SDExploreConfig}
    round_<k>.safetensors      k >= 1: round k's LoRA adapter (peft state dict), a delta on
                               top of rounds 1..k-1 merged into the UNet (round 0 = the
                               pre-trained pipeline itself, no file)
    metrics.json               per round: Inception FID / cross-entropy and CLIP score
                               against round 0 where local weights exist, else which
                               weights are missing; loss curve; seconds
    cache/images_*.npy         decoded uint8 samples under fixed noise (grids, metrics)
An SD run is the 'sd' kind of smeme.store (SDRun, a RunFolder): opened, listed, bundled,
locked and committed by the store's code.

Round k (paper Algorithm 1 with Algorithm 2 as the solver, Appendix G scaled to LoRA):
merge round k-1's adapter into the UNet and reset the adapter to zero, so "adapter
disabled" is pi_{k-1} and the tuned model starts there. The model explored is the GUIDED one,
eps_u + w (eps_c - eps_u) with w = 8, as in the paper (section 8: the guided velocity is
fine-tuned and the tuned model sampled with the same guidance): the trajectories, the
control, the adjoint's base and the reward gradient lam * (-s_{k-1}(x, t_r)) all use the
guided eps (`guided_round_problem`). Tuning only the conditional eps while sampling with
guidance would apply w delta_c - (w - 1) delta_u: anywhere from delta_c to w delta_c of the
tilt, depending on how the adapter moves the unconditional eps (tests/test_sd_guidance.py
builds that case exactly). Cost: every solver forward runs the UNet on 2x the batch.
The control is regressed in score units (SD_CONTROL, sd_solver_config), so the tuned guided
eps's score is the tilted model's at every step: on a Gaussian latent model of equal-covariance
conditional and unconditional branches the exact tilt is its fixed point, guided and not, over
rounds (tests/test_sd_fidelity.py).

Defaults follow the paper's Appendix G (4 trajectories of 60 DDPM steps, 10 Adam steps per
iteration on batches of 8, 20 iterations per round, lambda = 0.1), scaled to LoRA:
SDExploreConfig says how.

Multi-process: `torchrun --nproc_per_node N -m smeme sd-explore --pipeline PATH --run-folder DIR
--rounds 3` (the CLI's own entry point on every rank; Accelerate reads torchrun's environment).
On CPUs, `accelerate launch --cpu --num_processes 2` starts ONE process
(Accelerate 1.15 needs mpirun for more); use `ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2
-m smeme sd-explore --cpu ...` (gloo), as tests/test_sd.py does.
Each process draws its own trajectories (seed offset by its rank); the tuned model's gradient
passes run through Accelerate's DDP wrapper (accelerator.prepare of the UNet), which averages
the LoRA gradients over the processes in buckets during the backward pass, so every rank takes
the same Adam step and the adapters stay identical; sampling and the frozen base (the
adjoint's VJPs, which DDP's reducer does not support) use the UNet itself. Rank 0 writes the
run (tests/test_sd.py launches two CPU processes and checks all three).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import fsio
from ..config import ConfigBase
from ..explore import RoundProblem, drive_rounds
from ..reward import RewardSettings, RoundReward
from ..fsio import SCHEMA_VERSION, StoreError, folder_lock
from ..store import RunFolder, run_kind
from ..sampling import FixedNoise, sample_ddpm, time_grid

from .sd import (SDConfig, SDError, SDGuidedTunedView, SDGuidedView, SDNoisePredictor, build_sd_model,
                 load_adapter_state)
from .sd_metrics import find_metric_weights, sd_metrics

KIND = "sd"


class SDRunError(StoreError, ValueError):
    """An SD run folder or request is unusable; the message names the problem."""


@dataclass
class SDExploreConfig(ConfigBase):
    """Settings of S-MEME rounds on Stable Diffusion (LoRA, guided), stored in an SD run's config.

    Args:
        lam (`float`, defaults to 0.1): lambda of every round, in (0, 1).
        t_r (`float`, defaults to 0.01):
            Diffusion time at which the previous round's guided score gives the reward, in (0, 1).
        iterations (`int`, defaults to 20): Solver iterations per round.
        trajectories (`int`, defaults to 4): Trajectories per iteration (per process when several run).
        steps (`int`, defaults to 60): DDPM steps of each trajectory.
        adam_steps (`int`, defaults to 10): Adam steps per iteration on the same trajectories.
        loss_steps (`int`, defaults to 2):
            Time steps per Adam step, so a batch holds trajectories x loss_steps = 8 predictions.
        lr (`float`, defaults to 2e-5):
            Adam's learning rate on the LoRA weights: the paper's full-UNet 3e-7 scaled by the change per Adam step (a
            projection's output moves ~lr x fan_in |x| when all its weights move, ~lr x r |x| / sqrt(3) through a
            rank-r LoRA: 70-280x less in SD 1.5), at the low end of 2e-5..8e-5; a starting point to check on a GPU.
        clip_grad_norm (`float`, defaults to 1.0): Maximum global gradient norm.
        seed (`int`, defaults to 0): Seed of the solver's trajectories (offset by each process's rank).
        sample_n (`int`, defaults to 8): Images drawn per round for its grid and metrics (the paper used 3,000).
        sample_steps (`int`, defaults to 60): DDPM steps of those images.
        sample_seed (`int`, defaults to 1234): Seed of their fixed noise, the same in every round.
    """
    config_error, config_label = SDRunError, "SD exploration"
    lam: float = 0.1
    t_r: float = 0.01
    iterations: int = 20
    trajectories: int = 4
    steps: int = 60
    adam_steps: int = 10
    loss_steps: int = 2
    lr: float = 2e-5
    clip_grad_norm: float = 1.0
    seed: int = 0
    sample_n: int = 8
    sample_steps: int = 60
    sample_seed: int = 1234

    def __post_init__(self):
        if not 0 < self.lam < 1:
            raise SDRunError(f"lambda must lie in (0, 1), got {self.lam}.")
        if self.iterations < 1 or self.trajectories < 2 or self.steps < 2 or self.adam_steps < 1:
            raise SDRunError("iterations >= 1, trajectories >= 2, steps >= 2 and adam_steps >= 1 are needed.")
        if not 0 < self.t_r < 1:
            raise SDRunError(f"t_r must lie in (0, 1), got {self.t_r}.")


def is_sd_run(folder) -> bool:
    return run_kind(folder) == KIND


class SDRun(RunFolder):
    """An SD run folder (the module docstring): the 'sd' kind of smeme.store."""

    error = SDRunError

    def __init__(self, folder: Path, config: dict):
        super().__init__(folder, config)
        self.sd_config = SDConfig.from_dict(config["model"])
        self.explore_config = SDExploreConfig.from_dict(config.get("explore", {}))
        self._model: SDNoisePredictor | None = None
        self._merged = 0  # rounds merged into the cached model's UNet

    @classmethod
    def create(cls, folder, sd_config: SDConfig, explore_config: SDExploreConfig | None = None,
               overwrite: bool = False) -> "SDRun":
        from .sd import resolve_pipeline_folder

        folder = Path(folder)
        resolve_pipeline_folder(sd_config.source)  # a clear error before anything is written
        if (folder / "config.json").exists() and not overwrite:
            if is_sd_run(folder):
                return cls.open(folder)
            raise SDRunError(f"{folder} already holds another kind of run; choose another folder.")
        if folder.exists() and not folder.is_dir():
            raise SDRunError(f"{folder} exists and is not a folder.")
        folder.mkdir(parents=True, exist_ok=True)
        if overwrite and is_sd_run(folder):  # a fresh run: drop the old rounds, metrics and cached images
            import shutil

            with folder_lock(folder):
                for p in folder.glob("round_*.safetensors"):
                    p.unlink()
                (folder / "metrics.json").unlink(missing_ok=True)
                shutil.rmtree(folder / "cache", ignore_errors=True)
        cfg = {"kind": KIND, "schema_version": SCHEMA_VERSION, "model": sd_config.to_dict(),
               "explore": (explore_config or SDExploreConfig()).to_dict(),
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with folder_lock(folder):
            fsio.atomic_write_json(folder / "config.json", cfg)
        return cls(folder, cfg)

    @classmethod
    def open(cls, folder) -> "SDRun":
        folder, cfg = cls.read_folder(folder)
        if cfg.get("kind") != KIND:
            raise SDRunError(f"{folder} is not a Stable Diffusion run (config.json has no kind 'sd').")
        try:
            return cls(folder, cfg)
        except (TypeError, ValueError) as exc:
            raise SDRunError(f"config.json in {folder} is inconsistent: {exc}") from None

    # -- rounds ---------------------------------------------------------------------------
    def rounds(self) -> list[int]:
        """Round 0 (the pipeline) and each committed round after it: named in metrics.json
        (the manifest) with its adapter file present, without a gap (round k merges rounds
        1..k). An adapter file the manifest does not name is an orphan of a save that failed
        before its commit: invisible, and overwritten by the next save."""
        named = self.metrics()
        done = [0]
        while done[-1] + 1 in named and self.round_path(done[-1] + 1).is_file():
            done.append(done[-1] + 1)
        return done

    def check_next_round(self, k: int) -> None:
        if k != self.latest_round + 1:
            raise SDRunError(f"Round {k} cannot follow round {self.latest_round}.")

    def save_round(self, k: int, adapter: dict, metrics: dict | None = None) -> None:
        """Save round k's adapter, then its metrics record (the commit, RunFolder.commit)."""
        from safetensors.torch import save

        data = save({n: v.contiguous() for n, v in adapter.items()}, metadata={"format": "smeme-sd-lora",
                                                                               "round": str(int(k))})
        self.commit(k, data, metrics)

    def read_adapter(self, k: int) -> dict:
        from safetensors.torch import load

        path = self.round_path(k)
        try:
            return load(path.read_bytes())
        except FileNotFoundError:
            raise SDRunError(f"{path.name} is missing from {self.folder}.") from None
        except Exception as exc:
            raise SDRunError(f"{path.name} in {self.folder} is damaged or not a safetensors file ({exc}).") from None

    # -- models -----------------------------------------------------------------------------
    def model_at(self, k: int, device=None) -> SDNoisePredictor:
        """The SD predictor with rounds 1..k merged into its UNet (the adapter then at zero).

        One pipeline is kept per SDRun object and moved forward through the rounds; asking
        for an earlier round reloads the pipeline.
        """
        k = int(k)
        if k not in self.rounds():
            raise SDRunError(f"The run in {self.folder} has no round {k} (saved rounds: {self.rounds()}).")
        if self._model is None or self._merged > k:
            problem = self.pipeline_problem()
            if problem:
                raise SDRunError(f"Sampling round {k} of the run in {self.folder} needs {problem}")
            self._model = build_sd_model(self.sd_config, device=device)
            self._merged = 0
        model = self._model
        for j in range(self._merged + 1, k + 1):
            load_adapter_state(model.unet, {n: v.to(model.unet.device) for n, v in self.read_adapter(j).items()},
                               where=f"{self.round_path(j).name} in {self.folder}")
            model.merge_adapter()
            self._merged = j
        return model

    def drop_cached_model(self) -> None:
        """Forget the cached predictor (its adapter is broken or half-trained): reload next time."""
        self._model = None

    def mark_merged(self, k: int) -> None:
        """The cached predictor's UNet now holds rounds 1..k merged (after merge_adapter)."""
        self._merged = int(k)

    def pipeline_problem(self) -> str | None:
        """None when the run's pipeline is on this machine, else the end of a sentence naming
        it (an imported run may come without it: its cached grids and metrics still show)."""
        from .sd import resolve_pipeline_folder

        try:
            resolve_pipeline_folder(self.sd_config.source)
        except SDError as exc:
            return (f"its Stable Diffusion pipeline {self.sd_config.source!r}, which is not usable here "
                    f"({str(exc).rstrip('.')}); its cached grids and metrics still show.")
        return None

    def load_model(self, k: int | None = None, device=None) -> SDNoisePredictor:
        return self.model_at(self.latest_round if k is None else k, device)

    # -- samples ------------------------------------------------------------------------------
    def images(self, k: int, n: int, seed: int, steps: int | None = None, device=None,
               use_cache: bool = True) -> np.ndarray:
        """uint8 images (n, H, W, 3) of round k under the fixed noise of `seed` (CFG, w from config)."""
        steps = int(steps or self.explore_config.sample_steps)
        key = f"images_round{k}_n{n}_seed{seed}_steps{steps}_w{self.sd_config.guidance:g}"
        if use_cache:
            arr = self.load_array(key)
            if arr is not None and arr.shape[0] == n:
                return arr
        model = self.model_at(k, device)
        latents = sample_latents(model, n, seed, steps)
        imgs = model.decode(latents)
        if use_cache:
            self.save_array(key, imgs)
        return imgs


@torch.no_grad()
def sample_latents(model: SDNoisePredictor, n: int, seed: int, steps: int, batch: int = 8) -> torch.Tensor:
    """CFG (w from the model's config) DDPM latents under FixedNoise.from_seed(seed)."""
    device, dtype = model.unet.device, torch.float32
    noise = FixedNoise.from_seed(int(seed), int(n), tuple(model.sample_shape), int(steps), dtype=dtype, device=device)
    grid = time_grid(int(steps), device=device, dtype=dtype)
    view = model.cfg_view()
    outs = [sample_ddpm(view, noise.subset(slice(i, i + batch)), grid=grid) for i in range(0, n, batch)]
    return torch.cat(outs)


def guided_round_problem(model, w: float, lam: float, t_r: float):
    """One S-MEME round on the guided model (paper section 8): (tuned, base, reward_grad).

    tuned: the guided eps with the adapter on (the solver's model and its sampler); base: the
    guided eps with the adapter off (pi_{k-1}, frozen: the adjoint's VJPs and eps_base);
    reward_grad(x) = lam * (-s_{k-1}(x, t_r)) from the guided pi_{k-1}. `model` is anything
    with the predictor's guided(x, t, w) and adapter_disabled() (SDNoisePredictor; the tests'
    analytic stand-in).
    """
    tuned, base = SDGuidedTunedView(model, w), SDGuidedView(model, w, adapter=False)
    return tuned, base, RoundReward(base, lam, RewardSettings(t_r=t_r, reward_target="smoothed")).grad  # -lam s_{k-1}(x, t_r)


# The control SD rounds regress (AdjointMatchingConfig.control): score units, so that the tuned guided
# model's score is the tilted one's at every t, the tilt being that control's fixed point on a Gaussian
# latent model at the tiny pipeline's size (tests/test_sd_fidelity.py), where the DDPM-unit control's
# score carries only ~0.5 of it near the data. Digits rounds keep 'ddpm' (digits_rounds.DIGITS_CONTROL).
SD_CONTROL = "score"


def sd_solver_config(cfg: SDExploreConfig, k: int, rank: int = 0, control: str = SD_CONTROL):
    """The Adjoint Matching settings of round k on process `rank` (seeded per round and rank)."""
    from ..solvers.adjoint_matching import AdjointMatchingConfig

    return AdjointMatchingConfig(iterations=cfg.iterations, trajectories=cfg.trajectories, steps=cfg.steps,
                                 adam_steps=cfg.adam_steps, lr=cfg.lr, loss_steps=cfg.loss_steps,
                                 clip_grad_norm=cfg.clip_grad_norm, control=control,
                                 seed=cfg.seed * 7919 + k * 104729 + rank)


# -- multi-process helpers (Accelerate) ---------------------------------------------------------
def make_accelerator(cpu: bool = False):
    from accelerate import Accelerator

    return Accelerator(cpu=cpu)


def _average_gradients_across(model, accelerator):
    """Average the LoRA gradients over the processes in every backward pass: the tuned model's
    gradient passes run through Accelerate's DDP wrapper (accelerator.prepare), which
    all-reduces them in buckets while the backward pass runs (gloo on CPUs, NCCL on GPUs).
    Gradient clipping and Adam then see the same mean gradient on every rank, so the adapters
    stay identical. Returns the function that unwraps it; a no-op for one process."""
    if accelerator is None or accelerator.num_processes <= 1:
        return lambda: None
    model.use_grad_unet(accelerator.prepare(model.unet))

    def release():
        model.use_grad_unet(None)
        accelerator.free_memory()  # Accelerate's reference to this round's wrapper

    return release


def round_metrics(run: SDRun, k: int, device=None, inception=None, clip=None) -> dict:
    cfg = run.explore_config
    imgs = run.images(k, cfg.sample_n, cfg.sample_seed, device=device)
    weights = find_metric_weights(inception, clip)
    ref = run.images(0, cfg.sample_n, cfg.sample_seed, device=device) if weights.inception else None
    m = sd_metrics(imgs, ref, run.sd_config.prompt, weights, device=device)
    return m


class SDRounds:
    """The Stable Diffusion kind of round for smeme.explore.drive_rounds: round k tunes the
    adapter on the guided model with rounds 1..k-1 merged (guided_round_problem); with an
    Accelerate `accelerator` every rank solves, gradients are averaged, rank 0 writes."""

    solver = "adjoint"

    def __init__(self, run: SDRun, config: SDExploreConfig, accelerator=None, measure=None):
        self.run, self.cfg, self.accelerator = run, config, accelerator
        self.device = accelerator.device if accelerator is not None else None
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.is_main = accelerator is None or accelerator.is_main_process
        self.measure = measure  # k -> round k's image metrics (rank 0), or None to skip them

    def lock(self):
        return self.run.lock() if self.is_main else contextlib.nullcontext()  # rank 0 alone writes

    def begin(self) -> int:
        return self.run.latest_round

    def problem(self, k: int) -> RoundProblem:
        cfg, run = self.cfg, self.run
        model = run.model_at(k - 1, self.device)  # rounds 1..k-1 merged; adapter at zero = pi_{k-1}
        lam, t_r = float(cfg.lam), float(cfg.t_r)
        tuned, base, reward_grad = guided_round_problem(model, run.sd_config.guidance, lam, t_r)
        am = sd_solver_config(cfg, k, self.rank)
        return RoundProblem(tuned, base, reward_grad, am, lam, [lam] * k,
                            release=_average_gradients_across(model, self.accelerator))

    def finish(self, k: int, problem: RoundProblem, result, seconds: float) -> dict:
        run, cfg, model = self.run, self.cfg, problem.model_ft.model
        info = {"loss": result.losses, "seconds": round(seconds, 2), "timings": dict(result.timings),
                "lam": problem.lam, "t_r": float(cfg.t_r), "solver": "adjoint_matching", "lora_lr": cfg.lr,
                "guidance": float(run.sd_config.guidance)}
        if self.is_main:
            run.save_round(k, model.adapter_state(), info)
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
        # the cached model now holds round k's adapter unmerged: merge it to make it pi_k
        model.merge_adapter()
        run.mark_merged(k)
        m = {}
        if self.measure is not None and self.is_main:
            m = {**self.measure(k), **info}
            run.set_metrics(k, m)
        return m or info

    def reject(self, k: int, reason: str) -> Exception:
        return SDRunError(f"Round {k} was rejected: {reason}; round {k - 1} stays the latest.")

    def abandon(self, k: int) -> None:
        self.run.drop_cached_model()  # the cached UNet holds a half-trained or broken adapter


def run_sd_rounds(run: SDRun, rounds: int, config: SDExploreConfig | None = None, accelerator=None,
                  on_iteration=None, on_round=None, cancel=None, inception=None, clip=None,
                  metrics: bool = True) -> list[int]:
    """Run `rounds` more S-MEME rounds after run.latest_round through smeme.explore's round
    loop (SDRounds); each is saved when it finishes.

    on_iteration(round, iteration, total, loss); on_round(round, metrics). Returns the new
    round numbers. Raises SDRunError for bad input; a NaN round is not saved.
    """
    if int(rounds) < 1:
        raise SDRunError(f"The number of rounds must be at least 1, got {rounds}.")
    device = accelerator.device if accelerator is not None else None
    measure = (lambda k: round_metrics(run, k, device, inception, clip)) if metrics else None
    kind = SDRounds(run, config or run.explore_config, accelerator, measure)
    run.model_at(run.latest_round, device)
    if measure is not None and kind.is_main and 0 not in run.metrics():
        run.set_metrics(0, measure(0))
    return drive_rounds(kind, int(rounds), on_iteration, on_round, cancel)


_MODEL_OPTIONS = ("prompt", "resolution", "lora_rank", "guidance", "dtype")  # SDConfig fields the CLI sets
_EXPLORE_OPTIONS = ("lam", "lr", "iterations", "trajectories", "steps", "sample_n", "seed")  # SDExploreConfig's


def sd_explore_command(options: dict) -> list[int]:
    """`smeme sd-explore` (smeme.cli's options as a dict): open the SD run in options['run'], or
    create it on the local options['pipeline'] with the SDConfig / SDExploreConfig fields given,
    then run options['rounds'] rounds, printing one line per round on rank 0. Under torchrun
    every rank runs this; rank 0 creates the folder while the others wait."""
    run_folder, pipeline = options["run"], options.get("pipeline")
    if pipeline and not is_sd_run(run_folder):
        from .sd import resolve_pipeline_folder

        resolve_pipeline_folder(pipeline)  # every rank fails alike, before any barrier
    acc = make_accelerator(cpu=bool(options.get("cpu")))
    if not acc.is_main_process:  # rank 0 creates the run folder; the others open it
        acc.wait_for_everyone()
    if is_sd_run(run_folder):
        run = SDRun.open(run_folder)
    else:
        if not pipeline:
            raise SDRunError(f"{run_folder} is not an SD run yet: pass --pipeline with a local SD folder.")
        sd = {"source": str(pipeline), **{k: options[k] for k in _MODEL_OPTIONS if options.get(k) is not None}}
        if "lora_rank" in sd:
            sd["lora_alpha"] = float(sd["lora_rank"])
        explore = {k: options[k] for k in _EXPLORE_OPTIONS if options.get(k) is not None}
        run = SDRun.create(run_folder, SDConfig.from_dict(sd), SDExploreConfig.from_dict(explore))
    if acc.is_main_process:
        acc.wait_for_everyone()

    def on_round(k, m):
        if acc.is_main_process:
            fid, clip_score = m.get("fid"), m.get("clip_score")
            print(f"round {k}: {m.get('seconds', 0):.1f} s, final loss {m['loss'][-1]:.4g}, "
                  f"FID {'n/a' if fid is None else f'{fid:.2f}'}, "
                  f"CLIP {'n/a' if clip_score is None else f'{clip_score:.2f}'}", flush=True)

    return run_sd_rounds(run, options.get("rounds", 3), accelerator=acc, on_round=on_round,
                         inception=options.get("inception"), clip=options.get("clip"),
                         metrics=not options.get("no_metrics"))
