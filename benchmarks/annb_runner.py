"""irli and its peers through the real ann-benchmarks runner, one query per call.

    python benchmarks/annb_runner.py --ann-benchmarks ~/src/ann-benchmarks
    python benchmarks/annb_runner.py --ann-benchmarks PATH --dataset minilm --algorithms irli scann

ann-benchmarks (github.com/erikbern/ann-benchmarks) is not vendored and not
a test dependency: pass the path of a checkout. What its runner imports
comes with `pip install 'irli[annb]'` (ansicolors, docker, psutil, pyyaml;
no Docker engine is needed). The script writes the benchmark data as an
HDF5 file in that project's layout (train, test, neighbors, distances,
distance="angular"), then, for each algorithm in its own process, builds it
and calls `ann_benchmarks.runner.run_individual_query` in non-batch mode for
every query setting: the runner times `algo.query(v, 10)` once per test
vector, keeps the best of --runs runs, and recall comes from its `knn`
metric (epsilon 1e-3) on the distances it computed. The peers are that
project's own modules: ScaNN (`ann_benchmarks.algorithms.scann`, with its
"scann3" arguments and the ones BENCHMARKS.md uses) and hnswlib. irli runs
through `irli.integrations.ann_benchmarks.IrliANN`, its adapter for that project.

Writes results.json and table.md (QPS at recall 0.90 and 0.95) into --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

K = 10
PROBES = [4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 64]
# (constructor arguments, query arguments), per algorithm
ALGORITHMS = {
    "irli": [(("angular", "fast"), [[p, f] for p in PROBES for f in (2, 3, 4)])],
    "scann": [
        # ann-benchmarks' own "scann3" group for angular data
        ((1000, 0.2, 1, "dot_product"), [[1, 30], [2, 30], [4, 30], [8, 30], [9, 25], [11, 35], [12, 35],
                                         [13, 35], [14, 40], [15, 40], [16, 40], [17, 45], [20, 45], [20, 55],
                                         [25, 55], [25, 70], [30, 70], [40, 90], [50, 100], [60, 120], [70, 140]]),
        # the configuration BENCHMARKS.md and the serving issue use: 2 dimensions per block, reorder up to 100
        ((1000, 0.2, 2, "dot_product"), [[lv, r] for lv in (8, 10, 12, 15, 18, 20, 25, 30, 35, 40, 50, 60)
                                         for r in (30, 50, 100)]),
    ],
    "hnswlib": [(("angular", {"M": 16, "efConstruction": 200}), [10, 16, 20, 24, 32, 40, 48, 64, 80, 100, 120,
                                                                 160, 240])],
}


def write_hdf5(data_dir: Path, out: Path) -> Path:
    """The benchmark split as an ann-benchmarks HDF5 file (angular distances)."""
    from irli.io.datasets import AnnDataset, write_ann_hdf5

    if out.exists():
        return out
    x = np.load(data_dir / "items.npy")
    q = np.load(data_dir / "queries.npy")
    truth = np.load(data_dir / "truth.npy")
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    dist = 1.0 - np.einsum("nd,nkd->nk", qn, xn[truth])  # angular distance, as that project defines it
    tmp = out.with_suffix(".tmp.hdf5")
    write_ann_hdf5(tmp, AnnDataset(x, q, truth.astype(np.int32), dist.astype(np.float32), "cosine"))
    tmp.replace(out)
    return out


def _algorithm(name: str, args):
    if name == "irli":
        from irli.integrations.ann_benchmarks import IrliANN

        return IrliANN(*args)
    if name == "scann":
        from ann_benchmarks.algorithms.scann.module import Scann

        return Scann(*args)
    if name == "hnswlib":
        from ann_benchmarks.algorithms.hnswlib.module import HnswLib

        return HnswLib(*args)
    raise SystemExit(f"unknown algorithm {name!r}; use {', '.join(ALGORITHMS)}")


def worker(name: str, group: int, hdf5: Path, annb: Path, runs: int, out: Path) -> None:
    """Build one algorithm and run every query setting through the runner."""
    import contextlib
    import io

    import h5py

    sys.path.insert(0, str(annb))
    from ann_benchmarks.plotting.metrics import knn
    from ann_benchmarks.runner import run_individual_query

    from irli.threads import limit, set_num_threads

    set_num_threads(1)
    with h5py.File(hdf5, "r") as f:
        x_train, x_test = np.array(f["train"]), np.array(f["test"])
        true_dist = np.array(f["distances"])
    args, query_args = ALGORITHMS[name][group]
    algo = _algorithm(name, args)
    t = time.perf_counter()
    algo.fit(x_train.copy())  # ScaNN's module normalises its input in place
    build_s = time.perf_counter() - t
    scratch = h5py.File(io.BytesIO(), "w")
    points = []
    with limit(1):
        for i, qa in enumerate(query_args):
            if isinstance(qa, list) and name != "scann":
                algo.set_query_arguments(*qa)
            else:
                algo.set_query_arguments(qa)
            with contextlib.redirect_stdout(io.StringIO()):  # the runner prints its progress
                attrs, results = run_individual_query(algo, x_train, x_test, "angular", K, runs, False)
                run_dist = [[d for _, d in r] for _, r in results]
                recall = float(knn(true_dist, run_dist, K, scratch.create_group(str(i)), epsilon=1e-3).attrs["mean"])
            lat = np.array([t for t, _ in results])
            points.append({"query_args": qa, "recall": recall, "qps": 1.0 / attrs["best_search_time"],
                           "p50_us": float(np.median(lat) * 1e6), "p99_us": float(np.percentile(lat, 99) * 1e6),
                           "name": str(algo)})
            print(json.dumps({"progress": name, **points[-1]}), file=sys.stderr, flush=True)
    out.write_text(json.dumps({"algorithm": name, "args": [str(a) for a in args], "build_s": build_s,
                               "points": points}, indent=1))


def table(run: dict) -> str:
    lines = [f"ann-benchmarks runner (`run_individual_query`, non-batch, best of {run['runs']} runs, recall from "
             f"its knn metric, epsilon 1e-3), {run['dataset']}, k = {K}, 1 thread. {run['machine']['cpu']}, "
             f"{run['machine']['cores']} cores; " + ", ".join(f"{a} {b}" for a, b in run["machine"]["versions"].items())
             + f". Run {run['date']}.", "",
             "| algorithm | build s | QPS @0.90 | p50 / p99 µs @0.90 | QPS @0.95 | p50 / p99 µs @0.95 |",
             "|---|---|---|---|---|---|"]
    for r in run["results"]:
        cells = [f"{r['algorithm']} ({', '.join(r['args'])})", f"{r['build_s']:.1f}"]
        for target in (0.90, 0.95):
            ok = [p for p in r["points"] if p["recall"] >= target]
            if ok:
                p = max(ok, key=lambda p: p["qps"])
                cells += [f"{p['qps']:,.0f} ({p['query_args']}; {p['recall']:.3f})",
                          f"{p['p50_us']:.0f} / {p['p99_us']:.0f}"]
            else:
                cells += ["not reached", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ann-benchmarks", required=True, help="path of an ann-benchmarks checkout")
    p.add_argument("--dataset", default="glove", help="glove, minilm, synthetic:N[:D] (see bench.py)")
    p.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=list(ALGORITHMS))
    p.add_argument("--runs", type=int, default=3, help="runs per setting; the runner keeps the best")
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "irli-bench"))
    p.add_argument("--out", default=None)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--group", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--hdf5", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    annb = Path(a.ann_benchmarks).expanduser().resolve()
    if not (annb / "ann_benchmarks" / "runner.py").exists():
        raise SystemExit(f"{annb}: not an ann-benchmarks checkout (no ann_benchmarks/runner.py)")
    if a.worker:
        worker(a.worker, a.group, Path(a.hdf5), annb, a.runs, Path(a.result))
        return 0

    from bench import machine, prepare

    data_dir, metric = prepare(a.dataset, Path(a.cache), a.n_test)
    if metric != "cosine":
        raise SystemExit("this script writes angular (cosine) data; use a cosine dataset")
    hdf5 = write_hdf5(data_dir, data_dir / "ann-benchmarks.hdf5")
    out = Path(a.out or f"runs/annb-{a.dataset.replace(':', '_')}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in a.algorithms:
        for group in range(len(ALGORITHMS[name])):
            res = out / f"{name}-{group}.json"
            cmd = [sys.executable, __file__, "--ann-benchmarks", str(annb), "--worker", name, "--group", str(group),
                   "--hdf5", str(hdf5), "--runs", str(a.runs), "--result", str(res)]
            print(f"{name} (group {group})...", file=sys.stderr, flush=True)
            if subprocess.run(cmd).returncode != 0:
                print(f"{name}: FAILED; left out of the report", file=sys.stderr)
                continue
            results.append(json.loads(res.read_text()))
    run = {"dataset": a.dataset, "runs": a.runs, "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "results": results}
    (out / "results.json").write_text(json.dumps(run, indent=1))
    (out / "table.md").write_text(table(run))
    print(table(run))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
