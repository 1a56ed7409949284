"""Training 4 IRLI repetitions as Ray tasks: 1 worker against 2 on this
machine (a local Ray cluster with 2 CPUs, 1 CPU per task).

    .venv/bin/python benchmarks/ray_training.py [--n 100000] [--epochs 10]

Also times the plain single-process fit on 1 thread. Writes
benchmarks/results/scale/ray_training.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _warm(i: int) -> int:
    import irli  # noqa: F401  (workers import irli once, before timing)

    return i


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/scale")
    a = ap.parse_args(argv)
    import ray

    import irli
    from irli.distributed import RayExecutor
    from irli.io.datasets import synthetic
    from irli.kernels.exact import exact_knn
    from irli.metrics import recall_at_k

    x, q = synthetic(a.n, a.d, 1000, latent=16, clusters=128, seed=3)
    truth = exact_knn(x, q, 10, "cosine")[0]
    cfg = dict(n_reps=4, epochs=a.epochs, repartition_every=max(1, a.epochs // 2))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(irli.__file__).resolve().parents[1])}})
    ex = RayExecutor(workers=1)
    ex.map(_warm, [1, 2])  # start the workers before timing
    rows = []
    for workers in (1, 2):
        t = time.perf_counter()
        index = irli.Index("irli", **cfg).fit(x, executor=RayExecutor(workers=workers))
        secs = time.perf_counter() - t
        rows.append({"workers": workers, "fit_s": secs,
                     "recall@10 (probes 8)": recall_at_k(index.search(q, k=10, probes=8).ids, truth, 10)})
        print(rows[-1], flush=True)
    ray.shutdown()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(1):
        t = time.perf_counter()
        index = irli.Index("irli", **cfg).fit(x)
        rows.append({"workers": "none (one process, 1 thread)", "fit_s": time.perf_counter() - t,
                     "recall@10 (probes 8)": recall_at_k(index.search(q, k=10, probes=8).ids, truth, 10)})
    print(rows[-1], flush=True)
    speedup = rows[0]["fit_s"] / rows[1]["fit_s"]
    result = {"n": a.n, "d": a.d, "n_reps": 4, "epochs": a.epochs, "rows": rows, "speedup_2_vs_1": speedup}
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "ray_training.json").write_text(json.dumps(result, indent=2))
    print(f"2 workers vs 1: {speedup:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
