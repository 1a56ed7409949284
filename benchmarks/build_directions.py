"""Directions for a faster build, side by side (issue 23): build `fast`
once per variant of a build step on GloVe (or MiniLM), then report each
index's build time, recall@10 and batched QPS on one thread at fixed
(probes, refine) settings, the indexes timed in turn (best of `rounds`),
so a direction is kept only on figures from the same run.

    python benchmarks/build_directions.py --variants base,rounds-2
    python benchmarks/build_directions.py --dataset minilm --variants base,soar-8

Variants (each changes one step; "base" is the library as it is):
  base                  the defaults
  rounds-N              N anisotropic training rounds (4 by default)
  choice-sample-N       the residual-or-direct choice on N items (20,000)
  soar-N                SOAR picks the spill bucket among N nearest
                        centroids (16 by default)
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path



def variant(name: str):
    """(apply, undo) for a named variant: apply() patches the library."""
    import irli.index.codes as codes
    import irli.learn.loop as loop

    saved: list[tuple[object, str, object]] = []

    def patch(owner, attr, value):
        saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)

    def apply():
        if name == "base":
            return
        if name.startswith("rounds-"):
            patch(codes, "choose_residual", functools.partial(codes.choose_residual, rounds=int(name[7:])))
        elif name.startswith("choice-sample-"):
            patch(codes, "choose_residual", functools.partial(codes.choose_residual, sample=int(name[14:])))
        elif name.startswith("soar-"):
            patch(loop, "soar_spill", functools.partial(loop.soar_spill, candidates=int(name[5:])))
        else:
            raise SystemExit(f"unknown variant {name!r}")

    def undo():
        for owner, attr, value in reversed(saved):
            setattr(owner, attr, value)
        saved.clear()

    return apply, undo


def main(argv=None) -> int:
    import irli
    from irli.io.datasets import glove_split, minilm_split
    from irli.kernels.exact import exact_knn
    from irli.metrics import recall_at_k

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["glove", "minilm"], default="glove")
    ap.add_argument("--variants", default="base")
    ap.add_argument("--settings", default="12:2,24:2,18:4", help="probes:refine pairs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    x, q, _, _ = (glove_split() if a.dataset == "glove" else minilm_split())
    truth, _ = exact_knn(x, q, 10, "ip")
    settings = [tuple(int(v) for v in s.split(":")) for s in a.settings.split(",")]
    built = {}
    for name in a.variants.split(","):
        apply, undo = variant(name)
        apply()
        try:
            t = time.perf_counter()
            index = irli.Index("fast", metric="cosine").fit(x)
            built[name] = (index, time.perf_counter() - t)
        finally:
            undo()
        print(f"{name}: build {built[name][1]:.1f} s", flush=True)
    qps = {(name, s): 0.0 for name in built for s in settings}
    for _ in range(a.rounds):  # every index timed in turn, best of `rounds`
        for s in settings:
            for name, (index, _) in built.items():
                index.search(q[:500], k=10, probes=s[0], refine=s[1], threads=1)  # warm
                t = time.perf_counter()
                index.search(q, k=10, probes=s[0], refine=s[1], threads=1)
                qps[name, s] = max(qps[name, s], len(q) / (time.perf_counter() - t))
    rows = []
    for name, (index, build_s) in built.items():
        row = {"variant": name, "build_s": round(build_s, 2)}
        for s in settings:
            res = index.search(q, k=10, probes=s[0], refine=s[1], threads=1)
            row[f"recall {s[0]},{s[1]}"] = round(recall_at_k(res.ids, truth, 10), 4)
            row[f"qps {s[0]},{s[1]}"] = round(qps[name, s])
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"dataset": a.dataset, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
