"""Where a build's time goes: fit a preset on GloVe (or MiniLM) and print
the wall time of each stage (issue 23), from the fit's progress reports and
timers around the steps of the codes stage.

    python benchmarks/build_profile.py                       # fast on GloVe
    python benchmarks/build_profile.py --dataset minilm --out results/build-minilm.json

Stages: prepare (input checks, normalising), kmeans, assign + spill (the
nearest-centroid pass and SOAR), lists, codes (residual-or-direct choice,
codebook training, encoding every item, the scan layout), budget, drift
baseline. Threads: all cores, as `fit` runs by default.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv=None) -> int:
    import irli
    import irli.index.codes as codes
    from irli.io.datasets import glove_split, minilm_split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["glove", "minilm"], default="glove")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    x = (glove_split() if a.dataset == "glove" else minilm_split())[0]

    inner: dict[str, float] = {}

    def timer(owner, name, label):
        f = getattr(owner, name)

        def timed(*args, **kw):
            t = time.perf_counter()
            try:
                return f(*args, **kw)
            finally:
                inner[label] = inner.get(label, 0.0) + time.perf_counter() - t

        setattr(owner, name, timed)
        return f

    saved = [(codes, "choose_residual", timer(codes, "choose_residual", "codes: residual-or-direct choice")),
             (codes.PQ4Codes, "encode", timer(codes.PQ4Codes, "encode", "codes: encode every item")),
             (codes.PQ4Codes, "_layout", timer(codes.PQ4Codes, "_layout", "codes: scan layout"))]
    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()

    def progress(p):
        marks.append((p.stage, time.perf_counter() - t0))

    index = irli.Index(a.preset).fit(x, callback=progress)
    total = time.perf_counter() - t0
    for owner, name, f in saved:
        setattr(owner, name, f)
    # a stage runs from the previous stage's last report to its own last report
    last: dict[str, float] = {}
    for stage, t in marks:
        last[stage] = t
    rows, prev = [], 0.0
    names = {"kmeans": "kmeans", "spill": "assign + spill", "lists": "lists", "codes": "codes",
             "budget": "probe budget"}
    for stage, end in sorted(last.items(), key=lambda kv: kv[1]):
        rows.append((names.get(stage, stage), end - prev))
        prev = end
    rows.append(("drift baseline, install", total - prev))
    first = marks[0][1] if marks else total
    rows.insert(0, ("prepare (before the first report)", first))
    rows[1] = (rows[1][0], rows[1][1] - first)
    codes_s = dict(rows).get("codes", 0.0)
    train = codes_s - sum(inner.values())
    print(f"{a.preset} on {a.dataset} ({x.shape[0]:,} x {x.shape[1]}): build {total:.1f} s")
    for name, s in rows:
        print(f"  {name:34s} {s:6.2f} s")
        if name == "codes":
            for k, v in inner.items():
                print(f"    {k:32s} {v:6.2f} s")
            print(f"    {'codes: codebook training':32s} {train:6.2f} s")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"dataset": a.dataset, "preset": a.preset, "build_s": total,
                                     "stages": rows, "codes": {**inner, "codes: codebook training": train},
                                     "n_buckets": index.n_buckets}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
