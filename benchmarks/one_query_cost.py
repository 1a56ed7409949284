"""Where one query's time goes (issue 23): the compressed search kernel
called for one query at a time, against the same queries in one batch, the
same query repeated (everything in cache), and the kernel with routing
replaced by a table lookup of the same buckets (what routing costs in situ,
with the scan evicting its table).

    python benchmarks/one_query_cost.py --dataset minilm --index /tmp/minilm-fast

Builds `fast` (B = 1024) into --index the first time, then loads it.
Prints microseconds per query on 1 thread, best of --runs.
"""

from __future__ import annotations

import argparse
import time
import types
from pathlib import Path

import numba
import numpy as np


def _split(name: str):
    from irli.io.datasets import glove_split, minilm_split, mpnet_split

    return {"glove": glove_split, "minilm": minilm_split, "mpnet": mpnet_split}[name]()[:2]


def _without_routing(probed_all: np.ndarray):
    """pq_block with its routing call replaced by reading probed_all (R, n, m)."""
    import irli.kernels.pq_scan as pq

    src = Path(pq.__file__).read_text().replace("from __future__ import annotations", "")
    src = src.replace("from .", "from irli.kernels.").replace("cache=True", "cache=False")
    call = "route_rows(qb, 0, n, a1, b1, a2, b2, rows, half, slack, probed, top, 0, True)"
    if call not in src:
        raise SystemExit("pq_block's routing call changed: update benchmarks/one_query_cost.py")
    src = src.replace(call, "_looked_up(lo, n, probed)")
    head = ("import numba\n@numba.njit(inline='always')\ndef _looked_up(lo, n, probed):\n"
            "    for r in range(probed.shape[0]):\n        for t in range(n):\n"
            "            for j in range(probed.shape[2]):\n                probed[r, t, j] = PROBED[r, lo + t, j]\n")
    mod = types.ModuleType("pq_looked_up")
    mod.__dict__["PROBED"] = probed_all
    exec(compile(head + src, "pq_looked_up", "exec"), mod.__dict__)
    return mod.pq_block


def main() -> int:
    import irli
    from irli.kernels.pq_scan import pq_block
    from irli.learn.budget import FIXED

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["glove", "minilm", "mpnet"], default="minilm")
    ap.add_argument("--index", required=True, help="directory of the saved fast index (built when missing)")
    ap.add_argument("--settings", default="6:2,12:4", help="probes:refine pairs")
    ap.add_argument("-n", type=int, default=2000, help="queries timed one at a time")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    x, q = _split(a.dataset)
    path = Path(a.index)
    if not path.exists():
        irli.Index("fast", metric="cosine", n_buckets=1024).fit(x).save(path)
    index = irli.Index.load(path)
    irli.set_num_threads(1)
    numba.set_num_threads(1)
    args = index._snapshot().kernel_args
    k, nq = 10, q.shape[0]
    outs = (np.empty((nq, k), np.int64), np.empty((nq, k), np.float32), np.empty(nq, np.int64),
            np.empty(nq, np.int64))

    def best(f) -> float:
        f()
        times = []
        for _ in range(a.runs):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return min(times)

    print(f"{a.dataset}: {x.shape[0]:,} x {x.shape[1]}, us per query on 1 thread (best of {a.runs})")
    print("probes refine | batch | one query | same query repeated | one query, routing looked up | via search")
    for pair in a.settings.split(","):
        m, refine = map(int, pair.split(":"))
        nr = refine * k

        def one(kernel, same=False):
            def go():
                for i in range(a.n):
                    j = 7 if same else i
                    kernel(q, j, j + 1, m, nr, k, *FIXED, *args, *outs)
            return go

        def search():
            for i in range(a.n):
                index.search(q[i], k=k, probes=m, refine=refine)

        batch = best(lambda: pq_block(q, 0, nq, m, nr, k, *FIXED, *args, *outs)) / nq * 1e6
        looked_up = _without_routing(index.route(q, probes=m))
        cells = [batch] + [best(f) / a.n * 1e6 for f in (one(pq_block), one(pq_block, True), one(looked_up), search)]
        print(f"{m} {refine} | " + " | ".join(f"{c:.1f}" for c in cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
