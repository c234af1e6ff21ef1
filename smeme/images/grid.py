"""Image grids under fixed noise: rows are rounds, columns are seeds' samples.

Every round's model gets the SAME initial noise and the same per-step noise sequence
(`FixedNoise.from_seed(seed, n, ...)`, exactly what `smeme.sampling.sample` uses), so a
column shows how one noise draw is mapped by each round. Digits are drawn at their own 8x8
resolution and upsampled (nearest) for display only; Stable Diffusion latents are decoded
with the run's VAE.

    python -m smeme grid --run DIR --rounds 0,1,2 --n 8 --seed S --out grid.png
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .metrics import METRIC_STEPS as DIGITS_STEPS  # DDPM steps for digits grids (as the per-round metrics)
from .metrics import digits_samples


class GridError(ValueError):
    """Bad grid request (rounds, n, output path); the message says which."""


def open_any_run(run):
    """A run of any kind (smeme.store.open_run: a digits/feature run or an SD run) from a folder;
    run objects pass through."""
    if not isinstance(run, (str, os.PathLike)):
        return run
    from ..store import open_run

    return open_run(run)


def _is_sd(run) -> bool:
    return getattr(run, "config", {}).get("kind") == "sd"


def _check(run, rounds, n) -> list[int]:
    if n < 1:
        raise GridError(f"The grid needs at least one column (n >= 1), got {n}.")
    have = run.rounds()
    rounds = have if rounds is None else [int(k) for k in rounds]
    if not rounds:
        raise GridError("No rounds to show.")
    missing = [k for k in rounds if k not in have]
    if missing:
        raise GridError(f"The run has no round(s) {missing}; saved rounds: {have}.")
    return rounds


def grid_arrays(run, rounds=None, n: int = 8, seed: int = 0, steps: int | None = None,
                device=None) -> dict[int, np.ndarray]:
    """{round: uint8 images (n, H, W) or (n, H, W, 3)} at the model's own resolution."""
    run = open_any_run(run)
    rounds = _check(run, rounds, int(n))
    out = {}
    if _is_sd(run):
        for k in sorted(rounds):  # ascending: the SD run merges adapters forward
            out[k] = run.images(k, int(n), int(seed), steps=steps, device=device)
        return {k: out[k] for k in rounds}
    for k in rounds:
        feat = digits_samples(run, k, n, seed, steps or DIGITS_STEPS)
        out[k] = to_uint8(feat)
    return out


def to_uint8(feat: np.ndarray) -> np.ndarray:
    """Digit features (n, 1, h, w) in [-1, 1] -> uint8 (n, h, w), white strokes on black."""
    feat = np.nan_to_num(np.asarray(feat, dtype=np.float64), nan=-1.0)
    img = np.clip((feat[:, 0] + 1) / 2, 0, 1)
    return (img * 255).round().astype(np.uint8)


def compose(rows: dict[int, np.ndarray], scale: int | None = None, pad: int = 2, labels: bool = True):
    """A PIL image: one row per round (labelled 'round k'), one column per sample."""
    from PIL import Image, ImageDraw

    first = next(iter(rows.values()))
    h, w = first.shape[1:3]
    if scale is None:
        scale = max(1, 64 // max(h, w)) if max(h, w) < 64 else 1
    cell_h, cell_w = h * scale, w * scale
    n = first.shape[0]
    label_w = 64 if labels else 0
    width = label_w + n * (cell_w + pad) + pad
    height = len(rows) * (cell_h + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (k, imgs) in enumerate(rows.items()):
        y = pad + r * (cell_h + pad)
        if labels:
            draw.text((4, y + cell_h // 2 - 6), f"round {k}", fill=(0, 0, 0))
        for c in range(imgs.shape[0]):
            arr = imgs[c]
            im = Image.fromarray(arr, "L" if arr.ndim == 2 else "RGB").convert("RGB")
            if scale != 1:
                im = im.resize((cell_w, cell_h), Image.NEAREST)  # display only
            canvas.paste(im, (label_w + pad + c * (cell_w + pad), y))
    return canvas


def make_grid(run, rounds=None, n: int = 8, seed: int = 0, steps: int | None = None, scale: int | None = None,
              device=None):
    """The grid as a PIL.Image (rows: rounds, columns: samples under the same noise)."""
    return compose(grid_arrays(run, rounds, n, seed, steps, device), scale=scale)


def save_grid(run, rounds=None, n: int = 8, seed: int = 0, out="grid.png", steps: int | None = None,
              scale: int | None = None) -> Path:
    """Write the grid image to `out` (PNG, atomically); returns the path."""
    from ..store import atomic_write

    out = Path(out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise GridError(f"The grid's output {out} must end in .png or .jpg.")
    if not out.parent.exists():
        raise GridError(f"The folder of {out} does not exist.")
    img = make_grid(run, rounds, n, seed, steps, scale)
    fmt = "PNG" if out.suffix.lower() == ".png" else "JPEG"
    atomic_write(out, lambda f: img.save(f, format=fmt))
    return out
