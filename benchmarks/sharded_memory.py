"""Memory of a sharded index opened on Ray: the driver holds the routers
only, each part actor its own part.

    .venv/bin/python benchmarks/sharded_memory.py [--n 2000000] [--dim 64] [--parts 4] [--work DIR]

Writes a synthetic mixture (irli.io.datasets.synthetic_file) of n x dim
vectors, builds the fast preset out of core (irli.build), writes it as a
sharded index with `parts` parts, then, in a fresh process, opens it with
one Ray actor per part and searches 1,000 queries. Reports the driver's
peak resident memory (VmHWM) before and after opening and searching, each
part's size on disk, and each actor's resident memory (VmRSS, read from
/proc) after the searches. Results go to --out as JSON and Markdown.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def vm(pid: str = "self", key: str = "VmHWM") -> float:
    """A /proc/<pid>/status figure in GB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1e6
    return float("nan")


def dir_gb(p: Path) -> float:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e9


def open_and_search(path: str, queries: str, out: str) -> None:
    """The measured process: open the sharded index on Ray and search."""
    import numpy as np
    import ray

    import irli
    from irli.distributed import RayExecutor

    before = vm()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    after_ray = vm()
    t = time.perf_counter()
    sharded = irli.ShardedIndex.open(path, executor=RayExecutor(), timeout_s=600)
    open_s = time.perf_counter() - t
    after_open = vm()
    q = np.load(queries)
    t = time.perf_counter()
    res = sharded.search(q, k=10)
    search_s = time.perf_counter() - t
    info = sharded.ping()
    res_row = {"driver_hwm_start_gb": before, "driver_hwm_after_ray_init_gb": after_ray,
               "driver_hwm_after_open_gb": after_open, "driver_hwm_after_search_gb": vm(),
               "open_s": open_s, "search_s": search_s, "queries": int(q.shape[0]),
               "mean_parts_touched": float(sharded.shards_touched(q).mean()),
               "parts": [{"n_items": p["n_items"], "rss_gb": vm(str(p["pid"]), "VmRSS")} for p in info],
               "found": float((res.ids >= 0).mean())}
    Path(out).write_text(json.dumps(res_row, indent=2))
    sharded.close()
    ray.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--parts", type=int, default=4)
    ap.add_argument("--work", default="/tmp/irli-sharded-memory")
    ap.add_argument("--out", default="benchmarks/results/sharded-memory")
    ap.add_argument("--measure", nargs=3, metavar=("PATH", "QUERIES", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        open_and_search(*a.measure)
        return 0
    import numpy as np

    import irli
    from irli.io.datasets import synthetic_file

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    x_path = work / f"x-{a.n}x{a.dim}.npy"
    if not x_path.exists() or not (work / "q.npy").exists():
        q = synthetic_file(x_path, a.n, d=a.dim, n_queries=1000, latent=16, clusters=256, seed=1)
        np.save(work / "q.npy", q)
    t = time.perf_counter()
    index = irli.build(x_path, work / "index", preset="fast", sample=min(a.n, 1_000_000))
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    index.save(work / "sharded", shards=a.parts)
    shard_s = time.perf_counter() - t
    del index
    subprocess.run([sys.executable, __file__, "--measure", str(work / "sharded"), str(work / "q.npy"),
                    str(work / "measured.json")], check=True)
    row = json.loads((work / "measured.json").read_text())
    row.update(n=a.n, dim=a.dim, build_s=build_s, shard_s=shard_s, index_gb=dir_gb(work / "index"),
               part_gb=[dir_gb(work / "sharded" / f"part-{s}") for s in range(a.parts)])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(row, indent=2))
    lines = [f"{a.n:,} x {a.dim} (fast, built out of core), {a.parts} parts; driver VmHWM, actors VmRSS:", "",
             f"- index on disk {row['index_gb']:.2f} GB; parts " + ", ".join(f"{g:.2f}" for g in row["part_gb"])
             + " GB",
             f"- driver peak: {row['driver_hwm_start_gb']:.3f} GB at start, {row['driver_hwm_after_ray_init_gb']:.3f} "
             f"after ray.init, {row['driver_hwm_after_open_gb']:.3f} after opening, "
             f"{row['driver_hwm_after_search_gb']:.3f} after searching {row['queries']} queries",
             "- part actors after the searches: " + ", ".join(
                 f"{p['n_items']:,} items / {p['rss_gb']:.2f} GB" for p in row["parts"]),
             f"- open {row['open_s']:.1f} s, search {row['search_s']:.2f} s, "
             f"{row['mean_parts_touched']:.2f} parts per query"]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
