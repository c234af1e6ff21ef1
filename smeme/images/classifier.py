"""A small digit classifier: the "Inception network" of the 8x8 digits domain.

A tiny CNN (two 3x3 convolutions, a 64-unit penultimate layer, 10 classes) trained in-project
on all 1,797 scikit-learn digits, in about 15 seconds on one CPU thread. Outlier exposure
(uniform noise, pixel-shuffled digits and heavily noised digits trained towards uniform
probabilities) keeps it from being confident about junk, so its confidence is a usable
validity proxy for generated images. Training is
deterministic (seeded, one thread), and the weights are cached as safetensors under
`cache/classifier/` keyed by a hash of the settings, so every process gets the same
classifier. It gives class probabilities (validity proxy and category shift) and
penultimate features (Frechet distance and diversity, see `smeme.images.metrics`).

Input: images (n, 1, 8, 8) scaled to [-1, 1] (DigitsDomain features).
"""
from __future__ import annotations

from ..config import ConfigBase
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..optim import Adam

FEATURE_DIM = 64


@dataclass(frozen=True)
class ClassifierConfig(ConfigBase):
    """Training settings of the digit classifier behind the digits metrics (its cache key).

    Args:
        epochs (`int`, defaults to 40): Passes over the 1,797 digits.
        batch_size (`int`, defaults to 64): Images per step.
        lr (`float`, defaults to 2e-3): Adam's learning rate.
        weight_decay (`float`, defaults to 1e-4): Weight decay.
        seed (`int`, defaults to 0): Seed of the training.
        outlier_weight (`float`, defaults to 0.5):
            Weight of outlier exposure: junk images trained towards uniform probabilities.
        version (`int`, defaults to 2):
            Bumped when the training changes, so a cached classifier of an older one is not reused.
    """
    config_error, config_label = ValueError, "classifier"
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    outlier_weight: float = 0.5
    version: int = 2

    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


class DigitCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Flatten(),
            nn.Linear(64 * 16, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class DigitClassifier:
    """Numpy-facing wrapper: predict_proba, predict, features (batched, no grad)."""

    def __init__(self, net: DigitCNN):
        self.net = net.eval().requires_grad_(False)

    @torch.no_grad()
    def _run(self, images: np.ndarray, fn, batch: int = 1024) -> np.ndarray:
        x = torch.as_tensor(np.asarray(images, dtype=np.float32)).reshape(-1, 1, 8, 8)
        x = torch.nan_to_num(x).clamp(-1.5, 1.5)
        outs = [fn(x[i:i + batch]) for i in range(0, len(x), batch)]
        return torch.cat(outs).numpy().astype(np.float64) if outs else np.zeros((0, 10))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self._run(images, lambda x: torch.softmax(self.net(x), dim=1))

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.predict_proba(images).argmax(axis=1)

    def features(self, images: np.ndarray) -> np.ndarray:
        return self._run(images, self.net.features)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return float((self.predict(images) == np.asarray(labels)).mean())


def _junk_images(x: Tensor, g: torch.Generator) -> Tensor:
    """Outliers for outlier exposure: uniform noise, pixel-shuffled digits, and noised digits."""
    n = len(x)
    k = max(n // 3, 1)
    noise = torch.rand((k, 1, 8, 8), generator=g) * 2 - 1
    flat = x[:k].reshape(k, -1)
    shuffled = torch.stack([row[torch.randperm(64, generator=g)] for row in flat]).reshape(k, 1, 8, 8)
    noised = (x[-k:] + 0.8 * torch.randn((k, 1, 8, 8), generator=g)).clamp(-1, 1)
    return torch.cat([noise, shuffled, noised])


def train_classifier(images: np.ndarray, labels: np.ndarray,
                     config: ClassifierConfig = ClassifierConfig()) -> DigitClassifier:
    """Train a fresh DigitCNN (Adam, cross-entropy, seeded) on images in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).reshape(-1, 1, 8, 8)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    g = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = DigitCNN()
    opt = Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(x)
    net.train()
    for _ in range(config.epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, config.batch_size):
            idx = perm[i:i + config.batch_size]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            if config.outlier_weight > 0:
                junk = _junk_images(x[idx], g)
                logp = torch.log_softmax(net(junk), dim=1)
                loss = loss - config.outlier_weight * logp.mean()  # CE to the uniform distribution
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return DigitClassifier(net)


def cache_dir() -> Path:
    env = os.environ.get("SMEME_CACHE")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "cache"


_CACHE: dict[str, DigitClassifier] = {}


def get_classifier(config: ClassifierConfig = ClassifierConfig()) -> DigitClassifier:
    """The classifier trained on all 1,797 digits (memory, then disk cache, then training)."""
    from safetensors.torch import load_file, save_file

    from .pixels import load_all_digits, raw_to_images

    key = config.key()
    if key in _CACHE:
        return _CACHE[key]
    path = cache_dir() / "classifier" / f"digits_cnn_{key}.safetensors"
    net = None
    if path.exists():
        try:
            net = DigitCNN()
            net.load_state_dict(load_file(str(path)))
        except Exception:  # damaged cache file: rebuild it
            net = None
    if net is None:
        raw, labels = load_all_digits()
        clf = train_classifier(raw_to_images(raw), labels, config)
        net = clf.net
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
        os.replace(tmp, path)
    clf = DigitClassifier(net)
    _CACHE[key] = clf
    return clf
