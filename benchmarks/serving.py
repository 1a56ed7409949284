"""Serving GloVe: parts touched per query (locality against b mod S), and a
load test of `irli serve` against the same index searched in-process.

    .venv/bin/python benchmarks/serving.py [--out benchmarks/results/serving] [--seconds 8]

1. The fast preset is fitted on the 390,000 GloVe items. For S = 2, 4 and 8
   parts, buckets go to parts by locality (balanced k-means over the bucket
   centres) and by b mod S; for the 10,000 test queries at the preset's
   probes we report the mean parts a query reaches and the busiest part's
   share of the query-part calls.
2. In-process: QPS of one batched call over the 10,000 queries (all cores,
   and 1 thread), and one call per query on 1 thread (p50 / p99).
3. The service (one replica, 2 CPUs, batching on, HAProxy ingress) is loaded by C concurrent
   clients, C = 1, 8, 32, 128, each sending one-vector /search requests back
   to back over keep-alive connections (aiohttp, in this process, so the
   load generator shares the 2 cores): throughput, p50 / p99 latency and the
   recall@10 of the answers.
Writes results.json and table.md under --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import machine  # noqa: E402

import irli  # noqa: E402
from irli.datasets import glove_split  # noqa: E402
from irli.exact import exact_knn  # noqa: E402
from irli.metrics import recall_at_k  # noqa: E402
from irli.shards import assign_buckets, sample_probes, shards_touched  # noqa: E402

K = 10


def touched_table(index, q, probes) -> list[dict]:
    probed = index.route(q, probes=probes)
    sizes = np.diff(index.lists_.offsets, axis=1)
    sample = sample_probes(index)  # the index's own items as queries (what save(shards=) learns from)
    rows = []
    for s in (2, 4, 8):
        row = {"parts": s}
        for rule in ("locality", "kmeans-only", "modulo"):
            owner = assign_buckets(index.centres_, sizes, s, "modulo" if rule == "modulo" else "locality",
                                   seed=index.config.seed, probed=sample if rule == "locality" else None)
            t = shards_touched(owner, probed)
            parts = owner[np.arange(probed.shape[0])[:, None, None], probed]
            calls = np.zeros(s)
            for p in range(s):
                calls[p] = (parts == p).any(axis=(0, 2)).sum()
            entries = np.bincount(owner.ravel(), weights=sizes.ravel(), minlength=s)
            row[rule] = {"mean_touched": float(t.mean()), "busiest_share": float(calls.max() / calls.sum()),
                         "entries_max_over_mean": float(entries.max() / entries.mean())}
        rows.append(row)
    return rows


def in_process(index, q, truth, probes) -> dict:
    out = {}
    for threads in (None, 1):
        best = None
        for _ in range(3):
            t = time.perf_counter()
            res = index.search(q, k=K, probes=probes, threads=threads)
            best = min(best or 1e9, time.perf_counter() - t)
        out["batch_all_cores" if threads is None else "batch_1_thread"] = {
            "qps": q.shape[0] / best, "recall": float(recall_at_k(res.ids, truth, K))}
    lat = np.empty(q.shape[0])
    ids = np.empty((q.shape[0], K), dtype=np.int64)
    for i in range(q.shape[0]):
        t = time.perf_counter()
        ids[i] = index.search(q[i], k=K, probes=probes, threads=1).ids[0]
        lat[i] = time.perf_counter() - t
    out["single_1_thread"] = {"qps": q.shape[0] / lat.sum(), "p50_ms": 1e3 * float(np.median(lat)),
                              "p99_ms": 1e3 * float(np.percentile(lat, 99)),
                              "recall": float(recall_at_k(ids, truth, K))}
    return out


async def _load(url, q, truth, clients, seconds, probes, ref=None) -> dict:
    import aiohttp

    lat, got = [], {}
    stop = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=clients + 4)
    timeout = aiohttp.ClientTimeout(total=30)
    errors = 0
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        async def client(c):
            nonlocal errors
            i = c
            while time.perf_counter() < stop:
                row = i % q.shape[0]
                body = {"vectors": q[row].tolist(), "k": K, "probes": probes}
                t = time.perf_counter()
                try:
                    async with session.post(url + "/search", json=body) as r:
                        ans = await r.json()
                        if r.status != 200:
                            errors += 1
                            continue
                except Exception:
                    errors += 1
                    continue
                lat.append(time.perf_counter() - t)
                got[row] = ans["ids"][0]
                i += clients

        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        wall = time.perf_counter() - t0
    rows = np.array(sorted(got))
    ids = np.array([got[r] for r in rows])
    lat = np.array(lat)
    return {"clients": clients, "requests": int(lat.size), "errors": errors, "qps": lat.size / wall,
            "p50_ms": 1e3 * float(np.median(lat)), "p99_ms": 1e3 * float(np.percentile(lat, 99)),
            "recall": float(recall_at_k(ids, truth[rows], K)),
            "recall_in_process_same_rows": None if ref is None else float(recall_at_k(ref[rows], truth[rows], K)),
            "rows_equal_in_process": None if ref is None else float((ids == ref[rows]).all(axis=1).mean())}


def serve_load(path, q, truth, probes, seconds, clients_list, replica_cpus, ref) -> list[dict]:
    import ray

    from irli.serve import ServeOptions, start, stop

    import os

    for flag in ("RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_ENABLE_HA_PROXY"):  # what `irli serve` sets
        os.environ.setdefault(flag, "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        url = start(path, port=8765, options=ServeOptions(replica_cpus=replica_cpus, max_batch=256,
                                                          batch_wait_ms=1.0))
        asyncio.run(_load(url, q, truth, 4, 2.0, probes))  # warm up
        out = []
        for c in clients_list:
            row = asyncio.run(_load(url, q, truth, c, seconds, probes, ref))
            print(json.dumps(row), flush=True)
            out.append(row)
        return out
    finally:
        stop()
        ray.shutdown()


def table(res) -> str:
    lines = ["Parts a query reaches (fast preset, probes %d, 10,000 GloVe queries):" % res["probes"], "",
             "| parts S | locality: mean parts | busiest part's share | entries max/mean | "
             "k-means step alone: mean parts | b mod S: mean parts | busiest share | locality / modulo |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["touched"]:
        lo, km, mo = r["locality"], r["kmeans-only"], r["modulo"]
        lines.append(f"| {r['parts']} | {lo['mean_touched']:.2f} | {lo['busiest_share']:.2f} | "
                     f"{lo['entries_max_over_mean']:.2f} | {km['mean_touched']:.2f} | {mo['mean_touched']:.2f} | "
                     f"{mo['busiest_share']:.2f} | {lo['mean_touched'] / mo['mean_touched']:.2f} |")
    ip = res["in_process"]
    lines += ["", "In-process, same index and probes:", "",
              "| mode | QPS | recall@10 | p50 / p99 ms |", "|---|---|---|---|",
              f"| batched, all cores | {ip['batch_all_cores']['qps']:,.0f} | {ip['batch_all_cores']['recall']:.3f} | |",
              f"| batched, 1 thread | {ip['batch_1_thread']['qps']:,.0f} | {ip['batch_1_thread']['recall']:.3f} | |",
              f"| one query per call, 1 thread | {ip['single_1_thread']['qps']:,.0f} | "
              f"{ip['single_1_thread']['recall']:.3f} | {ip['single_1_thread']['p50_ms']:.3f} / "
              f"{ip['single_1_thread']['p99_ms']:.3f} |",
              "", "`irli serve` (1 replica, batching on), one vector per request:", "",
              "| clients | QPS | p50 ms | p99 ms | recall@10 (in-process, same rows) | rows equal to in-process "
              "| errors | QPS / in-process batched (all cores) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in res["service"]:
        lines.append(f"| {r['clients']} | {r['qps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['recall']:.3f} ({r['recall_in_process_same_rows']:.3f}) | {r['rows_equal_in_process']:.3f} "
                     f"| {r['errors']} | {r['qps'] / ip['batch_all_cores']['qps']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/serving")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clients", default="1,8,32,128")
    ap.add_argument("--replica-cpus", type=float, default=2.0)
    ap.add_argument("--touched-only", action="store_true", help="only the parts-touched table")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    x, q, _, _ = glove_split()
    truth = exact_knn(x, q, K, "ip")[0]
    t = time.perf_counter()
    index = irli.Index("fast").fit(x)
    fit_s = time.perf_counter() - t
    probes = index.config.probes
    res = {"machine": machine(), "fit_s": fit_s, "probes": probes}
    res["touched"] = touched_table(index, q, probes)
    print(json.dumps(res["touched"]), flush=True)
    if a.touched_only:
        (out / "touched.json").write_text(json.dumps(res, indent=2))
        return 0
    res["in_process"] = in_process(index, q, truth, probes)
    print(json.dumps(res["in_process"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = index.save(Path(tmp) / "glove.index")
        ref = index.search(q, k=K, probes=probes).ids
        res["service"] = serve_load(path, q, truth, probes, a.seconds, [int(c) for c in a.clients.split(",")],
                                    a.replica_cpus, ref)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "table.md").write_text(table(res))
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
