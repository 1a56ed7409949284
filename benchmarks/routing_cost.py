"""What routing costs at high dimension (issue 23): the compiled routing of
one query (and of queries in groups, as a batch routes them) over B = 1,024
buckets, and the scoring of B centroids by layout and number type, at
d = 50, 384 and 768, on one thread, random weights.

    python benchmarks/routing_cost.py

Prints microseconds per query. The int16 and int8 kernels are candidates
for a quantised router with an exact fix-up of its shortlist, not part of
irli yet.
"""

from __future__ import annotations

import time

import numba
import numpy as np


@numba.njit(fastmath=True)
def _dot_float(q, c, out):  # centroid-major float32
    for b in range(c.shape[0]):
        s = np.float32(0)
        for t in range(c.shape[1]):
            s += q[t] * c[b, t]
        out[b] = s


@numba.njit(fastmath=True)
def _dot_int(q, c, out):  # centroid-major int16 or int8, int32 sums
    for b in range(c.shape[0]):
        s = np.int32(0)
        for t in range(c.shape[1]):
            s += np.int32(q[t]) * np.int32(c[b, t])
        out[b] = s


@numba.njit(fastmath=True)
def _axpy(q, a, out):  # d-major float32, as irli's routing holds the weights
    out[:] = 0
    for j in range(a.shape[0]):
        v = q[j]
        for b in range(a.shape[1]):
            out[b] += v * a[j, b]


@numba.njit
def _each(f, qs, w, out):
    for i in range(qs.shape[0]):
        f(qs[i], w, out)


def _per_query(f, *args, n) -> float:
    f(*args)  # compiled
    t = time.perf_counter()
    f(*args)
    return (time.perf_counter() - t) / n * 1e6


def main() -> int:
    from irli.kernels.route import route_kernel
    from irli.model.routers import Routing

    @numba.njit
    def one_by_one(q, a1, b1, tiles, b2, rows, half, slack, t8, s8, probed, probs):
        for i in range(q.shape[0]):
            route_kernel(q, i, i + 1, a1, b1, tiles, b2, rows, half, slack, t8, s8, probed, probs, True)

    @numba.njit
    def batched(q, a1, b1, tiles, b2, rows, half, slack, t8, s8, probed, probs):
        route_kernel(q, 0, q.shape[0], a1, b1, tiles, b2, rows, half, slack, t8, s8, probed, probs, True)

    rng = np.random.default_rng(0)
    n, b, m = 3000, 1024, 24
    print("d | route one query | route in a batch | d-major f32 | centroid-major f32 | int16 | int8  (us/query)")
    for d in (50, 384, 768):
        q = rng.normal(size=(n, d)).astype(np.float32)
        a1 = rng.normal(size=(1, d, b)).astype(np.float32)
        rt = Routing(a1, np.zeros((1, b), np.float32), np.zeros((1, 0, 0), np.float32), np.zeros((1, 0), np.float32))
        args = (q, rt.first_tiles, rt.b1, rt.tiles, rt.b2, rt.rows, rt.half, rt.slack, rt.tiles8, rt.scale8,
                np.empty((1, n, m), np.int32),
                np.empty((1, 0, 0), np.float32))
        single = _per_query(one_by_one, *args, n=n)
        batch = _per_query(batched, *args, n=n)
        c = np.ascontiguousarray(a1[0].T)
        outf, outi = np.empty(b, np.float32), np.empty(b, np.int32)
        row = [_per_query(_each, _axpy, q, a1[0], outf, n=n), _per_query(_each, _dot_float, q, c, outf, n=n)]
        for t in (np.int16, np.int8):
            row.append(_per_query(_each, _dot_int, (q * 30).astype(t), (c * 30).astype(t), outi, n=n))
        print(f"{d} | {single:.1f} | {batch:.1f} | " + " | ".join(f"{v:.1f}" for v in row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
