"""Partitions of items into buckets: 2-universal hashing, k-means, nearest-
centroid assignment, power-of-K-choices placement, and the inverted lists.

An assignment is an int32 array (n,) of bucket ids in [0, B). InvertedLists
holds R of them in CSR form: `offsets` int64 (R, B+1) and `lists` (R, n) of
item positions grouped by bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numba
import numpy as np

from ..progress import Callback, report
from ..validation import normalize_rows

_PRIME = (1 << 31) - 1  # Mersenne prime > any item position we hash


def hash_assign(n_items: int, n_buckets: int, seed: int) -> np.ndarray:
    """Bucket of each item position under h(x) = ((a x + b) mod p) mod B with
    a, b drawn from `seed` (a 2-universal family). int32 (n_items,)."""
    rng = np.random.default_rng([seed, 0x4A5])
    a = np.uint64(rng.integers(1, _PRIME))
    b = np.uint64(rng.integers(0, _PRIME))
    x = np.arange(n_items, dtype=np.uint64)
    return (((a * x + b) % np.uint64(_PRIME)) % np.uint64(n_buckets)).astype(np.int32)


def kmeans_sample(x: np.ndarray, n_buckets: int, spherical: bool, points_per_centroid: int = 256,
                  seed: int = 0) -> np.ndarray:
    """The seeded rows k-means learns from: at most `points_per_centroid` x B
    rows of `x` (float32 (n, d), may be memory-mapped) in file order, unit
    length when `spherical`. float32 (m, d)."""
    n = x.shape[0]
    rng = np.random.default_rng([seed, 0x3E4])
    m = min(n, n_buckets * points_per_centroid)
    rows = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
    sample = np.ascontiguousarray(x[rows], dtype=np.float32)
    return normalize_rows(sample) if spherical else sample


def kmeans(
    x: np.ndarray, n_buckets: int, spherical: bool, iters: int = 20,
    points_per_centroid: int = 256, seed: int = 0, callback: Callback = None,
) -> np.ndarray:
    """k-means (faiss.Kmeans, on every core) on a seeded sample of at most
    `points_per_centroid` x B rows of `x` (float32 (n, d), may be
    memory-mapped). Spherical k-means (unit centroids; on unit rows the
    nearest centroid is the one of largest inner product) when `spherical`.
    Reports "kmeans" progress every few iterations. Returns float32 (B, d).

    faiss.Kmeans replaced a hand-written Lloyd's loop: on GloVe (fast,
    B = 1024, same run) it took 3.8 s instead of 6.7 s with the same recall
    and QPS at every probe count (benchmarks/kmeans_switch.py, BENCHMARKS.md).
    """
    d = x.shape[1]
    sample = kmeans_sample(x, n_buckets, spherical, points_per_centroid, seed)
    m = sample.shape[0]
    cent = None
    done = 0
    report(callback, "kmeans", 0, iters)
    while done < iters:  # a few iterations per call, so progress can be reported
        step = min(_KMEANS_STEP, iters - done)
        km = faiss.Kmeans(d, n_buckets, niter=step, seed=seed + done, spherical=spherical,
                          max_points_per_centroid=max(points_per_centroid, -(-m // n_buckets)),
                          min_points_per_centroid=1, verbose=False)
        km.train(sample, init_centroids=cent)
        cent = km.centroids
        done += step
        report(callback, "kmeans", done, iters)
    return np.ascontiguousarray(cent, dtype=np.float32)


_KMEANS_STEP = 5  # iterations per faiss call (between progress reports)


def bucket_means(x: np.ndarray, assign: np.ndarray, n_buckets: int, spherical: bool,
                 old: np.ndarray | None = None, batch: int = 1 << 18) -> np.ndarray:
    """Mean of the rows of `x` (float32 (n, d), may be memory-mapped) in each
    bucket of `assign` (int (n,)): float32 (B, d), unit length when
    `spherical`. An empty bucket keeps its row of `old`, or zero. Streams `x`."""
    sums = np.zeros((n_buckets, x.shape[1]), dtype=np.float64)
    counts = np.bincount(assign, minlength=n_buckets)
    for s in range(0, x.shape[0], batch):
        a = assign[s : s + batch]
        order = np.argsort(a, kind="stable")
        sa = a[order]
        starts = np.flatnonzero(np.r_[True, sa[1:] != sa[:-1]])
        sums[sa[starts]] += np.add.reduceat(np.asarray(x[s : s + batch], dtype=np.float64)[order], starts, axis=0)
    out = np.zeros((n_buckets, x.shape[1]), dtype=np.float32)
    full = counts > 0
    out[full] = sums[full] / counts[full, None]
    if old is not None:
        out[~full] = old[~full]
    return normalize_rows(out) if spherical else out


def nearest_centroids(x: np.ndarray, centroids: np.ndarray, spherical: bool, k: int = 1,
                      batch: int = 1 << 16) -> np.ndarray:
    """The `k` best centroids for each row of `x`, best first (max inner
    product when `spherical`, else min L2). int32 (n, k); streams `x`."""
    metric = faiss.METRIC_INNER_PRODUCT if spherical else faiss.METRIC_L2
    out = np.empty((x.shape[0], k), dtype=np.int32)
    for s in range(0, x.shape[0], batch):
        part = np.ascontiguousarray(x[s : s + batch], dtype=np.float32)
        out[s : s + part.shape[0]] = faiss.knn(part, centroids, k, metric=metric)[1]
    return out


def assign_nearest(x: np.ndarray, centroids: np.ndarray, spherical: bool) -> np.ndarray:
    """Index of the best centroid for each row of `x`, int32 (n,)."""
    return nearest_centroids(x, centroids, spherical, 1)[:, 0]


@numba.njit(cache=True)
def _least_loaded(choices, k, order, counts, cap):
    out = np.empty(choices.shape[0], dtype=np.int32)
    for i in order:
        best = choices[i, 0]
        for j in range(1, k):
            c = choices[i, j]
            if counts[c] < counts[best]:
                best = c
        if counts[best] >= cap:  # all K choices full: next in the router's ranking
            best = -1
            for j in range(k, choices.shape[1]):
                if counts[choices[i, j]] < cap:
                    best = choices[i, j]
                    break
            if best < 0:  # still full: the least loaded bucket of all
                best = np.argmin(counts)
        out[i] = best
        counts[best] += 1
    return out


def fallback_width(k: int, n_buckets: int) -> int:
    """How many ranked buckets to fetch per item for `power_of_k`: the K
    choices plus a few fallbacks for when all K are full."""
    return min(n_buckets, k + 8)


def power_of_k(choices: np.ndarray, k: int, n_buckets: int, max_load: float | None, seed: int,
               loads: np.ndarray | None = None) -> np.ndarray:
    """Place each item in the least loaded of its top-K buckets.

    `choices` int (n, >= K) ranks buckets for each item, best first; the first
    `k` are the choices. Items go in a seeded random order against running
    counts; ties go to the better-ranked bucket. With `max_load`, no bucket
    grows past ceil(max_load * n / B): an item whose K choices are all full
    takes the next bucket in its ranking with room, else the least loaded
    bucket overall. `loads` int (B,) are the items already in each bucket
    (placing new items into a partition that exists; the cap then counts
    them too). Returns int32 (n,).
    """
    n = choices.shape[0]
    k = min(k, choices.shape[1])  # fewer buckets than choices: every ranked bucket is one
    counts = np.zeros(n_buckets, dtype=np.int64) if loads is None else np.array(loads, dtype=np.int64)
    total = n + int(counts.sum())
    cap = total + 1 if max_load is None else int(np.ceil(max_load * total / n_buckets))
    order = np.random.default_rng([seed, 0x90C]).permutation(n)
    return _least_loaded(np.ascontiguousarray(choices, dtype=np.int32), k, order, counts, cap)


@numba.njit(parallel=True, nogil=True, cache=True)
def _soar_pick(part, centroids, near, picked, lam, e, out):
    """The SOAR cost of each row's candidate buckets near int32 (n, w) given
    its buckets so far picked int32 (n, e + 1) (home first): |x - c|^2 +
    lam * sum_j <r_j, x - c>^2 / |r_j|^2 over the residuals r_j = x - c_j of
    those buckets; the cheapest candidate not used yet goes to out int32 (n,)."""
    n, d = part.shape
    w = near.shape[1]
    for i in numba.prange(n):
        rnorm = np.empty(e + 1, dtype=np.float32)  # |r_u|, the same for every candidate
        for u in range(e + 1):
            rr = np.float32(0.0)
            for t in range(d):
                r = part[i, t] - centroids[picked[i, u], t]
                rr += r * r
            rnorm[u] = np.sqrt(max(rr, np.float32(1e-12)))
        best = np.inf
        pick = near[i, 0]
        for j in range(w):
            c = near[i, j]
            taken = False
            for u in range(e + 1):
                if picked[i, u] == c:
                    taken = True
            if taken:
                continue
            cost = np.float32(0.0)
            for t in range(d):
                v = part[i, t] - centroids[c, t]
                cost += v * v
            for u in range(e + 1):
                h = picked[i, u]
                rd = np.float32(0.0)
                for t in range(d):
                    rd += (part[i, t] - centroids[h, t]) * (part[i, t] - centroids[c, t])
                proj = rd / rnorm[u]  # divided before squaring: no overflow
                cost += np.float32(lam) * proj * proj
            if cost < best:
                best = cost
                pick = c
        out[i] = pick


def soar_spill(x: np.ndarray, centroids: np.ndarray, primary: np.ndarray, extra: int,
               lam: float = 1.0, candidates: int = 16, batch: int = 1 << 16) -> np.ndarray:
    """`extra` more buckets for every item, chosen as in SOAR (Sun et al. 2023).

    Each further bucket c minimises |x - c|^2 + lam * sum_j <r_j, x - c>^2 /
    |r_j|^2 over the item's `candidates` nearest centroids not used yet, where
    r_j are the residuals x - c_j of the buckets it already has: a second home
    whose residual is orthogonal to the first one's catches the queries the
    first one misses. x float32 (N, d), centroids (B, d), primary int (N,).
    Returns int32 (extra, N). Streams `x` in batches; the costs are one
    compiled pass on every core.
    """
    n = x.shape[0]
    out = np.empty((extra, n), dtype=np.int32)
    width = min(centroids.shape[0], max(candidates, extra + 1))
    cents = np.ascontiguousarray(centroids, dtype=np.float32)
    # by L2, as SOAR; with unit centroids (spherical k-means) that is the
    # inner-product order, which FAISS finds 13 % faster
    unit = bool(np.all(np.abs((cents * cents).sum(1) - 1) < 1e-4))
    for s in range(0, n, batch):
        part = np.ascontiguousarray(x[s : s + batch], dtype=np.float32)
        near = nearest_centroids(part, cents, spherical=unit, k=width)
        picked = np.empty((part.shape[0], extra + 1), dtype=np.int32)
        picked[:, 0] = primary[s : s + batch]
        for e in range(extra):
            _soar_pick(part, cents, near, picked, lam, e, picked[:, e + 1])
            out[e, s : s + part.shape[0]] = picked[:, e + 1]
    return out


@dataclass
class InvertedLists:
    """R repetitions of n item positions in B buckets, CSR-style.

    `offsets` int64 (R, B+1): bucket b of repetition r holds
    `lists[r, offsets[r, b]:offsets[r, b+1]]`, item positions (int32 (R, c n))
    in increasing order. Each item sits in `copies` = c buckets per repetition
    (c > 1 when spilled; never twice in one bucket).
    """

    offsets: np.ndarray
    lists: np.ndarray

    @classmethod
    def from_assignments(cls, assign: np.ndarray, n_buckets: int) -> "InvertedLists":
        """Build from int bucket ids (R, n), or (R, c, n) for c copies."""
        if assign.ndim == 2:
            assign = assign[:, None, :]
        r, c, n = assign.shape
        dtype = np.int32 if n < 2**31 else np.int64
        offsets = np.zeros((r, n_buckets + 1), dtype=np.int64)
        lists = np.empty((r, c * n), dtype=dtype)
        items = np.tile(np.arange(n, dtype=dtype), c)
        for i in range(r):
            flat = assign[i].reshape(-1)
            offsets[i, 1:] = np.cumsum(np.bincount(flat, minlength=n_buckets))
            order = np.lexsort((items, flat))  # by bucket, then item position
            lists[i] = items[order]
        return cls(offsets, lists)

    @property
    def n_buckets(self) -> int:
        return self.offsets.shape[1] - 1

    def sizes(self) -> np.ndarray:
        """Items per bucket, int64 (R, B)."""
        return np.diff(self.offsets, axis=1)

    def extend(self, assign: np.ndarray, first: int) -> "InvertedLists":
        """These lists plus n new items at positions first .. first + n - 1
        with buckets `assign` int (R, c, n): a new InvertedLists, O(entries)
        per repetition (no sort of the old entries). New positions must be
        larger than every old one, so each bucket stays in increasing order."""
        r, c, n = assign.shape
        b = self.n_buckets
        total = self.lists.shape[1] + c * n
        dtype = np.int32 if first + n < 2**31 else np.int64
        offsets = np.empty_like(self.offsets)
        lists = np.empty((r, total), dtype=dtype)
        items = np.tile(np.arange(first, first + n, dtype=dtype), c)
        for i in range(r):
            flat = assign[i].reshape(-1)
            add = np.bincount(flat, minlength=b)
            before = np.concatenate([[0], np.cumsum(add)[:-1]])  # new entries in earlier buckets
            offsets[i] = self.offsets[i] + np.concatenate([[0], np.cumsum(add)])
            old_sizes = np.diff(self.offsets[i])
            lists[i, np.arange(self.lists.shape[1]) + np.repeat(before, old_sizes)] = self.lists[i]
            order = np.lexsort((items, flat))
            fb = flat[order]
            rank = np.arange(c * n) - before[fb]  # place within the bucket's new run
            lists[i, self.offsets[i, 1:][fb] + before[fb] + rank] = items[order]
        return InvertedLists(offsets, lists)
