"""A learned probe budget: how many buckets each query should open.

Queries differ in how many buckets they need: on GloVe, with `fast`'s
partition, the per-query oracle reaches recall 0.962 with 0.36x the codes of
a fixed count. `ProbeBudget` predicts the count from what a query shows
before and early in its scan, and spends the same mean budget where it is
needed:

    log(probes needed) ~ w . (the best N_SCORES router scores,
                              the best and 10th best scores found in
                              the first m0 buckets) + bias

a ridge regression fitted at `Index.fit` on N_TRAIN training queries (items drawn
from the collection, their own row excluded, or the user's query log): the
target is the number of probes, in routing order, that reaches every one of
the query's exact top-10 that the first `width` buckets hold. At search the
kernel (irli.kernels.pq_scan.pq_block) scans the first m0 buckets, reads the
best and 10th best of its heap's approximate scores (the fit reads exact
ones: re-scoring exactly cost a 384-d query more than it gained), and gives
the query ceil(scale x probes x exp(prediction)) buckets, clipped to
[m0, WIDEST x probes] (at least N_SCORES, at most B): the routing pass
selects that many buckets, so a wider cap costs every query routing time
while fewer and fewer queries use it (GloVe, issue 24: a cap of 2x probes and 32
router scores read 0.71x the codes of fixed probes at recall 0.95, a cap of
1.5x and 8 scores 0.72x, routing as wide as fixed probes do; on MiniLM-384 a
cap of 1.5x read 0.67x, 2x 0.65x, 2.5x and 3x no fewer). `scale` is
fitted so that the mean over the training queries is `probes` before the
cap: the knob keeps its meaning, about the mean number of buckets opened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from ..kernels.exact import exact_knn
from ..kernels.scoring import FAST
from ..kernels.topk import push_lex

#: training queries drawn from the items (or taken from the query log): the fit's time is mostly their
#: exact top-10; 4,000 fit as well as 10,000 (codes at recall 0.95: GloVe 0.720x against 0.718x of `fast`'s,
#: MiniLM-384 0.649x against 0.651x) in 0.4x the time (GloVe 8.3 -> 3 s, MiniLM 23 -> 8 s)
N_TRAIN = 4_000
#: buckets every query scans before its budget is predicted
FIRST = 2
#: routing width while fitting: the probes a target may ask for
FIT_WIDTH = 64
#: router scores the model reads (a saved model may read another number)
N_SCORES = 8
#: the most buckets one query may open, in units of the mean (`probes`)
WIDEST = 2.0


@dataclass(frozen=True)
class ProbeBudget:
    """weights float32 (S + 3,): S router scores (N_SCORES when fitted here),
    10th best and best score after `first` probes (exact in the fit, the
    scan's approximate ones at search), bias; `scale`: the
    calibration that makes the mean predicted count equal the `probes`
    asked for."""

    weights: np.ndarray
    first: int
    scale: float

    def args(self, probes: int, n_buckets: int) -> tuple[np.ndarray, int, float, int]:
        """(stop_w, m0, budget, routing width) for the search kernel at a
        mean of `probes` buckets per query."""
        width = min(n_buckets, max(self.n_scores, math.ceil(WIDEST * probes)))
        return self.weights, min(self.first, width), float(probes * self.scale), width

    @property
    def n_scores(self) -> int:
        return self.weights.shape[0] - 3

    def to_dict(self) -> dict:
        return {"weights": [float(v) for v in self.weights], "first": self.first, "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> "ProbeBudget":
        w = np.asarray(d["weights"], dtype=np.float32)
        if w.ndim != 1 or not 4 <= w.shape[0] <= FIT_WIDTH + 3 or not np.isfinite(w).all():
            raise ValueError(f"probe budget weights must be 4 to {FIT_WIDTH + 3} finite numbers")
        first, scale = int(d["first"]), float(d["scale"])
        if first < 1 or not (np.isfinite(scale) and scale > 0):
            raise ValueError("probe budget: first must be >= 1 and scale > 0")
        return cls(w, first, scale)


#: the kernel's arguments for a fixed count of probes
FIXED = (np.zeros(0, dtype=np.float32), 1, 1.0)


def fit_budget(x: np.ndarray, assign: np.ndarray, offsets: np.ndarray, lists: np.ndarray, routing, metric: str,
               seed: int, queries: np.ndarray | None = None, n_train: int = N_TRAIN, ridge: float = 1.0
               ) -> ProbeBudget:
    """Fit a ProbeBudget for one repetition's partition.

    x float32 (N, d) item vectors by position (normalised for cosine);
    assign int32 (c, N) every bucket of each item; offsets int64 (B + 1,)
    and lists int32 of that repetition's inverted lists; routing: the
    index's irli.model.routers.Routing; queries float32 (m, d): a query log
    (normalised like x), else `n_train` items are drawn (seeded) and their
    own row is left out of their neighbours and features.
    """
    n = x.shape[0]
    l2 = metric == "l2"
    if queries is None:
        rng = np.random.default_rng([seed, 0xB0D6])
        rows = np.sort(rng.choice(n, size=min(n_train, n), replace=False))
        q = np.ascontiguousarray(x[rows])
        skip = rows.astype(np.int64)
    else:
        q = np.ascontiguousarray(queries[:n_train], dtype=np.float32)
        skip = np.full(q.shape[0], -1, dtype=np.int64)
    kn = min(10, n - 1)
    nb, _ = exact_knn(x, q, kn + 1, "l2" if l2 else "ip")
    truth = np.empty((q.shape[0], kn), dtype=np.int64)
    _drop_self(nb, skip, truth)
    b = offsets.shape[0] - 1
    width = min(b, FIT_WIDTH)
    probed = np.empty((routing.n_reps, q.shape[0], width), dtype=np.int32)
    top = np.empty((routing.n_reps, q.shape[0], width), dtype=np.float32)
    routing.block(q, 0, q.shape[0], probed, top, raw=True)
    need = _needed(probed[0], assign, truth, b)
    first = min(FIRST, width)
    feats = _first_scores(q, probed[0], first, offsets, lists, x, l2, skip)
    feats = np.where(np.isfinite(feats), feats, top[0][:, :1])  # nothing found: the kernel uses the best router score
    cols = np.minimum(np.arange(N_SCORES), width - 1)
    design = np.hstack([top[0][:, cols], feats, np.ones((q.shape[0], 1), np.float32)]).astype(np.float64)
    y = np.log(need.astype(np.float64))
    mean, std = design[:, :-1].mean(0), design[:, :-1].std(0) + 1e-9
    z = np.hstack([(design[:, :-1] - mean) / std, np.ones((design.shape[0], 1))])
    penalty = ridge * np.eye(z.shape[1])
    penalty[-1, -1] = 0.0  # the bias is not shrunk
    wz = np.linalg.solve(z.T @ z + penalty, z.T @ y)
    w = np.empty(design.shape[1])
    w[:-1] = wz[:-1] / std
    w[-1] = wz[-1] - np.sum(wz[:-1] * mean / std)
    scale = 1.0 / float(np.mean(np.exp(design @ w)))
    return ProbeBudget(w.astype(np.float32), first, scale)


@numba.njit(cache=True)
def _drop_self(nb, skip, out):
    """Each row of nb without the position skip[i] (its query's own row),
    truncated to out's width."""
    for i in range(nb.shape[0]):
        c = 0
        for t in range(nb.shape[1]):
            if nb[i, t] != skip[i] and c < out.shape[1]:
                out[i, c] = nb[i, t]
                c += 1
        while c < out.shape[1]:
            out[i, c] = -1
            c += 1


@numba.njit(cache=True)
def _needed(probed, assign, truth, n_buckets):
    """Probes (in routing order) that reach every one of each query's true
    neighbours held by its first probed.shape[1] buckets: int64 (n,), at
    least 1; a query none of whose neighbours are reached needs them all."""
    n, width = probed.shape
    rank = np.full(n_buckets, width, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        for j in range(width):
            rank[probed[i, j]] = j
        worst = -1
        for t in range(truth.shape[1]):
            p = truth[i, t]
            if p < 0:
                continue
            best = width
            for c in range(assign.shape[0]):
                best = min(best, rank[assign[c, p]])
            if best < width:
                worst = max(worst, best)
        out[i] = worst + 1 if worst >= 0 else width
        for j in range(width):
            rank[probed[i, j]] = width
    return out


@numba.njit(nogil=True, fastmath=FAST, cache=True)
def _first_scores(q, probed, first, offsets, lists, x, l2, skip):
    """float32 (n, 2): the 10th best and the best exact score (negative
    squared distance for l2) among the items of each query's first `first`
    probed buckets, its own row (skip) left out; as the kernel computes
    them at search."""
    n, d = q.shape
    out = np.empty((n, 2), dtype=np.float32)
    hs = np.empty(10, dtype=np.float32)  # a min-heap of the best 10, as the kernel keeps them
    hid = np.empty(10, dtype=np.int64)
    stamp = np.full(x.shape[0], -1, dtype=np.int64)  # an item spilled to two of the buckets counts once
    for i in range(n):
        size = 0
        for j in range(first):
            b = probed[i, j]
            for e in range(offsets[b], offsets[b + 1]):
                p = lists[e]
                if p == skip[i] or stamp[p] == i:
                    continue
                stamp[p] = i
                s = np.float32(0.0)
                if l2:
                    for t in range(d):
                        diff = q[i, t] - x[p, t]
                        s -= diff * diff
                else:
                    for t in range(d):
                        s += q[i, t] * x[p, t]
                size = push_lex(hs, hid, size, 10, s, p)
        out[i, 0] = hs[0] if size else -np.inf  # the 10th best, or the worst of fewer
        out[i, 1] = hs[:size].max() if size else -np.inf
    return out
