"""What a round learned, as vector fields on the data plane (the Fields page).

For round k >= 1 of a run of points, on a grid over two chosen columns (the others held at
their medians, as in the Model page's heatmap), in the data's own units:

- the reward's gradient the round climbed, -lam_k s_{k-1}(x, t_r) (with the 'pretrained'
  reward: -lam_k prod_{i<k}(1 - lam_i) s_0(x, t_r)), read from the round's own record;
- the round's learned change of the score, s_k(x, t) - s_{k-1}(x, t), at a diffusion time t;
- a few samples' paths from noise (t = 1) to data (t = 0) on the probability-flow ODE from
  one fixed starting noise, through round k-1 and round k, so a path that bends is one the
  round bent.

Scores are the models' (in standardised units) carried to data units: z = (x - mean) / std
gives s_x = s_z / std per column. Runs whose features are not their columns (triangles)
and image runs have no such plane.
"""
from __future__ import annotations

import numpy as np
import torch

from ..models.base import score
from ..sampling import FixedNoise, sample_ode
from . import cached
from .runs import is_image_run
from .stepper import _memo, columns

GRID = 17               # arrows per side of the grid
HEAT_RES = 48           # the log-density under the arrows, per side (a pair other than the heatmap's)
REFERENCE_T = 0.05      # the time at which the learned change's arrow scale is fixed (for every t)
TIMES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)  # the diffusion times the page offers
PATHS_N = 12            # sample paths drawn from noise to data
PATHS_STEPS = 60        # RK4 steps of those paths on the probability-flow ODE (animation frames are thinned)
PATHS_T_MIN = 1e-3      # the paths end at this diffusion time (the ODE's data end)
PATHS_SEED = 7          # their fixed starting noise
# An arrow scale draws the median length (over every round's grid) one cell long: off the
# support the scores are orders of magnitude larger (they grow like distance / sigma^2), and a
# scale set by them shrank the arrows on the data to dots; longer arrows are capped (motion.ARROW_CAP).
QUANTILE = 0.5


class FieldsUnavailable(ValueError):
    """The run has no plane of its own columns to draw fields on; the message says why."""


def check_run(run) -> None:
    """Raise FieldsUnavailable unless the run's samples are rows of columns the model sees
    unchanged (toy, any CSV) with at least one explored round."""
    if is_image_run(run):
        raise FieldsUnavailable("Fields are drawn for runs of points; this is an image run.")
    dom = run.domain
    probe = np.asarray(getattr(dom, "median", None) if getattr(dom, "median", None) is not None
                       else run.standardizer.mean, dtype=float).reshape(1, -1)
    if not (np.allclose(dom.to_features(probe), probe) and np.allclose(dom.log_abs_det(probe), 0.0)):
        raise FieldsUnavailable(f"Fields are drawn over a run's own columns; the '{dom.name}' data set maps "
                                "its columns to other features, so its arrows would not live in its plane.")
    if len(run.rounds()) < 2:
        raise FieldsUnavailable("This run has only its pre-trained round: run an S-MEME round on the Explore "
                                "page, then come back to see what it learned.")


def _dtype(model) -> torch.dtype:
    p = next(iter(model.parameters()), None)
    return p.dtype if p is not None and p.is_floating_point() else torch.float64


def raw_score(model, standardizer, raw: np.ndarray, t: float) -> np.ndarray:
    """s(x, t) in data units at the rows `raw` (N, d): the model's score at z = (x - mean) / std,
    divided by std (the chain rule of the linear map)."""
    z = standardizer.forward(np.asarray(raw, dtype=np.float64))
    dtype = _dtype(model)
    zt = torch.as_tensor(z, dtype=dtype)
    with torch.no_grad():
        s = score(model, zt, torch.full((len(zt),), float(t), dtype=dtype)).double().numpy()
    return s.reshape(len(raw), -1) / np.asarray(standardizer.std, dtype=np.float64).reshape(1, -1)


def reward_scale(record: dict) -> tuple[float, int]:
    """(c, j): a round's reward gradient is -c s_j(x, t_r), read from its metrics record."""
    lam = float(record.get("lam", 0.0))
    if record.get("reward") == "pretrained":
        before = record.get("lam_history", [lam])[:-1]
        return lam * float(np.prod([1.0 - v for v in before])), 0
    return lam, -1  # -1: the previous round


def plane_grid(run, pair: tuple[int, int], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xs, ys, raw rows (n*n, d), x varying fastest) over the pair's data range."""
    dom, (i, j) = run.domain, pair
    d = len(columns(run))
    if tuple(pair) == (0, 1) and hasattr(dom, "plane_grid"):
        xs0, ys0 = (np.asarray(a, dtype=float) for a in dom.plane_grid(2)[:2])
        lo, hi = (xs0.min(), ys0.min()), (xs0.max(), ys0.max())
    else:
        lo, hi = (dom.low[i], dom.low[j]), (dom.high[i], dom.high[j])
    xs, ys = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
    gx, gy = np.meshgrid(xs, ys)
    centre = np.asarray(getattr(dom, "median", np.zeros(d)), dtype=float).reshape(-1)
    raw = np.tile(centre if len(centre) == d else np.zeros(d), (gx.size, 1))
    raw[:, i], raw[:, j] = gx.ravel(), gy.ravel()
    return xs, ys, raw


def _model(run, k: int):
    return _memo(run, "fields_model", (k,), lambda: run.load_model(k))


def _previous(run, k: int) -> int:
    rounds = run.rounds()
    return rounds[rounds.index(k) - 1]


def reward_arrows(run, k: int, pair: tuple[int, int], n: int = GRID) -> dict:
    """Round k's reward gradient on the grid: {'x', 'y', 'u', 'v'} (the pair's components) and
    'source', the round whose score it reads (k-1, or 0 with the 'pretrained' reward)."""
    record = run.metrics().get(k, {})
    c, j = reward_scale(record)
    source = _previous(run, k) if j == -1 else 0
    t_r = float(record.get("t_r", 0.05))

    def compute():
        xs, ys, raw = plane_grid(run, pair, n)
        g = -c * raw_score(_model(run, source), run.standardizer, raw, t_r)
        return {"x": raw[:, pair[0]], "y": raw[:, pair[1]], "u": g[:, pair[0]], "v": g[:, pair[1]],
                "source": source}
    return _memo(run, "fields_reward", (k, tuple(pair), n), compute)


def change_arrows(run, k: int, t: float, pair: tuple[int, int], n: int = GRID) -> dict:
    """Round k's learned change of the score at time t: s_k(x, t) - s_{k-1}(x, t) on the grid."""
    def compute():
        xs, ys, raw = plane_grid(run, pair, n)
        ds = (raw_score(_model(run, k), run.standardizer, raw, t)
              - raw_score(_model(run, _previous(run, k)), run.standardizer, raw, t))
        return {"x": raw[:, pair[0]], "y": raw[:, pair[1]], "u": ds[:, pair[0]], "v": ds[:, pair[1]]}
    return _memo(run, "fields_change", (k, round(float(t), 4), tuple(pair), n), compute)


def _length(arrows: dict) -> np.ndarray:
    return np.hypot(arrows["u"], arrows["v"])


def arrow_scales(run, pair: tuple[int, int], n: int = GRID) -> dict:
    """Fixed arrow lengths for every round and every t: {'reward', 'change'}, each the length
    (data units per unit of gradient) that draws the QUANTILE of the lengths over every round
    (the change at REFERENCE_T, where it is largest) one grid cell long."""
    def compute():
        xs, ys, _ = plane_grid(run, pair, n)
        cell = min(np.ptp(xs), np.ptp(ys)) / (n - 1)
        later = run.rounds()[1:]
        rew = np.concatenate([_length(reward_arrows(run, k, pair, n)) for k in later])
        chg = np.concatenate([_length(change_arrows(run, k, REFERENCE_T, pair, n)) for k in later])
        ref = lambda v: float(np.quantile(v, QUANTILE)) if len(v) and np.quantile(v, QUANTILE) > 0 else 1.0  # noqa: E731
        return {"reward": cell / ref(rew), "change": cell / ref(chg), "cell": cell}
    return _memo(run, "fields_scales", (tuple(pair), n), compute)


def log_density(run, k: int, pair: tuple[int, int]) -> dict:
    """Round k's log-density over the pair: the cached heatmap for the first two columns,
    else computed on a HEAT_RES grid (the other columns at their medians)."""
    if tuple(pair) == (0, 1):
        hm = cached.heatmap_cached(run, k)
        if hm is not None:
            return hm

    def compute():
        from ..density import log_prob_raw
        xs, ys, raw = plane_grid(run, pair, HEAT_RES)
        logp = log_prob_raw(_model(run, k), run.domain, run.standardizer, raw)
        names = columns(run)
        return {"xs": xs, "ys": ys, "logp": logp.reshape(len(ys), len(xs)),
                "x_label": names[pair[0]], "y_label": names[pair[1]]}
    return _memo(run, "fields_logp", (k, tuple(pair)), compute)


def paths(run, k: int, pair: tuple[int, int], n: int = PATHS_N, steps: int = PATHS_STEPS) -> dict:
    """`n` samples' paths from noise to data, from one fixed starting noise, through round k
    and through the round before: {'t' (steps+1,), 'now', 'before' (steps+1, n, 2) in data
    units}. The paths follow the probability-flow ODE (no noise on the way), so each is
    smooth and two rounds' paths differ only by what the round changed."""
    def compute():
        out = {"t": torch.linspace(1.0, PATHS_T_MIN, steps + 1, dtype=torch.float64).numpy()}
        for name, r in (("now", k), ("before", _previous(run, k))):
            model = _model(run, r)
            x_init = FixedNoise.from_seed(PATHS_SEED, n, tuple(model.sample_shape), 1, dtype=_dtype(model)).x_init
            _, states = sample_ode(model, x_init, steps=steps, t_min=PATHS_T_MIN, return_trajectory=True)
            z = states.double().numpy().reshape(steps + 1, n, -1)
            raw = run.domain.from_features(run.standardizer.inverse(z.reshape(-1, z.shape[-1])))
            out[name] = np.asarray(raw).reshape(steps + 1, n, -1)[..., list(pair)]
        return out
    return _memo(run, "fields_paths", (k, tuple(pair), n, steps), compute)

