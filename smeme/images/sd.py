"""Stable Diffusion (any local diffusers StableDiffusionPipeline folder) as a NoisePredictor.

Nothing is ever downloaded: a source is either a local folder holding a diffusers pipeline
(model_index.json + unet/ vae/ text_encoder/ tokenizer/ scheduler/), or the name of a model
already in the local Hugging Face cache; HF_HUB_OFFLINE=1 is set before loading.

Views over ONE UNet (so memory holds one copy of SD):
- `SDNoisePredictor` (the tuned model, pi_k): the UNet with a LoRA adapter (peft, on the
  attention projections to_q/to_k/to_v/to_out.0), conditional eps for a fixed prompt
  embedding. Only the LoRA weights have requires_grad.
- `.base_view()` (the frozen pi_{k-1}): the same UNet with the adapter disabled. At the start
  of every round the previous adapter is merged into the UNet's weights and the adapter is
  reset to zero (B = 0), so "adapter disabled" is exactly pi_{k-1} and the tuned model
  starts there (`merge_adapter`).
- `.cfg_view(w, adapter)`: classifier-free guidance eps_u + w (eps_c - eps_u), with the
  adapter on (what inference samples) or off (the guided pi_{k-1}: an S-MEME round's base).
- `SDGuidedTunedView(model, w)`: the same guided eps with the adapter on, as the model a
  solver fine-tunes: it registers the predictor, so the solver finds the LoRA weights.
The other views hold the predictor without registering it as a submodule, so freezing a
view never touches the tuned weights.

Time: continuous t in [0, 1] maps to the scheduler's table index t * (N - 1) through
`DiscreteSchedule.from_scheduler(pipe.scheduler)`. v-prediction checkpoints are converted
to eps (eps = sqrt(ab) v + sqrt(1 - ab) x_t).

The metrics (FID, CLIP score) of SD rounds: smeme.images.sd_metrics.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..config import ConfigBase
from ..schedule import DiscreteSchedule
from ..models.base import NoisePredictor, expand_like

ADAPTER = "smeme"
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
PIPELINE_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


class SDError(ValueError):
    """A Stable Diffusion source or setting is unusable; the message names it."""


# -- finding and loading a pipeline, offline --------------------------------------------
def hub_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_OFFLINE", "1")


def local_cache_folder(repo_id: str) -> Path | None:
    """A model already in the local Hugging Face cache, read from the cache's own layout
    (models--org--name/refs/main -> snapshots/<commit>); no hub client, so nothing can fetch."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    if not ref.is_file():
        return None
    snapshot = repo / "snapshots" / ref.read_text().strip()
    return snapshot if snapshot.is_dir() else None


def resolve_pipeline_folder(source) -> Path:
    """The local folder of a diffusers SD pipeline: `source` itself, or a model in the local
    HF cache. Raises SDError naming the source when it is missing or not a pipeline."""
    if source is None or str(source).strip() == "":
        raise SDError("No Stable Diffusion source given: pass a local diffusers pipeline folder.")
    src = str(source).strip()
    path = Path(src).expanduser()
    if not path.exists():
        looks_like_repo = src.count("/") == 1 and not src.startswith((".", "/", "~"))
        if looks_like_repo:
            path = local_cache_folder(src)
            if path is None:
                raise SDError(f"Stable Diffusion source {src!r} is neither a local folder nor a model in the "
                              "local Hugging Face cache (nothing is downloaded).") from None
        else:
            raise SDError(f"The Stable Diffusion folder {src} does not exist.")
    if not path.is_dir():
        raise SDError(f"{path} is not a folder; a diffusers Stable Diffusion pipeline folder is needed.")
    if not (path / "model_index.json").is_file():
        raise SDError(f"{path} is not a diffusers pipeline folder: it has no model_index.json.")
    missing = [p for p in PIPELINE_PARTS if not (path / p).is_dir()]
    if missing:
        raise SDError(f"{path} is not a complete Stable Diffusion pipeline: it lacks the sub-folder(s) "
                      f"{', '.join(missing)}.")
    return path


def is_pipeline_folder(path) -> bool:
    try:
        resolve_pipeline_folder(path)
    except SDError:
        return False
    return True


def local_pipelines(models_dir) -> list[tuple[str, str]]:
    """The Stable Diffusion pipelines on this machine, as (label, source) pairs: each pipeline
    folder directly under `models_dir`, then each model of the local Hugging Face cache
    (HF_HUB_CACHE, else HF_HOME/hub) that is one. Only these are offered in the app, so a
    browser never names a server path."""
    out = []
    base = Path(models_dir)
    if base.is_dir():
        for p in sorted(base.iterdir()):
            if p.is_dir() and is_pipeline_folder(p):
                out.append((f"{p.name} (models folder)", str(p.resolve())))
    from huggingface_hub import constants

    hub = Path(constants.HF_HUB_CACHE)
    if hub.is_dir():
        for repo in sorted(hub.glob("models--*--*")):
            repo_id = repo.name[len("models--"):].replace("--", "/", 1)
            folder = local_cache_folder(repo_id)
            if folder is not None and is_pipeline_folder(folder):
                out.append((f"{repo_id} (Hugging Face cache)", repo_id))
    return out


def load_pipeline(source, device=None, dtype=torch.float32):
    """StableDiffusionPipeline from a local folder (HF_HUB_OFFLINE=1; no safety checker)."""
    path = resolve_pipeline_folder(source)
    hub_offline()
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(path), local_files_only=True, dtype=dtype,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    except Exception as exc:  # a folder with model_index.json that diffusers cannot read
        raise SDError(f"{path} could not be loaded as a Stable Diffusion pipeline "
                      f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).") from None
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False)
        part.eval()
    return pipe


# -- the model ---------------------------------------------------------------------------
@dataclass
class SDConfig(ConfigBase):
    """The Stable Diffusion model of an SD run: its pipeline, prompt, guidance and LoRA adapter.

    Args:
        source (`str`, defaults to `""`):
            A local diffusers pipeline folder, or the name of a model in the local Hugging Face cache
            (resolve_pipeline_folder); required.
        prompt (`str`, defaults to `"A creative architecture."`): The text prompt every sample is conditioned on.
        negative_prompt (`str`, defaults to `""`):
            The unconditional branch's prompt (empty: the plain unconditional eps).
        resolution (`int`, *optional*):
            Image side in pixels. None (default): the UNet's sample_size x the VAE's factor.
        guidance (`float`, defaults to 8.0):
            Classifier-free guidance scale w of the model explored and sampled, at least 1 (the paper's w = 8).
        lora_rank (`int`, defaults to 8): Rank r of the LoRA adapter.
        lora_alpha (`float`, defaults to 8.0): LoRA's alpha (the update is scaled by alpha / r).
        lora_targets (`tuple`, defaults to DEFAULT_TARGETS):
            Names of the UNet's attention projections that get an adapter.
        lora_seed (`int`, defaults to 0): Seed of the adapter's initialisation.
        dtype (`str`, defaults to `"float32"`): `"float32"`, `"float16"` or `"bfloat16"`.
    """
    config_error, config_label = SDError, "Stable Diffusion"
    ignored_keys = ("kind",)  # the model part of a run's config names its kind
    source: str = ""
    prompt: str = "A creative architecture."
    negative_prompt: str = ""
    resolution: int | None = None
    guidance: float = 8.0
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_targets: tuple = DEFAULT_TARGETS
    lora_seed: int = 0
    dtype: str = "float32"

    def __post_init__(self):
        self.lora_targets = tuple(self.lora_targets)
        if self.lora_rank < 1:
            raise SDError(f"The LoRA rank must be at least 1, got {self.lora_rank}.")
        if not self.guidance >= 1:
            raise SDError(f"The guidance scale must be at least 1, got {self.guidance}.")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise SDError(f"dtype must be float32, float16 or bfloat16, got {self.dtype!r}.")

    @property
    def torch_dtype(self):
        return getattr(torch, self.dtype)


def add_lora(unet, rank: int, alpha: float, targets=DEFAULT_TARGETS, seed: int = 0) -> list[nn.Parameter]:
    """Attach a LoRA adapter (peft) named ADAPTER to the UNet; returns its parameters.

    B starts at zero (peft's default), so the adapter starts as the identity.
    """
    from peft import LoraConfig

    cfg = LoraConfig(r=int(rank), lora_alpha=float(alpha), init_lora_weights=True,
                     target_modules=list(targets))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        unet.add_adapter(cfg, adapter_name=ADAPTER)
    unet.requires_grad_(False)
    params = []
    for name, p in unet.named_parameters():
        if "lora_" in name and f".{ADAPTER}." in name:
            p.requires_grad_(True)
            params.append(p)
    if not params:
        raise SDError(f"No LoRA layer was attached: none of the target modules {list(targets)} exists in the UNet.")
    return params


def _lora_layers(unet):
    from peft.tuners.lora import LoraLayer

    return [m for m in unet.modules() if isinstance(m, LoraLayer) and ADAPTER in m.lora_A]


@torch.no_grad()
def merge_adapter(unet) -> None:
    """Fold the adapter's delta into the UNet's own weights and reset B to zero.

    Afterwards the UNet with the adapter disabled equals the UNet with it enabled, which
    makes "adapter disabled" the frozen previous round pi_{k-1} of the next round.
    """
    for layer in _lora_layers(unet):
        base = layer.get_base_layer()
        delta = layer.get_delta_weight(ADAPTER)
        base.weight.add_(delta.to(base.weight.dtype))
        nn.init.zeros_(layer.lora_B[ADAPTER].weight)


def adapter_state(unet) -> dict[str, Tensor]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().to("cpu", torch.float32).contiguous().clone()
            for k, v in get_peft_model_state_dict(unet, adapter_name=ADAPTER).items()}


def load_adapter_state(unet, state: dict[str, Tensor], where: str = "the adapter file") -> None:
    from peft.utils import set_peft_model_state_dict

    expected = adapter_state(unet)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise SDError(f"{where} does not match this UNet's LoRA adapter "
                      f"({len(missing)} missing, {len(extra)} unexpected tensors; check rank and targets).")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise SDError(f"{where}: tensor {k} has shape {tuple(v.shape)}, the adapter needs {tuple(expected[k].shape)}.")
        if not torch.isfinite(v).all():
            raise SDError(f"{where}: tensor {k} holds NaN or infinite values.")
    set_peft_model_state_dict(unet, state, adapter_name=ADAPTER)


class SDNoisePredictor(NoisePredictor):
    """Conditional eps of the SD UNet with its LoRA adapter, in latent space (4, h, w)."""

    def __init__(self, pipe, config: SDConfig):
        super().__init__()
        self.config = config
        self.unet = pipe.unet
        self.vae = pipe.vae
        self.schedule = DiscreteSchedule.from_scheduler(pipe.scheduler)
        self.prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise SDError(f"Unsupported prediction type {self.prediction_type!r} (epsilon or v_prediction).")
        factor = getattr(pipe, "vae_scale_factor", 8)
        res = config.resolution or int(self.unet.config.sample_size) * factor
        if res % factor:
            raise SDError(f"The resolution {res} must be a multiple of the VAE factor {factor}.")
        self.resolution = int(res)
        self.sample_shape = (int(self.unet.config.in_channels), res // factor, res // factor)
        device = self.unet.device
        with torch.no_grad():
            cond, uncond = pipe.encode_prompt(config.prompt, device, 1, True,
                                              negative_prompt=config.negative_prompt or None)
        self.register_buffer("cond", cond.detach().to(self.unet.dtype), persistent=False)
        self.register_buffer("uncond", uncond.detach().to(self.unet.dtype), persistent=False)
        # a distributed (DDP) wrapper of self.unet for the tuned model's gradient passes (use_grad_unet);
        # kept out of the module tree so parameters and state dicts stay the UNet's own
        self.__dict__["_grad_unet"] = None
        self._adapter_on = True
        self.lora_params = add_lora(self.unet, config.lora_rank, config.lora_alpha, config.lora_targets,
                                    config.lora_seed)

    # -- core ----------------------------------------------------------------------------
    def use_grad_unet(self, wrapped) -> None:
        """Run the tuned model's gradient passes (adapter on, autograd recording) through
        `wrapped` (e.g. accelerator.prepare(self.unet)), or through the UNet itself (None).
        Sampling (no autograd) and the adapter-off base keep the UNet itself."""
        self.__dict__["_grad_unet"] = wrapped

    def _eps(self, x: Tensor, t: Tensor, embeds: Tensor) -> Tensor:
        ts = self.schedule.timestep(t).to(torch.float32)
        wrapped = self.__dict__.get("_grad_unet")
        unet = wrapped if wrapped is not None and self._adapter_on and torch.is_grad_enabled() else self.unet
        out = unet(x.to(self.unet.dtype), ts, encoder_hidden_states=embeds).sample.to(x.dtype)
        if self.prediction_type == "v_prediction":
            ab = expand_like(self.schedule.ab(t), x)
            out = ab.sqrt() * out + (1 - ab).sqrt() * x
        return out

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self._eps(x, t, self.cond.expand(x.shape[0], -1, -1))

    def guided(self, x: Tensor, t: Tensor, w: float) -> Tensor:
        n = x.shape[0]
        both = self._eps(torch.cat([x, x]), torch.cat([t, t]),
                         torch.cat([self.uncond.expand(n, -1, -1), self.cond.expand(n, -1, -1)]))
        e_u, e_c = both[:n], both[n:]
        return e_u + w * (e_c - e_u)

    @contextlib.contextmanager
    def adapter_disabled(self):
        self.unet.disable_adapters()
        self._adapter_on = False
        try:
            yield
        finally:
            self._adapter_on = True
            self.unet.enable_adapters()
            # diffusers re-enables adapters with requires_grad on every LoRA weight; keep ours
            for p in self.lora_params:
                p.requires_grad_(True)

    # -- views ---------------------------------------------------------------------------
    def base_view(self) -> "SDBaseView":
        return SDBaseView(self)

    def cfg_view(self, w: float | None = None, adapter: bool = True) -> "SDGuidedView":
        return SDGuidedView(self, self.config.guidance if w is None else float(w), adapter)

    def merge_adapter(self) -> None:
        merge_adapter(self.unet)

    def adapter_state(self) -> dict[str, Tensor]:
        return adapter_state(self.unet)

    def load_adapter_state(self, state, where: str = "the adapter file") -> None:
        load_adapter_state(self.unet, state, where)

    # -- latents <-> images ----------------------------------------------------------------
    @torch.no_grad()
    def decode(self, latents: Tensor, batch: int = 4) -> np.ndarray:
        """Latents (n, 4, h, w) -> uint8 images (n, H, W, 3)."""
        out = []
        scale = float(self.vae.config.scaling_factor)
        for i in range(0, latents.shape[0], batch):
            z = latents[i:i + batch].to(self.vae.device, self.vae.dtype) / scale
            img = self.vae.decode(z).sample.float().clamp(-1, 1)
            out.append(((img + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.resolution, self.resolution, 3), np.uint8)


class _View(NoisePredictor):
    def __init__(self, model: SDNoisePredictor):
        super().__init__()
        object.__setattr__(self, "_model", model)  # not a submodule: the view owns no weights
        self.schedule = model.schedule
        self.sample_shape = model.sample_shape

    @property
    def model(self) -> SDNoisePredictor:
        return self._model


class SDBaseView(_View):
    """pi_{k-1}: the conditional eps with the adapter disabled (frozen, no weights of its own)."""

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        with self.model.adapter_disabled():
            return self.model(x, t)


class SDGuidedView(_View):
    """Classifier-free guidance eps_u + w (eps_c - eps_u), with or without the adapter (no weights)."""

    def __init__(self, model: SDNoisePredictor, w: float, adapter: bool = True):
        super().__init__(model)
        self.w = float(w)
        self.adapter = bool(adapter)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if self.adapter:
            return self.model.guided(x, t, self.w)
        with self.model.adapter_disabled():
            return self.model.guided(x, t, self.w)


class SDGuidedTunedView(NoisePredictor):
    """The guided tuned model eps_u + w (eps_c - eps_u), adapter on, as a solver's model: the
    predictor is a submodule, so its LoRA weights (the only ones with requires_grad) are found."""

    def __init__(self, model: SDNoisePredictor, w: float):
        super().__init__()
        self.model = model
        self.w = float(w)
        self.schedule = model.schedule
        self.sample_shape = model.sample_shape

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model.guided(x, t, self.w)


def build_sd_model(config: SDConfig, device=None) -> SDNoisePredictor:
    pipe = load_pipeline(config.source, device=device, dtype=config.torch_dtype)
    return SDNoisePredictor(pipe, config)


def build_from_config(params: dict, schedule=None) -> SDNoisePredictor:
    """Builder registered with smeme.models.registry for kind 'sd' (the schedule comes from the pipeline)."""
    return build_sd_model(SDConfig.from_dict(dict(params)))
