"""Out-of-core scale: index 10,000,000 synthetic vectors (d = 64, 2.56 GB)
from a memory-mapped .npy file in bounded memory, next to FAISS doing the
same streamed (sampled training, batched adds).

    .venv/bin/python benchmarks/scale.py [--n 10000000] [--d 64] [--cache /tmp/irli-scale]

Each build runs in its own process and reports its peak resident memory
(VmHWM from /proc/self/status, its own; not ru_maxrss, which a child
inherits from its parent on Linux). Queries are searched on 1 thread against exact ground truth
computed by streaming over the file. Writes benchmarks/results/scale/.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

K = 10


def rss_gb() -> float:
    """This process's own peak resident memory (VmHWM), in GB. Not
    ru_maxrss: on Linux a child started by fork + exec inherits its
    parent's ru_maxrss when that is higher, so it over-reports."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # pragma: no cover - not Linux


def build_irli(src: str, out: str, preset: str, sample: int) -> dict:
    import irli

    t = time.perf_counter()
    index = irli.build(src, out, preset=preset, sample=sample)
    return {"system": f"irli {preset} (irli.build, sample {sample:,})", "build_s": time.perf_counter() - t,
            "peak_rss_gb": rss_gb(), "n_buckets": index.n_buckets}


def build_faiss(src: str, out: str, sample: int, n_buckets: int) -> dict:
    import faiss

    from irli.io.datasets import read_vectors
    from irli.io.storage import release
    from irli.validation import normalize_rows

    t = time.perf_counter()
    x = read_vectors(src)
    n, d = x.shape
    rows = np.sort(np.random.default_rng(0).choice(n, size=min(n, sample), replace=False))
    index = faiss.index_factory(d, f"IVF{n_buckets},PQ{d // 2}x4fs", faiss.METRIC_INNER_PRODUCT)
    index.train(normalize_rows(np.ascontiguousarray(x[rows])))
    release(x)
    for s in range(0, n, 1 << 18):
        index.add(normalize_rows(np.ascontiguousarray(x[s : s + (1 << 18)])))
        release(x)
    faiss.write_index(index, out)
    return {"system": f"FAISS IVF{n_buckets},PQ{d // 2}x4fs (streamed adds, sample {sample:,})",
            "build_s": time.perf_counter() - t, "peak_rss_gb": rss_gb(), "n_buckets": n_buckets}


def child(argv) -> int:
    """One build in this process; prints its JSON line."""
    kind, src, out, preset, sample, nb = argv
    row = build_irli(src, out, preset, int(sample)) if kind == "irli" else \
        build_faiss(src, out, int(sample), int(nb))
    print("RESULT " + json.dumps(row), flush=True)
    return 0


def run_child(*args) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"build failed:\n{p.stderr[-3000:]}")
    return json.loads(next(l for l in p.stdout.splitlines() if l.startswith("RESULT "))[7:])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--sample", type=int, default=1_000_000)
    ap.add_argument("--cache", default="/tmp/irli-scale")
    ap.add_argument("--out", default="benchmarks/results/scale")
    a = ap.parse_args(argv)
    import faiss
    import numba
    from threadpoolctl import threadpool_limits

    import irli
    from irli.cli.evaluation import format_table, timed_search
    from irli.io.datasets import read_vectors, synthetic_file
    from irli.kernels.exact import exact_knn
    from irli.metrics import recall_at_k

    cache, out = Path(a.cache), Path(a.out)
    cache.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    src = cache / f"synth-{a.n}x{a.d}.npy"
    qfile = cache / f"synth-{a.n}x{a.d}.queries.npy"
    log = lambda s: print(s, flush=True)  # noqa: E731
    if not src.exists() or not qfile.exists():
        t = time.perf_counter()
        q = synthetic_file(src, a.n, a.d, a.queries, latent=16, clusters=256, seed=10)
        np.save(qfile, q)
        log(f"generated {src} in {time.perf_counter() - t:.0f} s")
    q = np.load(qfile)
    x = read_vectors(src)
    truth_file = cache / f"synth-{a.n}x{a.d}.truth.npy"
    if not truth_file.exists():
        t = time.perf_counter()
        np.save(truth_file, exact_knn(x, q, K, "cosine", item_batch=1 << 19)[0])
        log(f"ground truth in {time.perf_counter() - t:.0f} s")
    truth = np.load(truth_file)
    rows = []
    irli_dir = cache / "irli.index"
    r = run_child("irli", src, irli_dir, "fast", a.sample, 0)
    log(f"irli build: {r}")
    index = irli.load(irli_dir, verify=False)
    r["index_gb"] = sum(f.stat().st_size for f in irli_dir.iterdir()) / 2**30
    r["sweep"] = []
    for m in (8, 16, 32, 64):
        res, secs = timed_search(index, q, K, m)
        r["sweep"].append({"probes": m, "recall@10": recall_at_k(res.ids, truth, K), "QPS": len(q) / secs})
    rows.append(r)
    log(f"irli: {r}")
    del index
    fpath = cache / "faiss.index"
    f = run_child("faiss", src, fpath, "-", a.sample, r["n_buckets"])
    fi = faiss.read_index(str(fpath))
    f["index_gb"] = fpath.stat().st_size / 2**30
    f["sweep"] = []
    numba.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    qn = irli.validation.normalize_rows(q.copy())
    with threadpool_limits(1):
        for m in (8, 16, 32, 64):
            fi.nprobe = m
            fi.search(qn[:8], K)
            t = time.perf_counter()
            _, ids = fi.search(qn, K)
            secs = time.perf_counter() - t
            f["sweep"].append({"probes": m, "recall@10": recall_at_k(ids, truth, K), "QPS": len(q) / secs})
    rows.append(f)
    log(f"faiss: {f}")
    result = {"n": a.n, "d": a.d, "queries": a.queries, "k": K, "search_threads": 1, "builds": rows}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    flat = [{"system": b["system"], "build s": b["build_s"], "peak RSS GB": b["peak_rss_gb"],
             "index GB": b["index_gb"], **{f"probes {s['probes']}": f"{s['recall@10']:.3f} @ {s['QPS']:,.0f}"
                                          for s in b["sweep"]}} for b in rows]
    table = format_table(flat)
    (out / "table.md").write_text("recall@10 @ QPS (1 thread)\n\n```\n" + table + "\n```\n")
    log(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
