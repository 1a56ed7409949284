"""Exact top-k search in bounded memory (FAISS brute force, batched both ways).

Used for ground truth, for training targets and as the reference in tests.
"""

from __future__ import annotations

import faiss
import numpy as np

from ..metric import Metric
from ..progress import Callback, report


def exact_knn(
    items: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str = "ip",
    query_batch: int = 4096,
    item_batch: int = 1 << 20,
    callback: Callback = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-`k` of `queries` (float32 (nq, d)) among `items` (float32 (n, d)).

    Returns (ids int64 (nq, k), scores float32 (nq, k)): inner products, best
    first, for "ip" and "cosine" (rows normalised here for "cosine"); squared L2
    distances, nearest first, for "l2". Missing results (k > n) are id -1.
    Memory stays within about `query_batch` x `item_batch` scores at a time;
    `callback` gets "ground-truth" progress in queries.
    """
    # faiss.contrib.exhaustive_search.knn_ground_truth is the same loop
    # (faiss.knn into a ResultHeap over item blocks); this one also blocks
    # the queries, normalises for cosine and pads k > n with -1
    nq, n = queries.shape[0], items.shape[0]
    kind = Metric.named(metric)
    fmetric = kind.faiss_metric
    keep_max = not kind.l2
    out_i = np.full((nq, k), -1, dtype=np.int64)
    pad = -np.inf if keep_max else np.inf
    out_d = np.full((nq, k), pad, dtype=np.float32)
    kk = min(k, n)
    for qs in range(0, nq, query_batch):
        q = np.ascontiguousarray(queries[qs : qs + query_batch], dtype=np.float32)
        if kind.cosine:
            q = kind.prepare_items(q, "queries")
        heap = faiss.ResultHeap(q.shape[0], kk, keep_max=keep_max)
        for s in range(0, n, item_batch):
            x = np.ascontiguousarray(items[s : s + item_batch], dtype=np.float32)
            if kind.cosine:
                x = kind.prepare_items(x, "items")
            d, i = faiss.knn(q, x, min(kk, x.shape[0]), metric=fmetric)
            if d.shape[1] < kk:  # a short last chunk: pad to the heap's width
                d = np.pad(d, ((0, 0), (0, kk - d.shape[1])), constant_values=pad)
                i = np.pad(i, ((0, 0), (0, kk - i.shape[1])), constant_values=-1)
            i = np.where(i >= 0, i + s, -1)
            heap.add_result(np.ascontiguousarray(d, dtype=np.float32), np.ascontiguousarray(i, dtype=np.int64))
        heap.finalize()
        out_i[qs : qs + q.shape[0], :kk] = heap.I
        out_d[qs : qs + q.shape[0], :kk] = heap.D
        report(callback, "ground-truth", min(qs + query_batch, nq), nq)
    return out_i, out_d
