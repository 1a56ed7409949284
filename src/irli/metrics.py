"""Quality measures: recall@k, routing accuracy, bucket-load statistics."""

from __future__ import annotations

import numpy as np

from .errors import InvalidInputError


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int | None = None) -> float:
    """Mean over queries of |found[:, :k] & truth[:, :k]| / k.

    found, truth: int (n, >= k) ids, best first; -1 entries in `found` never
    match. k defaults to truth's width.
    """
    found, truth = np.asarray(found), np.asarray(truth)
    k = truth.shape[1] if k is None else k
    if found.shape[0] != truth.shape[0]:
        raise InvalidInputError(f"found has {found.shape[0]} rows, truth has {truth.shape[0]}")
    if found.shape[1] < k or truth.shape[1] < k:
        raise InvalidInputError(f"recall@{k} needs at least {k} columns in both arrays")
    f, t = found[:, :k], truth[:, :k]
    hits = (f[:, :, None] == t[:, None, :]) & (f[:, :, None] >= 0)
    return float(hits.any(axis=2).sum(axis=1).mean() / k)


def routing_accuracy(probed: np.ndarray, assign: np.ndarray, top1: np.ndarray) -> float:
    """Share of queries whose true nearest item sits in a probed bucket of at
    least one repetition.

    probed: int (R, n, m) buckets opened (from `Index.route`); assign: int
    (R, N) bucket of each item id (`Index.assignments()`); top1: int (n,)
    id of each query's exact nearest item.
    """
    probed, assign, top1 = np.asarray(probed), np.asarray(assign), np.asarray(top1)
    if probed.shape[0] != assign.shape[0] or probed.shape[1] != top1.shape[0]:
        raise InvalidInputError("probed, assign and top1 do not agree in repetitions or queries")
    target = assign[:, top1]  # (R, n)
    return float((probed == target[:, :, None]).any(axis=2).any(axis=0).mean())


def bucket_load(sizes: np.ndarray) -> dict[str, float]:
    """Load statistics of bucket sizes (B,) or (R, B), pooled over repetitions:
    max, mean, max/mean, std, and the number of empty buckets."""
    s = np.asarray(sizes, dtype=np.float64).ravel()
    mean = float(s.mean())
    return {"max": float(s.max()), "mean": mean, "max_over_mean": float(s.max() / mean) if mean else 0.0,
            "std": float(s.std()), "empty": int((s == 0).sum())}
