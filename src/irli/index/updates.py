"""Changing a fitted index without retraining: where new items go, room for
them in the stored arrays, and how far the partition has drifted from what
its routers would now choose.

New items are placed by the same rule that built the partition: with
re-partitioning (IRLI, balanced k-means) each goes to the least loaded of
its router's top `k_choices` buckets, counting the items already there
against the load cap; otherwise to its router's best bucket (for centroid
routers, the nearest centroid, as k-means assigned the rest). Spilled indexes
give new items their SOAR buckets too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import IndexConfig
from ..model.partition import fallback_width, power_of_k, soar_spill
from ..model.routers import Router, route


def grow(buf: np.ndarray, used: int, extra: int, axis: int = 0) -> np.ndarray:
    """`buf`, or a copy with room for `used + extra` along `axis` (capacity
    grows by half, so n appends cost O(n) copies in all); the first `used`
    entries are kept. A read-only buffer (a memory map) is always copied."""
    cap = buf.shape[axis]
    if used + extra <= cap and buf.flags.writeable:
        return buf
    shape = list(buf.shape)
    shape[axis] = max(used + extra, cap + cap // 2)
    out = np.empty(shape, dtype=buf.dtype)
    keep = [slice(None)] * buf.ndim
    keep[axis] = slice(0, used)
    out[tuple(keep)] = buf[tuple(keep)]
    return out


def choices_per_item(cfg: IndexConfig) -> int:
    """K: how many of its router's best buckets an item may be placed in."""
    return cfg.k_choices if cfg.repartition else 1


def place(x: np.ndarray, routers: list[Router], cfg: IndexConfig, loads: np.ndarray,
          centres: np.ndarray, seed: int, batch: int = 1 << 14) -> np.ndarray:
    """Buckets for new items `x` (float32 (n, d), normalised for cosine) in
    every repetition: int32 (R, c, n), [:, 0] the home bucket, [:, 1:] the
    spilled ones. `loads` int (R, B) are the live items per home bucket now;
    `centres` float32 (R, B, d) the bucket centres used for spilling."""
    n = x.shape[0]
    reps, b = loads.shape
    k = choices_per_item(cfg)
    width = fallback_width(k, b) if cfg.repartition else 1
    choices = np.empty((reps, n, width), dtype=np.int32)
    for s in range(0, n, batch):
        choices[:, s : s + batch] = route(routers, x[s : s + batch], width)[0]
    out = np.empty((reps, cfg.copies, n), dtype=np.int32)
    for r in range(reps):
        if cfg.repartition:
            out[r, 0] = power_of_k(choices[r], k, b, cfg.max_load, seed + r, loads=loads[r])
        else:
            out[r, 0] = choices[r, :, 0]
        if cfg.spill:
            out[r, 1:] = soar_spill(x, centres[r], out[r, 0], cfg.spill, cfg.spill_lambda)
    return out


@dataclass
class Drift:
    """How far an index has drifted from what its routers would build now.

    moved: share of live items (a seeded sample of `sample`) whose home bucket
    is not among their router's top K choices (K = `k_choices` with
    re-partitioning, else 1), averaged over repetitions; moved_per_rep per
    repetition. imbalance: the fullest home bucket over the mean, worst
    repetition; load_cv: the coefficient of variation of the bucket loads.
    *_at_fit: the same right after the last fit or refresh (a partition
    balanced under a load cap never scores 0). added / removed: items since
    then. `excess` = moved - moved_at_fit is the part that drift caused.
    """

    moved: float
    moved_per_rep: list[float]
    imbalance: float
    load_cv: float
    moved_at_fit: float
    imbalance_at_fit: float
    added: int
    removed: int
    sample: int

    @property
    def excess(self) -> float:
        return self.moved - self.moved_at_fit



def sample_rows(n: int, sample: int, seed: int) -> np.ndarray:
    """A seeded sorted sample of min(n, sample) row numbers out of n, int64."""
    if n <= sample:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, 0xD21F]).choice(n, size=sample, replace=False))


def measure(x: np.ndarray, homes_x: np.ndarray, homes: np.ndarray, routers: list[Router],
            cfg: IndexConfig, n_buckets: int) -> tuple[list[float], float, float]:
    """(moved per repetition, imbalance, load cv), see Drift: `x` float32
    (s, d) is a sample of the live items and `homes_x` int (R, s) their home
    buckets; `homes` int (R, n) are the home buckets of all live items."""
    k = min(choices_per_item(cfg), n_buckets)
    top = route(routers, np.ascontiguousarray(x, dtype=np.float32), k)[0]  # (R, s, K)
    moved = [float((top[r] != homes_x[r, :, None]).all(axis=1).mean()) for r in range(len(routers))]
    loads = np.stack([np.bincount(h, minlength=n_buckets) for h in homes]).astype(np.float64)
    mean = loads.mean(axis=1)
    imbalance = float((loads.max(axis=1) / np.maximum(mean, 1e-12)).max())
    cv = float((loads.std(axis=1) / np.maximum(mean, 1e-12)).max())
    return moved, imbalance, cv
