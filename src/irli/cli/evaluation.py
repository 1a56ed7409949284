"""Timed evaluation: one batched search at pinned threads, probe sweeps
reporting recall@k, candidates per query and QPS, and one query per call
(QPS and latency percentiles), the way an online service searches."""

from __future__ import annotations

import inspect
import time

import numpy as np

from ..errors import InvalidInputError
from ..metrics import recall_at_k


def timed_search(index, queries: np.ndarray, k: int, probes: int, threads: int | None = 1, **kw):
    """(SearchResult, seconds) of one batched `index.search` call.

    With `threads`, numba, BLAS and OpenMP are pinned to that many threads and
    a small warm-up call (kernel compilation, page-in) runs first, untimed.
    """
    from ..threads import limit

    kw = _accepted(index, {k: v for k, v in kw.items() if v is not None})
    if "threads" not in inspect.signature(index.search).parameters:  # a sharded index: its parts set their own
        t = time.perf_counter()
        res = index.search(queries, k=k, probes=probes, **kw)
        return res, time.perf_counter() - t
    if threads is None:
        t = time.perf_counter()
        res = index.search(queries, k=k, probes=probes, threads=None, **kw)
        return res, time.perf_counter() - t
    with limit(threads):
        index.search(queries[:8], k=k, probes=probes, threads=threads, **kw)
        t = time.perf_counter()
        res = index.search(queries, k=k, probes=probes, threads=threads, **kw)
        return res, time.perf_counter() - t


def _accepted(index, kw: dict) -> dict:
    """`kw` if `index.search` takes each of them; InvalidInputError naming
    the first it does not."""
    params = inspect.signature(index.search).parameters
    for name in kw:
        if name not in params:
            raise InvalidInputError(f"{name} is not available on a {type(index).__name__}")
    return kw


def single_queries(index, queries: np.ndarray, probes: int, k: int = 10, n: int | None = None,
                   **kw) -> dict:
    """Search the first `n` queries one call each, on one thread, as a
    service (and the ann-benchmarks runner) does: {"qps", "p50_us",
    "p99_us", "n"}. A few untimed calls first compile and page in."""
    from threadpoolctl import threadpool_limits

    q = queries[:n] if n else queries
    lat = np.empty(q.shape[0])
    with threadpool_limits(1):
        for i in range(min(16, q.shape[0])):
            index.search(q[i], k=k, probes=probes, **kw)
        for i in range(q.shape[0]):
            v = q[i]
            t = time.perf_counter()
            index.search(v, k=k, probes=probes, **kw)
            lat[i] = time.perf_counter() - t
    return {"qps": q.shape[0] / lat.sum(), "p50_us": float(np.median(lat) * 1e6),
            "p99_us": float(np.percentile(lat, 99) * 1e6), "n": int(q.shape[0])}


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

    def style(c) -> str:
        """One number format per column: fractions (recall, P@k) with 3
        decimals, other floats with 1 below 100 and none above."""
        vals = [r[c] for r in rows if isinstance(r.get(c), float)]
        if not vals:
            return ""
        if all(0.0 <= v <= 1.0 for v in vals):
            return ".3f"
        return ",.1f" if max(abs(v) for v in vals) < 100 else ",.0f"

    styles = {c: style(c) for c in cols}

    def fmt(v, c):
        if isinstance(v, float):
            return format(v, styles[c])
        return f"{v:,}" if isinstance(v, int) else str(v)

    cells = [[fmt(r.get(c, ""), c) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]

    def line(vals):
        return "  ".join(v.rjust(w) for v, w in zip(vals, widths))

    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])
