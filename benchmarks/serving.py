"""Serving GloVe, measured from outside: `irli serve` against the floor (a
bare aiohttp server that parses the same JSON body and answers a fixed
result) and against the same index searched in-process.

    .venv/bin/python benchmarks/serving.py [--out benchmarks/results/serving] [--seconds 5] [--ray]

1. The fast preset is fitted on the 390,000 GloVe items and saved.
2. In-process, same index and probes: one query per call (1 thread, p50 /
   p99) and one batched call (all cores).
3. Each server runs in its own process, started as a user starts it; the
   load generator (asyncio + aiohttp, keep-alive connections, one query per
   request) runs in this process, on the same 2 cores. At C = 1, 8, 32 and
   128 concurrent clients, the floor and `irli serve` take turns, `--repeats`
   times each: QPS, p50, p99, errors, and whether the answers equal
   in-process search (with --off-loop, also `irli serve --inline-rows 0`:
   every search on the search thread). Then binary bodies: 256 queries per msgpack request
   (float32 rows as bytes), 2 clients, against in-process batched QPS.
4. Start-up until /health answers, and resident memory of each server's
   process tree once warm. With --ray, `irli serve --ray` (1 replica) too.
5. With --touched, the parts a query reaches in a sharded index (locality
   against b mod S).
Writes results.json and table.md under --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import machine  # noqa: E402

import irli  # noqa: E402
from irli.io.datasets import glove_split  # noqa: E402
from irli.kernels.exact import exact_knn  # noqa: E402
from irli.metrics import recall_at_k  # noqa: E402

K = 10
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the parts a query reaches (issue 14) ------------------------------------------------
def touched_table(index, q, probes) -> list[dict]:
    from irli.distributed.layout import assign_buckets, sample_probes, shards_touched

    probed = index.route(q, probes=probes)
    sizes = np.diff(index.lists_.offsets, axis=1)
    sample = sample_probes(index)  # the index's own items as queries (what save(shards=) learns from)
    rows = []
    for s in (2, 4, 8):
        row = {"parts": s}
        for rule in ("locality", "kmeans-only", "modulo"):
            owner = assign_buckets(index.centroids_, sizes, s, "modulo" if rule == "modulo" else "locality",
                                   seed=index.config.seed, probed=sample if rule == "locality" else None)
            t = shards_touched(owner, probed)
            parts = owner[np.arange(probed.shape[0])[:, None, None], probed]
            calls = np.array([(parts == p).any(axis=(0, 2)).sum() for p in range(s)])
            entries = np.bincount(owner.ravel(), weights=sizes.ravel(), minlength=s)
            row[rule] = {"mean_touched": float(t.mean()), "busiest_share": float(calls.max() / calls.sum()),
                         "entries_max_over_mean": float(entries.max() / entries.mean())}
        rows.append(row)
    return rows


# -- in process ------------------------------------------------------------------------
def in_process(index, q, truth, probes) -> dict:
    best = None
    for _ in range(3):
        t = time.perf_counter()
        res = index.search(q, k=K, probes=probes)
        best = min(best or 1e9, time.perf_counter() - t)
    out = {"batch_all_cores": {"qps": q.shape[0] / best, "recall": float(recall_at_k(res.ids, truth, K))}}
    lat = np.empty(q.shape[0])
    for i in range(q.shape[0]):
        t = time.perf_counter()
        index.search(q[i], k=K, probes=probes, threads=1)
        lat[i] = time.perf_counter() - t
    out["single_1_thread"] = {"qps": q.shape[0] / lat.sum(), "p50_ms": 1e3 * float(np.median(lat)),
                              "p99_ms": 1e3 * float(np.percentile(lat, 99))}
    return out


# -- servers ---------------------------------------------------------------------------
class Running:
    """A server process: its URL, start-up seconds and process."""

    def __init__(self, name: str, argv: list[str], port: int, env=None) -> None:
        self.name, self.url = name, f"http://127.0.0.1:{port}"
        t = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        self.startup_s = self._wait(t)

    def _wait(self, t0: float, timeout_s: float = 300.0) -> float:
        import urllib.request

        while time.perf_counter() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.proc.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer /health within {timeout_s} s")

    def rss_mb(self) -> float:
        """Resident memory of the server and every process under it."""
        from irli.serving.processes import rss_bytes

        return rss_bytes(self.proc.pid) / 1e6

    def stop(self) -> dict:
        t = time.perf_counter()
        self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            rc = "killed after 60 s"
        return {"exit": rc, "stop_s": time.perf_counter() - t}


async def _load(url, q, clients, seconds, probes, ref, binary_rows=0) -> dict:
    """One load point: `clients` coroutines, each sending requests back to
    back for `seconds`; JSON one query per request, or msgpack bodies of
    `binary_rows` queries."""
    import aiohttp
    import msgspec

    lat: list[float] = []
    got: dict[int, list] = {}
    errors = 0
    n = q.shape[0]
    conn = aiohttp.TCPConnector(limit=clients + 4)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:
        stop = time.perf_counter() + seconds

        async def client(c):
            nonlocal errors
            i = c * max(1, binary_rows)
            while time.perf_counter() < stop:
                if binary_rows:
                    rows = np.arange(i, i + binary_rows) % n
                    body = msgspec.msgpack.encode({"vectors": q[rows].tobytes(), "dim": q.shape[1], "k": K,
                                                   "probes": probes})
                    headers = {"Content-Type": "application/msgpack"}
                else:
                    rows = np.array([i % n])
                    body = json.dumps({"vectors": q[rows[0]].tolist(), "k": K, "probes": probes})
                    headers = {"Content-Type": "application/json"}
                t = time.perf_counter()
                try:
                    async with session.post(url + "/search", data=body, headers=headers) as r:
                        raw = await r.read()
                        if r.status != 200:
                            errors += 1
                            continue
                except Exception:
                    errors += 1
                    continue
                lat.append(time.perf_counter() - t)
                if binary_rows:
                    ans = msgspec.msgpack.decode(raw)
                    ids = np.frombuffer(ans["ids"], "<i8").reshape(ans["shape"])
                else:
                    ids = np.asarray(json.loads(raw)["ids"])
                for r_, row in zip(rows, ids):
                    got[int(r_)] = row
                i += clients * max(1, binary_rows)

        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        wall = time.perf_counter() - t0
    lat_a = np.array(lat)
    rows = np.array(sorted(got))
    out = {"clients": clients, "requests": int(lat_a.size), "errors": errors,
           "qps": lat_a.size * max(1, binary_rows) / wall,
           "p50_ms": 1e3 * float(np.median(lat_a)) if lat_a.size else None,
           "p99_ms": 1e3 * float(np.percentile(lat_a, 99)) if lat_a.size else None}
    if ref is not None and rows.size and len(got[int(rows[0])]) == K:
        out["rows_equal_in_process"] = float(np.mean([(got[int(r)] == ref[r]).all() for r in rows]))
    return out


def load(url, q, clients, seconds, probes, ref, binary_rows=0) -> dict:
    asyncio.run(_load(url, q, clients, 1.0, probes, None, binary_rows))  # warm the connections
    return asyncio.run(_load(url, q, clients, seconds, probes, ref, binary_rows))


def _median(rows: list[dict]) -> dict:
    out = dict(rows[0])
    for key in ("qps", "p50_ms", "p99_ms"):
        vals = [r[key] for r in rows if r.get(key) is not None]
        out[key] = float(np.median(vals)) if vals else None
        out[key + "_range"] = [min(vals), max(vals)] if vals else None
    out["errors"] = sum(r["errors"] for r in rows)
    out["requests"] = sum(r["requests"] for r in rows)
    if any("rows_equal_in_process" in r for r in rows):
        out["rows_equal_in_process"] = min(r.get("rows_equal_in_process", 1.0) for r in rows)
    return out


# -- the report --------------------------------------------------------------------------
def table(res) -> str:
    ip = res["in_process"]
    lines = [f"GloVe, fast preset, probes {res['probes']}; machine: {res['machine']['cpu']}, "
             f"{res['machine']['cores']} cores. Medians of {res['repeats']} runs of {res['seconds']:g} s "
             "(ranges in results.json).", "",
             f"In-process: one query per call {ip['single_1_thread']['qps']:,.0f} QPS (p50 "
             f"{ip['single_1_thread']['p50_ms']:.3f} ms, p99 {ip['single_1_thread']['p99_ms']:.3f} ms); "
             f"batched on all cores {ip['batch_all_cores']['qps']:,.0f} QPS, recall@10 "
             f"{ip['batch_all_cores']['recall']:.3f}.", "",
             "| clients | server | QPS | p50 ms | p99 ms | errors | answers = in-process | QPS / floor | p50 / floor |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c, row in res["one_query"].items():
        floor = row["floor"]
        for name, r in row.items():
            eq = r.get("rows_equal_in_process")
            lines.append(f"| {c} | {name} | {r['qps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} "
                         f"| {'' if eq is None else f'{eq:.3f}'} | {r['qps'] / floor['qps']:.2f} | "
                         f"{r['p50_ms'] / floor['p50_ms']:.2f} |")
    b = res.get("binary")
    if b:
        lines += ["", f"Binary bodies (msgpack, {b['rows']} queries per request, {b['clients']} clients): "
                  f"{b['qps']:,.0f} queries/s = {b['qps'] / ip['batch_all_cores']['qps']:.2f}x in-process "
                  f"batched ({ip['batch_all_cores']['qps']:,.0f}); answers = in-process: "
                  f"{b.get('rows_equal_in_process', float('nan')):.3f}."]
    lines += ["", "| server | start-up until /health s | RSS of the process tree MB (warm) | stop s (exit) |",
              "|---|---|---|---|"]
    for name, s in res["servers"].items():
        lines.append(f"| {name} | {s['startup_s']:.1f} | {s['rss_mb']:,.0f} | {s['stop']['stop_s']:.1f} "
                     f"({s['stop']['exit']}) |")
    lines.append(f"\nIndex on disk: {res['index_mb']:,.0f} MB.")
    if res.get("touched"):
        lines += ["", "Parts a query reaches (fast preset, 10,000 GloVe queries):", "",
                  "| parts S | locality: mean parts | busiest part's share | entries max/mean | "
                  "k-means step alone: mean parts | b mod S: mean parts | busiest share | locality / modulo |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in res["touched"]:
            lo, km, mo = r["locality"], r["kmeans-only"], r["modulo"]
            lines.append(f"| {r['parts']} | {lo['mean_touched']:.2f} | {lo['busiest_share']:.2f} | "
                         f"{lo['entries_max_over_mean']:.2f} | {km['mean_touched']:.2f} | {mo['mean_touched']:.2f} | "
                         f"{mo['busiest_share']:.2f} | {lo['mean_touched'] / mo['mean_touched']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/serving")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clients", default="1,8,32,128")
    ap.add_argument("--probes", type=int, default=18)
    ap.add_argument("--ray", action="store_true", help="also irli serve --ray (1 replica)")
    ap.add_argument("--off-loop", action="store_true", help="also irli serve --inline-rows 0")
    ap.add_argument("--touched", action="store_true", help="also the parts-touched table of a sharded index")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    x, q, _, _ = glove_split()
    truth = exact_knn(x, q, K, "ip")[0]
    t = time.perf_counter()
    index = irli.Index("fast").fit(x)
    res = {"machine": machine(), "fit_s": time.perf_counter() - t, "probes": a.probes, "seconds": a.seconds,
           "repeats": a.repeats}
    if a.touched:
        res["touched"] = touched_table(index, q, index.config.probes)
    res["in_process"] = in_process(index, q, truth, a.probes)
    print(json.dumps(res["in_process"]), flush=True)
    ref = index.search(q, k=K, probes=a.probes).ids
    with tempfile.TemporaryDirectory() as tmp:
        path = index.save(Path(tmp) / "glove.index")
        res["index_mb"] = sum(f.stat().st_size for f in path.iterdir()) / 1e6
        del index
        servers = {"floor": Running("floor", [sys.executable, str(HERE / "floor_server.py"), str(p := free_port())],
                                    p),
                   "irli serve": Running("irli serve", [str(BIN / "irli"), "serve", str(path), "--port",
                                                        str(p2 := free_port())], p2)}
        if a.off_loop:  # every search on the search thread (read-only: the first holds the writer lock)
            servers["irli serve --inline-rows 0"] = Running(
                "irli serve --inline-rows 0", [str(BIN / "irli"), "serve", str(path), "--port", str(p4 := free_port()),
                                               "--inline-rows", "0", "--read-only"], p4)
        res["servers"] = {}
        for name, s in servers.items():
            res["servers"][name] = {"startup_s": s.startup_s}
        res["one_query"] = {}
        try:
            for c in (int(v) for v in a.clients.split(",")):
                runs: dict[str, list] = {name: [] for name in servers}
                for _ in range(a.repeats):
                    for name, s in servers.items():
                        runs[name].append(load(s.url, q, c, a.seconds, a.probes, ref if name != "floor" else None))
                res["one_query"][c] = {name: _median(r) for name, r in runs.items()}
                print(json.dumps({c: res["one_query"][c]}), flush=True)
            irli_url = servers["irli serve"].url
            res["binary"] = {"rows": 256, "clients": 2,
                             **_median([load(irli_url, q, 2, a.seconds, a.probes, ref, binary_rows=256)
                                        for _ in range(a.repeats)])}
            print(json.dumps(res["binary"]), flush=True)
            for name, s in servers.items():
                res["servers"][name]["rss_mb"] = s.rss_mb()
        finally:
            for name, s in servers.items():
                res["servers"][name]["stop"] = s.stop()
        if a.ray:
            s = Running("irli serve --ray", [str(BIN / "irli"), "serve", str(path), "--port", str(p3 := free_port()),
                                             "--ray", "--replica-cpus", "2"], p3)
            res["servers"]["irli serve --ray"] = {"startup_s": s.startup_s}
            try:
                for c in (int(v) for v in a.clients.split(",")):
                    r = _median([load(s.url, q, c, a.seconds, a.probes, ref) for _ in range(a.repeats)])
                    res["one_query"][c]["irli serve --ray"] = r
                    print(json.dumps({c: r}), flush=True)
                res["servers"]["irli serve --ray"]["rss_mb"] = s.rss_mb()
            finally:
                res["servers"]["irli serve --ray"]["stop"] = s.stop()
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "table.md").write_text(table(res))
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
