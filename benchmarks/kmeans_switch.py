"""k-means for the partition start: the hand-written Lloyd's loop irli
used before against irli.model.partition.kmeans (faiss.Kmeans), in the
same run (issue 22). Builds `fast` on GloVe with each, and reports the
k-means time, the build time, recall@10 against probes and QPS (batched on
one thread, one query per call), so the choice rests on figures.

    python benchmarks/kmeans_switch.py [--out results/kmeans_switch.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np


def lloyd(x, n_buckets, spherical, iters=20, points_per_centroid=256, seed=0, callback=None):
    """The hand-written Lloyd's k-means irli used before the switch (empty
    clusters re-seeded by splitting the largest)."""
    from irli.model.partition import assign_nearest, bucket_means, kmeans_sample
    from irli.validation import normalize_rows

    sample = kmeans_sample(x, n_buckets, spherical, points_per_centroid, seed)
    m = sample.shape[0]
    rng = np.random.default_rng([seed, 0x3E4])
    if m < x.shape[0]:
        rng.choice(x.shape[0], size=m, replace=False)  # the draw kmeans_sample took: the same start as before
    cent = sample[rng.choice(m, size=n_buckets, replace=False)].copy()
    for _ in range(iters):
        assign = assign_nearest(sample, cent, spherical)
        cent = bucket_means(sample, assign, n_buckets, spherical=False, old=cent)
        counts = np.bincount(assign, minlength=n_buckets)
        for b in np.nonzero(counts == 0)[0]:
            big = int(np.argmax(counts))
            cent[b] = cent[big] * (1 + 1e-3 * rng.standard_normal(cent.shape[1]))
            counts[big] //= 2
            counts[b] = counts[big]
        if spherical:
            cent = normalize_rows(cent)
    return np.ascontiguousarray(cent, dtype=np.float32)


def main(argv=None) -> int:
    import irli
    import irli.learn.loop as loop
    from irli.io.datasets import glove_split
    from irli.kernels.exact import exact_knn
    from irli.metrics import recall_at_k

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/kmeans_switch.json"))
    ap.add_argument("--probes", default="6,10,14,18,24")
    ap.add_argument("--single", type=int, default=2000, help="queries timed one per call")
    ap.add_argument("--rounds", type=int, default=3, help="timings of each index per setting (best kept)")
    a = ap.parse_args(argv)
    x, q, _, _ = glove_split()
    truth, _ = exact_knn(x, q, 10, "ip")
    probes = [int(p) for p in a.probes.split(",")]
    from irli.model.partition import kmeans

    built = {}
    for name, fn in (("lloyd (hand-written, before)", lloyd), ("faiss.Kmeans (irli now)", kmeans)):
        spent = []

        def timed(*args, fn=fn, spent=spent, **kw):
            t = time.perf_counter()
            out = fn(*args, **kw)
            spent.append(time.perf_counter() - t)
            return out

        loop.kmeans = timed
        t = time.perf_counter()
        built[name] = (irli.Index("fast", metric="cosine").fit(x), sum(spent), time.perf_counter() - t)
    rows = []
    for p in probes:
        best: dict[str, list[float]] = {name: [0.0, 0.0] for name in built}
        for _ in range(a.rounds):  # the two indexes timed in turn, best of `rounds`
            for name, (index, _, _) in built.items():
                index.search(q[:500], k=10, probes=p, threads=1)  # warm
                t = time.perf_counter()
                index.search(q, k=10, probes=p, threads=1)
                best[name][0] = max(best[name][0], len(q) / (time.perf_counter() - t))
                t = time.perf_counter()
                for i in range(a.single):
                    index.search(q[i], k=10, probes=p, threads=1)
                best[name][1] = max(best[name][1], a.single / (time.perf_counter() - t))
        for name, (index, km_s, build_s) in built.items():
            res = index.search(q, k=10, probes=p, threads=1)
            row = {"kmeans": name, "kmeans_s": round(km_s, 2), "build_s": round(build_s, 1), "probes": p,
                   "recall@10": round(recall_at_k(res.ids, truth, 10), 4),
                   "batch_qps_1t": round(best[name][0]), "single_qps": round(best[name][1])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"threads_fit": faiss.omp_get_max_threads(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
