"""A living index on GloVe: fit on 70% of the items, add the other 30%, remove,
refresh, and filtered search, next to FAISS and hnswlib doing the same.

    .venv/bin/python benchmarks/living.py [--presets fast,ivf,irli] [--out benchmarks/results/living]

Everything runs on one thread (numba, BLAS, FAISS OpenMP, hnswlib), the same
queries (10,000 held-out GloVe words) and exact cosine ground truth. Writes
results.json and table.md under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import machine  # noqa: E402

import irli  # noqa: E402
from irli.cli.evaluation import format_table, timed_search  # noqa: E402
from irli.io.datasets import glove_split  # noqa: E402
from irli.kernels.exact import exact_knn  # noqa: E402
from irli.metrics import recall_at_k  # noqa: E402

K = 10


def pinned(threads: int = 1):
    """Pin numba, FAISS and BLAS to `threads` for the whole run."""
    import faiss
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    return threadpool_limits(threads)


def clock(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def living(preset: str, x, q, truth, first, rest, log) -> tuple[dict, irli.Index]:
    """Fit on `first` rows, add `rest`, compare with a fit on all, refresh.
    Returns the figures and the index fitted on all items."""
    row = {"preset": preset}
    grown, row["fit_70_s"] = clock(lambda: irli.Index(preset).fit(x[first], ids=first))
    probes = grown.config.probes
    row["probes"] = probes
    _, row["add_30_s"] = clock(lambda: grown.add(x[rest], ids=rest))
    row["added"] = int(rest.size)
    row["add_per_100k_s"] = row["add_30_s"] * 100_000 / rest.size
    res, secs = timed_search(grown, q, K, probes)
    row["recall_grown"], row["qps_grown"] = recall_at_k(res.ids, truth, K), q.shape[0] / secs
    d = grown.drift()
    row["drift_moved"], row["drift_moved_at_fit"] = d.moved, d.moved_at_fit
    row["imbalance"], row["imbalance_at_fit"] = d.imbalance, d.imbalance_at_fit
    full, row["fit_all_s"] = clock(lambda: irli.Index(preset).fit(x, ids=np.arange(x.shape[0])))
    res, secs = timed_search(full, q, K, probes)
    row["recall_full"], row["qps_full"] = recall_at_k(res.ids, truth, K), q.shape[0] / secs
    _, row["refresh_s"] = clock(lambda: grown.refresh())
    res, secs = timed_search(grown, q, K, probes)
    row["recall_refreshed"] = recall_at_k(res.ids, truth, K)
    row["gap"] = row["recall_full"] - row["recall_grown"]
    row["gap_after_refresh"] = row["recall_full"] - row["recall_refreshed"]
    log(f"{preset}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})}")
    return row, full


def removal(index, rng, n: int = 100_000) -> dict:
    gone = rng.choice(index.ids, size=min(n, len(index) // 2), replace=False)
    _, secs = clock(lambda: index.remove(gone))
    _, csecs = clock(lambda: index.compact())
    return {"system": f"irli ({index.preset})", "remove_100k_s": secs, "compact_s": csecs}


def peers_add_remove(x, first, rest, rng, log) -> list[dict]:
    import faiss
    import hnswlib

    rows = []
    d = x.shape[1]
    quant = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quant, d, 1024, faiss.METRIC_INNER_PRODUCT)
    ivf.train(x[first])
    ivf.add_with_ids(x[first], first.astype(np.int64))
    _, add = clock(lambda: ivf.add_with_ids(x[rest], rest.astype(np.int64)))
    gone = rng.choice(np.arange(x.shape[0]), size=min(100_000, x.shape[0] // 2), replace=False).astype(np.int64)
    _, rm = clock(lambda: ivf.remove_ids(faiss.IDSelectorBatch(gone)))
    rows.append({"system": "FAISS IVF1024,Flat", "add_per_100k_s": add * 100_000 / rest.size, "remove_100k_s": rm})
    h = hnswlib.Index(space="ip", dim=d)
    h.init_index(max_elements=x.shape[0], M=16, ef_construction=200)
    h.set_num_threads(1)
    h.add_items(x[first], first)
    _, add = clock(lambda: h.add_items(x[rest], rest))

    def mark():
        for i in gone:  # hnswlib deletes one label per call
            h.mark_deleted(int(i))

    _, rm = clock(mark)
    rows.append({"system": "hnswlib M=16 efC=200", "add_per_100k_s": add * 100_000 / rest.size, "remove_100k_s": rm})
    log(f"peers add/remove: {rows}")
    return rows


def filtered(index, x, q, rng, log, share: float = 0.01) -> list[dict]:
    import faiss

    allow = np.sort(rng.choice(x.shape[0], size=int(share * x.shape[0]), replace=False))
    want, _ = exact_knn(x[allow], q, K, "ip")
    want = allow[want]
    flat = faiss.IndexIDMap(faiss.IndexFlatIP(x.shape[1]))
    flat.add_with_ids(x, np.arange(x.shape[0], dtype=np.int64))
    _, knn_s = clock(lambda: exact_knn(x, q, K, "ip"))
    _, flat_s = clock(lambda: flat.search(q, K))
    full_s = min(knn_s, flat_s)  # the faster exact search is the baseline
    res, secs = timed_search(index, q, K, index.config.probes, allow=allow)
    rows = [{"system": "exact, all items: FAISS IndexFlatIP", "allowed": x.shape[0], "QPS": q.shape[0] / flat_s,
             "recall@10 among allowed": 1.0, "speed-up": full_s / flat_s},
            {"system": "exact, all items: faiss.knn (irli.kernels.exact)", "allowed": x.shape[0], "QPS": q.shape[0] / knn_s,
             "recall@10 among allowed": 1.0, "speed-up": full_s / knn_s},
            {"system": f"irli ({index.preset}) allow=ids", "allowed": allow.size, "QPS": q.shape[0] / secs,
             "recall@10 among allowed": recall_at_k(res.ids, want, K), "identical": bool((res.ids == want).all()),
             "speed-up": full_s / secs}]
    params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allow.astype(np.int64)))
    (_, ids), s = clock(lambda: flat.search(q, K, params=params))
    rows.append({"system": "FAISS IndexFlatIP + IDSelectorBatch", "allowed": allow.size, "QPS": q.shape[0] / s,
                 "recall@10 among allowed": recall_at_k(ids, want, K), "speed-up": full_s / s})
    quant = faiss.IndexFlatIP(x.shape[1])
    ivf = faiss.IndexIVFFlat(quant, x.shape[1], 1024, faiss.METRIC_INNER_PRODUCT)
    ivf.train(x)
    ivf.add(x)
    p = faiss.SearchParametersIVF(sel=faiss.IDSelectorBatch(allow.astype(np.int64)), nprobe=16)
    (_, ids), s = clock(lambda: ivf.search(q, K, params=p))
    rows.append({"system": "FAISS IVF1024,Flat + IDSelectorBatch, nprobe=16", "allowed": allow.size,
                 "QPS": q.shape[0] / s, "recall@10 among allowed": recall_at_k(ids, want, K),
                 "speed-up": full_s / s})
    # a larger filter goes through the buckets
    big = np.sort(rng.choice(x.shape[0], size=int(0.2 * x.shape[0]), replace=False))
    want_big = big[exact_knn(x[big], q, K, "ip")[0]]
    res, secs = timed_search(index, q, K, index.config.probes, allow=big)
    rows.append({"system": f"irli ({index.preset}) allow=ids, 20%", "allowed": big.size, "QPS": q.shape[0] / secs,
                 "recall@10 among allowed": recall_at_k(res.ids, want_big, K), "speed-up": full_s / secs})
    log(f"filtered: {rows}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="fast,ivf,irli")
    ap.add_argument("--out", default="benchmarks/results/living")
    ap.add_argument("--items", type=int, default=None, help="use only the first N items (a quick check)")
    ap.add_argument("--queries", type=int, default=None, help="use only the first N queries")
    ap.add_argument("--filtered-only", action="store_true", help="only the filtered-search table (fits `fast`)")
    ap.add_argument("--add-only", action="store_true", help="only time fit-on-70% then add-30% per preset")
    ap.add_argument("--threads", type=int, default=1, help="threads for numba, BLAS and FAISS")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, flush=True)  # noqa: E731
    pinned(a.threads)
    x, q, _, _ = glove_split()
    x, q = x[: a.items], q[: a.queries]
    truth, _ = exact_knn(x, q, K, "ip")
    rng = np.random.default_rng(0)
    perm = rng.permutation(x.shape[0])
    cut = int(0.7 * x.shape[0])
    first, rest = np.sort(perm[:cut]), np.sort(perm[cut:])
    result = {"machine": machine(), "n_items": int(x.shape[0]), "n_queries": int(q.shape[0]), "k": K,
              "threads": a.threads, "living": [], "remove": [], "filtered": []}
    if a.add_only:
        rows = []
        for preset in a.presets.split(","):
            grown = irli.Index(preset).fit(x[first], ids=first)
            _, secs = clock(lambda: grown.add(x[rest], ids=rest))
            rows.append({"preset": preset, "threads": a.threads, "add_per_100k_s": secs * 100_000 / rest.size})
            log(f"add: {rows[-1]}")
        (out / f"add-{a.threads}threads.json").write_text(json.dumps(rows, indent=2))
        return 0
    if a.filtered_only:
        full = irli.Index("fast").fit(x)
        result["filtered"] = filtered(full, x, q, np.random.default_rng(2), log)
        (out / "filtered.json").write_text(json.dumps(result, indent=2))
        return 0
    for preset in a.presets.split(","):
        row, full = living(preset, x, q, truth, first, rest, log)
        result["living"].append(row)
        if preset == "fast":
            result["filtered"] = filtered(full, x, q, np.random.default_rng(2), log)
        result["remove"].append({**removal(full, np.random.default_rng(1)),
                                 "add_per_100k_s": row["add_per_100k_s"]})
        log(f"remove: {result['remove'][-1]}")
    result["remove"] += peers_add_remove(x, first, rest, np.random.default_rng(1), log)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    cols = ["preset", "probes", "recall_full", "recall_grown", "gap", "recall_refreshed", "gap_after_refresh",
            "add_per_100k_s", "refresh_s", "fit_all_s", "drift_moved", "drift_moved_at_fit", "imbalance",
            "imbalance_at_fit"]
    md = ["## Fit on 70%, add 30% (recall@10 at the preset's probes)", "", "```",
          format_table(result["living"], cols), "```", "", "## Add and remove", "", "```",
          format_table(result["remove"], ["system", "add_per_100k_s", "remove_100k_s", "compact_s"]), "```", ""]
    if result["filtered"]:
        md += ["## Filtered search, one allow-list per call", "", "```", format_table(result["filtered"]), "```"]
    (out / "table.md").write_text("\n".join(md) + "\n")
    log("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
