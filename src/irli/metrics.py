"""Quality measures: recall@k, routing accuracy, bucket-load statistics, and
the extreme-classification measures P@k, nDCG@k, PSP@k and label coverage."""

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


# -- extreme classification ------------------------------------------------------
def _hits(pred: np.ndarray, y, k: int) -> np.ndarray:
    """bool (n, k): whether each of the top-k predicted labels is relevant.
    pred: int (n, >= k) label ids best first, -1 padding; y: CSR (n, L) 0/1."""
    import scipy.sparse as sp

    pred = np.asarray(pred)
    if not sp.issparse(y):
        raise InvalidInputError("Y must be a scipy sparse 0/1 matrix (see irli.labels.xcformat.label_matrix)")
    if pred.ndim != 2 or pred.shape[0] != y.shape[0]:
        raise InvalidInputError(f"predictions have shape {pred.shape} but Y has {y.shape[0]} rows")
    if not 1 <= k <= pred.shape[1]:
        raise InvalidInputError(f"k={k} out of range for {pred.shape[1]} predicted labels per point")
    p = pred[:, :k]
    valid = (p >= 0) & (p < y.shape[1])
    y = y.tocsr()
    rows = np.repeat(np.arange(p.shape[0]), k)
    vals = np.asarray(y[rows, np.where(valid, p, 0).ravel()]).reshape(p.shape)
    return (vals > 0) & valid


def precision_at_k(pred: np.ndarray, y, k: int) -> float:
    """P@k: mean over points of |top-k ∩ relevant| / k (divided by k, not by
    min(k, |relevant|); points without labels count as 0)."""
    return float(_hits(pred, y, k).sum(axis=1).mean() / k)


def ndcg_at_k(pred: np.ndarray, y, k: int) -> float:
    """nDCG@k: DCG of the top k (gain 1 per relevant label, discount
    1 / log2(rank + 1)) over the ideal DCG of min(k, |relevant|) hits; points
    without labels count as 0."""
    hits = _hits(pred, y, k)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ disc
    n_rel = np.minimum(np.diff(y.tocsr().indptr), k)
    ideal = np.concatenate([[0.0], np.cumsum(disc)])[n_rel]
    return float(np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0).mean())


def propensity(y_train, a: float = 0.55, b: float = 1.5) -> np.ndarray:
    """Label propensities p_l = 1 / (1 + C (N_l + B)^-A), C = (ln N - 1)(B + 1)^A
    (Jain, Prabhu, Varma 2016), from training labels y_train CSR (N, L).
    float64 (L,). A = 0.55, B = 1.5 are the usual defaults (0.6 / 2.6 for
    Amazon, 0.5 / 0.4 for Wikipedia sets)."""
    counts = np.asarray((y_train > 0).sum(axis=0)).ravel()
    return propensity_from_counts(counts, y_train.shape[0], a, b)


def propensity_from_counts(counts: np.ndarray, n: int, a: float = 0.55, b: float = 1.5) -> np.ndarray:
    """`propensity` from per-label training counts (L,) and the number of
    training points n."""
    counts = np.asarray(counts, dtype=np.float64)
    c = (np.log(max(n, 2)) - 1.0) * (b + 1.0) ** a
    return 1.0 / (1.0 + c * np.exp(-a * np.log(counts + b)))


def psp_at_k(pred: np.ndarray, y, k: int, prop: np.ndarray, normalize: bool = True) -> float:
    """Propensity-scored precision PSP@k = (1/k) sum over the top k of y_l / p_l.

    With `normalize` (as in the Extreme Classification Repository tables and
    pyxclib), the sum over points is divided by that of the best possible
    ranking (each point's relevant labels by largest 1 / p_l), so 1.0 is perfect.
    """
    hits = _hits(pred, y, k)
    p = np.asarray(pred)[:, :k]
    inv = 1.0 / np.asarray(prop, dtype=np.float64)
    w = np.where(hits, inv[np.clip(p, 0, len(inv) - 1)], 0.0)
    score = w.sum() / k
    if not normalize:
        return float(score / p.shape[0])
    y = y.tocsr()
    best = 0.0
    for i in range(y.shape[0]):
        v = inv[y.indices[y.indptr[i]:y.indptr[i + 1]]]
        if v.size:
            best += np.sort(v)[::-1][:k].sum()
    return float(score * k / best) if best > 0 else 0.0


def label_coverage(pred: np.ndarray, y, k: int) -> float:
    """Share of the labels relevant to some point in `y` that are predicted
    correctly in the top k of at least one point."""
    hits = _hits(pred, y, k)
    relevant = np.unique(y.tocsr().indices)
    if relevant.size == 0:
        return 0.0
    found = np.unique(np.asarray(pred)[:, :k][hits])
    return float(np.isin(relevant, found).mean())
