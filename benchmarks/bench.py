"""Side-by-side benchmark: irli configurations against FAISS, hnswlib,
ScaNN and USearch, in the three ways users search.

    python benchmarks/bench.py                                 # glove-50, default systems
    python benchmarks/bench.py --dataset minilm                # 384-d MiniLM sentence embeddings
    python benchmarks/bench.py --dataset mpnet                 # 768-d mpnet embeddings of 100k GloVe words
    python benchmarks/bench.py --dataset synthetic:1000000:64  # synthetic, n=1M, d=64
    python benchmarks/bench.py --dataset file:items.npy:queries.npy
    python benchmarks/bench.py --systems irli:ivf irli:irli:start=kmeans,epochs=10 hnswlib --out runs/mine
    python benchmarks/bench.py --modes batch single            # a subset of the three modes

Follows BENCHMARKS.md: fixed-seed split, exact top-100 ground truth (cached
on disk), every system built in its own process on all cores, then for every
query setting:
  batch     one batched call of all queries on 1 thread (median of 3 timings)
  parallel  the same call with every library allowed all cores (median of 3)
  single    one call per query vector on 1 thread, as an online service (and
            the ann-benchmarks runner) searches: QPS, p50 and p99 latency of
            the fastest of --single-runs runs.
Writes results.json (every point, with the machine line), table.md (each
system at recall@10 0.90 and 0.95 in each mode) and plots into --out.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DEFAULT_SYSTEMS = ["irli:fast", "irli:ivf", "irli:ivf-ltr", "irli:irli", "faiss-ivfflat", "faiss-ivfpqfs",
                   "hnswlib", "scann", "usearch", "faiss-flat"]
MODES = ("batch", "parallel", "single")
PRIMARY = ("probes", "nprobe", "leaves", "ef")  # the knob each system's settings sweep upwards (see systems.py)


# -- data ---------------------------------------------------------------------
def prepare(dataset: str, cache: Path, n_test: int, progress=None) -> tuple[Path, str]:
    """Items, queries and exact top-100 ids as .npy files under `cache`;
    returns (directory, metric). Ground truth is computed once per dataset."""
    from irli.io.datasets import glove_split, read_vectors, synthetic
    from irli.kernels.exact import exact_knn
    from irli.validation import normalize_rows

    key = f"{dataset}_q{n_test}".replace(":", "_").replace("/", "_")
    d = cache / key
    if (d / "truth.npy").exists():
        return d, json.loads((d / "meta.json").read_text())["metric"]
    d.mkdir(parents=True, exist_ok=True)
    kind, *args = dataset.split(":")
    metric = "cosine"
    if kind == "glove":
        x, q, _, _ = glove_split(n_test=n_test)
    elif kind == "minilm":
        from irli.io.datasets import minilm_split

        x, q, _, _ = minilm_split(n_test=n_test, callback=progress)
    elif kind == "mpnet":  # mpnet[:N]: the first N GloVe words (default 100,000) at 768-d
        from irli.io.datasets import MPNET_WORDS, mpnet_split

        n = int(args[0]) if args else MPNET_WORDS
        x, q, _, _ = mpnet_split(n, n_test=n_test, callback=progress)
    elif kind == "synthetic":
        n, dim = int(args[0]), int(args[1]) if len(args) > 1 else 64
        # as hard as GloVe for IVF: about 0.92 recall@10 at 32 probes of sqrt(N) lists
        x, q = synthetic(n, dim, n_test, latent=32, clusters=1024, noise=2.5, seed=0)
        x, q = normalize_rows(x), normalize_rows(q)
    elif kind == "file":
        x = np.ascontiguousarray(read_vectors(args[0]), dtype=np.float32)
        q = np.ascontiguousarray(read_vectors(args[1], key="test"), dtype=np.float32)
        metric = args[2] if len(args) > 2 else "cosine"
        if metric == "cosine":
            x, q = normalize_rows(x), normalize_rows(q)
    else:
        raise SystemExit(f"unknown dataset {dataset!r}: use glove, minilm, mpnet[:N], synthetic:N[:D] "
                         "or file:ITEMS:QUERIES[:METRIC]")
    truth, _ = exact_knn(x, q, 100, "l2" if metric == "l2" else "ip", callback=progress)
    np.save(d / "items.npy", x)
    np.save(d / "queries.npy", q)
    np.save(d / "truth.npy", truth)
    (d / "meta.json").write_text(json.dumps({"dataset": dataset, "metric": metric, "n": int(x.shape[0]),
                                             "d": int(x.shape[1]), "nq": int(q.shape[0])}))
    return d, metric


def machine() -> dict:
    import platform

    import faiss
    import numba
    import numpy

    cpu = platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {"python": platform.python_version(), "numpy": numpy.__version__, "faiss": faiss.__version__,
                "numba": numba.__version__}
    for mod in ("torch", "hnswlib", "scann", "usearch", "irli"):
        try:
            versions[mod] = getattr(__import__(mod), "__version__", "installed")
        except ImportError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "versions": versions}


# -- one system, in its own process ---------------------------------------------
def worker(spec: str, data_dir: Path, metric: str, n_buckets: int, k: int, out: Path, modes: list[str],
           single_n: int, single_runs: int = 3) -> None:
    import systems

    from irli.metrics import recall_at_k
    from irli.threads import cpu_count

    x = np.load(data_dir / "items.npy")
    q = np.load(data_dir / "queries.npy")
    truth = np.load(data_dir / "truth.npy")
    cores = cpu_count()
    rss_data = systems.rss_mb()
    sysm = systems.make(spec)
    sysm.set_threads(cores)
    peer_metric = metric if spec.startswith("irli") else ("l2" if metric == "l2" else "ip")
    before = systems.rss_mb("VmRSS")
    t = time.perf_counter()
    sysm.build(x, peer_metric, n_buckets)
    build_s = time.perf_counter() - t
    rss_build = systems.rss_mb()
    gc.collect()
    sysm.search(q[:64], k, sysm.settings()[0])  # what the index holds while it searches (pages touched)
    resident_mb = systems.rss_mb("VmRSS") - before  # with what the build left behind
    saved = Path(tempfile.mkdtemp(prefix="bench-index-"))
    sysm.save(saved)
    index_bytes = systems.dir_bytes(saved)
    points = []
    ns = min(single_n, q.shape[0])
    # the single mode's queries spread evenly through the test set (its rows follow the source's order,
    # and GloVe's vocabulary is sorted by frequency: the first rows are the commonest words)
    one = np.linspace(0, q.shape[0] - 1, ns).round().astype(np.int64)
    saturated = set()  # the secondary knobs (refine, k_factor, reorder) whose sweep of the primary one has peaked
    for setting in sysm.settings():
        rest = tuple(sorted((key, v) for key, v in setting.items() if key not in PRIMARY))
        if rest and rest in saturated:
            continue  # more probes at this re-rank depth only cost time
        sysm.set_threads(1)
        sysm.search(q[:64], k, setting)  # warm-up: compile, page in
        (ids, cand, read), secs = systems.timed(lambda: sysm.search(q, k, setting))
        if cand is None and read is None:
            cand, read = sysm.counts(q, k, setting)
        point = {"setting": setting, f"recall@{k}": recall_at_k(ids, truth, k), "qps": q.shape[0] / secs,
                 "candidates": None if cand is None else float(np.mean(cand)),
                 "scanned": None if read is None else float(np.mean(read))}
        if "parallel" in modes:
            sysm.set_threads(cores)
            sysm.search(q[:64], k, setting)
            (pids, _, _), psecs = systems.timed(lambda: sysm.search(q, k, setting))
            point.update(qps_parallel=q.shape[0] / psecs, threads=cores,
                         same_as_batch=bool(np.array_equal(pids, ids)))
            sysm.set_threads(1)
        if "single" in modes:
            sysm.prepare_single(setting)
            found = np.full((ns, k), -1, dtype=np.int64)
            for i in one[:64]:
                sysm.search_one(q[i], k, setting)
            lat = None
            for _ in range(single_runs):  # as ann-benchmarks' runner: keep the best run
                run = np.empty(ns)
                for i in range(ns):
                    v = q[one[i]]
                    t0 = time.perf_counter()
                    r = sysm.search_one(v, k, setting)
                    run[i] = time.perf_counter() - t0
                    found[i, : len(r)] = r[:k]
                if lat is None or run.sum() < lat.sum():
                    lat = run
            point.update(qps_single=ns / lat.sum(), p50_us=float(np.median(lat) * 1e6),
                         p99_us=float(np.percentile(lat, 99) * 1e6), single_n=ns,
                         **{f"recall@{k}_single": recall_at_k(found, truth[one], k)})
        points.append(point)
        print(json.dumps({"progress": spec, **point}), file=sys.stderr, flush=True)
        if point[f"recall@{k}"] >= 0.99 and rest:
            saturated.add(rest)
        if point[f"recall@{k}"] >= 0.995 and len(points) > 1 and not rest:
            break  # the rest of the sweep only costs time
    rss_peak = systems.rss_mb()
    sysm = None  # frees the index before the fresh process loads its copy
    gc.collect()
    loaded_mb = systems.resident_after_load(spec, saved, data_dir / "queries.npy", x.shape[1], peer_metric, k)
    shutil.rmtree(saved, ignore_errors=True)
    result = {"system": spec, "build_s": build_s, "build_threads": cores, "index_bytes": index_bytes,
              "rss_data_mb": rss_data, "rss_build_mb": rss_build, "resident_after_build_mb": resident_mb,
              "resident_mb": loaded_mb, "n_items": int(x.shape[0]), "rss_peak_mb": rss_peak, "points": points}
    out.write_text(json.dumps(result, indent=1))


# -- orchestration ---------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="glove")
    p.add_argument("--systems", nargs="+", default=DEFAULT_SYSTEMS,
                   help="system specs, space-separated (see systems.py), e.g. irli:irli:hidden=256,epochs=10")
    p.add_argument("--buckets", type=int, default=None, help="B for irli and nlist for FAISS IVF "
                   "(default: irli's default for the collection size)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                   help="search modes to time (default: all three)")
    p.add_argument("--single-n", type=int, default=10_000,
                   help="queries timed one call at a time in the single mode, spread evenly through the test "
                   "set (default: all of them)")
    p.add_argument("--single-runs", type=int, default=3,
                   help="runs of the single mode per setting; the fastest is kept (default 3)")
    p.add_argument("--cache", default=os.environ.get("IRLI_BENCH_CACHE", str(Path.home() / ".cache" / "irli-bench")))
    p.add_argument("--out", default=None, help="results directory (default runs/bench-<dataset>-<time>)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help=argparse.SUPPRESS)
    p.add_argument("--metric", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        worker(a.worker, Path(a.data_dir), a.metric, a.buckets, a.k, Path(a.result), a.modes, a.single_n,
               a.single_runs)
        return 0

    from report import write_report
    from tqdm import tqdm

    from irli.cli.bars import Bars
    from irli.config import default_buckets

    bars = Bars(True)
    data_dir, metric = prepare(a.dataset, Path(a.cache), a.n_test, progress=bars)
    bars.close()
    meta = json.loads((data_dir / "meta.json").read_text())
    n_buckets = a.buckets or default_buckets(meta["n"])
    out = Path(a.out or f"runs/bench-{a.dataset.replace(':', '_')}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    specs = a.systems
    results = []
    for spec in tqdm(specs, desc="systems", file=sys.stderr):
        res_file = out / f"{spec.replace(':', '_').replace(',', '_').replace('=', '-')}.json"
        cmd = [sys.executable, __file__, "--worker", spec, "--data-dir", str(data_dir), "--metric", metric,
               "--buckets", str(n_buckets), "-k", str(a.k), "--result", str(res_file), "--modes", *a.modes,
               "--single-n", str(a.single_n), "--single-runs", str(a.single_runs)]
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        with tqdm(desc=spec, unit=" settings", file=sys.stderr, leave=False) as bar:
            for line in proc.stderr:
                if line.startswith('{"progress"'):
                    pt = json.loads(line)
                    bar.set_postfix(recall=f"{pt[f'recall@{a.k}']:.3f}", qps=f"{pt['qps']:.0f}")
                    bar.update(1)
                else:
                    sys.stderr.write(line)
        if proc.wait() != 0:
            tqdm.write(f"{spec}: FAILED (exit {proc.returncode}); left out of the report", file=sys.stderr)
            continue
        results.append(json.loads(res_file.read_text()))
    run = {"dataset": meta, "n_buckets": n_buckets, "k": a.k, "machine": machine(), "modes": a.modes,
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results}
    (out / "results.json").write_text(json.dumps(run, indent=1))
    write_report(run, out)
    print((out / "table.md").read_text())
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
