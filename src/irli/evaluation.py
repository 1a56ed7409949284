"""Timed evaluation: one batched search at pinned threads, and probe sweeps
reporting recall@k, candidates per query and QPS."""

from __future__ import annotations

import time

import numpy as np

from .metrics import recall_at_k


def timed_search(index, queries: np.ndarray, k: int, probes: int, threads: int | None = 1, **kw):
    """(SearchResult, seconds) of one batched `index.search` call.

    With `threads`, numba, BLAS and OpenMP are pinned to that many threads and
    a small warm-up call (kernel compilation, page-in) runs first, untimed.
    """
    import faiss
    import numba
    from threadpoolctl import threadpool_limits

    if threads is None:
        t = time.perf_counter()
        res = index.search(queries, k=k, probes=probes, threads=None, **kw)
        return res, time.perf_counter() - t
    old = numba.get_num_threads()
    old_omp = faiss.omp_get_max_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    faiss.omp_set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            index.search(queries[:8], k=k, probes=probes, threads=threads, **kw)
            t = time.perf_counter()
            res = index.search(queries, k=k, probes=probes, threads=threads, **kw)
            return res, time.perf_counter() - t
    finally:
        numba.set_num_threads(old)
        faiss.omp_set_num_threads(old_omp)


def sweep(index, queries: np.ndarray, truth: np.ndarray, k: int, probes: list[int],
          threads: int | None = 1, **kw) -> list[dict]:
    """One row per probe count: probes, recall@k, candidates (scored exactly)
    and scanned (entries read from the buckets), means per query, and QPS."""
    rows = []
    for m in probes:
        res, secs = timed_search(index, queries, k, m, threads, **kw)
        rows.append({"probes": min(m, index.n_buckets), f"recall@{k}": recall_at_k(res.ids, truth, k),
                     "candidates": float(res.candidates.mean()), "scanned": float(res.scanned.mean()),
                     "QPS": queries.shape[0] / secs})
    return rows


def format_table(rows: list[dict], cols: list[str] | None = None) -> str:
    """Rows of dicts as an aligned plain-text table."""
    cols = cols or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:,.0f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]

    def line(vals):
        return "  ".join(v.rjust(w) for v, w in zip(vals, widths))

    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])
