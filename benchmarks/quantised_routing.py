"""int16 routing with an exact fix-up against float32 routing on one index
(issue 23): fit `fast` on MiniLM-384 (or GloVe), save it, load it twice
(once with routing quantised, as irli does from d = 512, once with float
routing only) and time the two in turn in the three modes at fixed
(probes, refine) settings, with recall@10.

    python benchmarks/quantised_routing.py [--dataset minilm] [--out results/quantised-routing.json]
    python benchmarks/quantised_routing.py --dataset synthetic:100000:768
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    import irli
    import irli.model.routers as routers
    from irli.io.datasets import glove_split, minilm_split
    from irli.kernels.exact import exact_knn
    from irli.metrics import recall_at_k

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="minilm", help="glove, minilm or synthetic:N:D")
    ap.add_argument("--settings", default="12:2,24:2,18:4")
    ap.add_argument("--single", type=int, default=3000, help="queries timed one per call")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.dataset.startswith("synthetic:"):
        from irli.io.datasets import synthetic

        n, d = (int(v) for v in a.dataset.split(":")[1:])
        x, q = synthetic(n, d, 2000, latent=32, clusters=256, seed=5)
    else:
        x, q, _, _ = (glove_split() if a.dataset == "glove" else minilm_split())
    truth, _ = exact_knn(x, q, 10, "cosine")
    settings = [tuple(int(v) for v in s.split(":")) for s in a.settings.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        irli.Index("fast", metric="cosine").fit(x).save(Path(tmp) / "idx")
        indexes = {"int16 + exact fix-up": irli.load(Path(tmp) / "idx")}
        keep = routers.QUANTISED_FROM_DIM
        routers.QUANTISED_FROM_DIM = 1 << 30
        try:
            indexes["float32"] = irli.load(Path(tmp) / "idx")
        finally:
            routers.QUANTISED_FROM_DIM = keep
    best = {(name, s, mode): 0.0 for name in indexes for s in settings for mode in ("batch", "parallel", "single")}
    for _ in range(a.rounds):
        for s in settings:
            for name, index in indexes.items():
                kw = dict(k=10, probes=s[0], refine=s[1])
                index.search(q[:500], threads=1, **kw)
                t = time.perf_counter()
                index.search(q, threads=1, **kw)
                best[name, s, "batch"] = max(best[name, s, "batch"], len(q) / (time.perf_counter() - t))
                t = time.perf_counter()
                index.search(q, **kw)
                best[name, s, "parallel"] = max(best[name, s, "parallel"], len(q) / (time.perf_counter() - t))
                t = time.perf_counter()
                for i in range(a.single):
                    index.search(q[i], threads=1, **kw)
                best[name, s, "single"] = max(best[name, s, "single"], a.single / (time.perf_counter() - t))
    rows = []
    for name, index in indexes.items():
        assert index.routing_.quantised == (name != "float32")
        for s in settings:
            res = index.search(q, k=10, probes=s[0], refine=s[1])
            row = {"routing": name, "probes": s[0], "refine": s[1],
                   "recall@10": round(recall_at_k(res.ids, truth, 10), 4),
                   **{f"{mode}_qps": round(best[name, s, mode]) for mode in ("batch", "parallel", "single")}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"dataset": a.dataset, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
