"""Metrics of Stable Diffusion rounds from optional, local weights.

Metrics weights (optional, local only): an Inception-v3 TorchScript file (the
`inception-2015-12-05.pt` used by StyleGAN/clean-fid; torch alone loads it) for FID and
the Gaussian cross-entropy in Inception feature space, and a local CLIP folder
(transformers CLIPModel + processor) for the CLIP score. `find_metric_weights` says which
are missing, so pages can show grids alone.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .metrics import fit_gaussian, frechet_distance, gaussian_cross_entropy
from .sd import SDError, hub_offline, local_cache_folder

INCEPTION_ENV = "SMEME_INCEPTION"  # path of inception-2015-12-05.pt (TorchScript)
CLIP_ENV = "SMEME_CLIP"  # local CLIP folder (transformers), or a model in the local HF cache


@dataclass
class MetricWeights:
    """Which SD metric weights are on disk.

    Args:
        inception (`str`, *optional*):
            Path of the Inception-v3 TorchScript file (FID, Inception cross-entropy); None: missing.
        clip (`str`, *optional*): Folder of the local CLIP model (CLIP score); None: missing.
        missing (`list`, defaults to `[]`): One sentence per missing weight, saying how to provide it.
    """
    inception: str | None = None
    clip: str | None = None
    missing: list = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.inception or self.clip)


def find_metric_weights(inception=None, clip=None) -> MetricWeights:
    """Which metric weights are on disk (arguments, else $SMEME_INCEPTION / $SMEME_CLIP)."""
    out = MetricWeights()
    inc = inception or os.environ.get(INCEPTION_ENV)
    if inc and Path(inc).expanduser().is_file():
        out.inception = str(Path(inc).expanduser())
    else:
        where = f" ({inc} does not exist)" if inc else ""
        out.missing.append("Inception-v3 weights for FID and the Inception cross-entropy are missing"
                           f"{where}: give the path of inception-2015-12-05.pt (TorchScript) as "
                           f"--inception or ${INCEPTION_ENV}.")
    clp = clip or os.environ.get(CLIP_ENV)
    if clp:
        try:
            out.clip = str(_resolve_clip(clp))
        except SDError as exc:
            out.missing.append(f"CLIP weights for the CLIP score are missing: {exc}")
    else:
        out.missing.append("CLIP weights for the CLIP score are missing: give a local CLIP folder "
                           f"(e.g. openai/clip-vit-large-patch14) as --clip or ${CLIP_ENV}.")
    return out


def _resolve_clip(src) -> Path:
    path = Path(str(src)).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if not path.exists() and str(src).count("/") == 1:
        cached = local_cache_folder(str(src))
        if cached is not None:
            return cached
    raise SDError(f"{src} is not a local CLIP model folder (nor in the local Hugging Face cache).")


class InceptionFeatures:
    """2048-d pool features from the TorchScript Inception-v3 (StyleGAN/clean-fid file)."""

    def __init__(self, path: str, device=None):
        import warnings

        with warnings.catch_warnings():  # the published file is TorchScript; jit.load is deprecated but works
            warnings.simplefilter("ignore", DeprecationWarning)
            self.net = torch.jit.load(path, map_location=device or "cpu").eval()
        self.device = device or "cpu"

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch: int = 16) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch):
            x = torch.as_tensor(images[i:i + batch]).permute(0, 3, 1, 2).to(self.device, torch.float32)
            out.append(self.net(x, return_features=True).float().cpu().numpy())
        return np.concatenate(out).astype(np.float64)


class ClipScorer:
    """CLIP score = 100 * max(cos(image, text), 0) (as torchmetrics), mean over images."""

    def __init__(self, path: str, device=None):
        hub_offline()
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(path, local_files_only=True).eval().to(device or "cpu")
        self.processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
        self.device = device or "cpu"

    @torch.no_grad()
    def __call__(self, images: np.ndarray, prompt: str) -> float:
        from PIL import Image

        pil = [Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in images]
        inputs = self.processor(text=[prompt], images=pil, return_tensors="pt", padding=True).to(self.device)
        img = self.model.get_image_features(pixel_values=inputs["pixel_values"])
        txt = self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"))
        img = getattr(img, "pooler_output", img)
        txt = getattr(txt, "pooler_output", txt)
        cos = torch.nn.functional.cosine_similarity(img, txt.expand_as(img), dim=-1)
        return float((100 * cos.clamp(min=0)).mean())


def sd_metrics(images: np.ndarray, reference: np.ndarray | None, prompt: str, weights: MetricWeights,
               device=None) -> dict:
    """FID, Inception Gaussian cross-entropy H(N_k, N_0) and CLIP score where weights exist."""
    out: dict = {"n": int(len(images)), "fid": None, "inception_cross_entropy": None, "clip_score": None,
                 "missing_weights": list(weights.missing)}
    if weights.inception and reference is not None and len(images) >= 2:
        feat = InceptionFeatures(weights.inception, device)
        f_k, f_0 = feat(images), feat(reference)
        mu_k, s_k = fit_gaussian(f_k)
        mu_0, s_0 = fit_gaussian(f_0)
        out["fid"] = frechet_distance(mu_k, s_k, mu_0, s_0)
        out["inception_cross_entropy"] = gaussian_cross_entropy(mu_k, s_k, mu_0, s_0)
    if weights.clip:
        out["clip_score"] = ClipScorer(weights.clip, device)(images, prompt)
    return out
