"""Same answers before and after a change: fit presets on GloVe at fixed
settings, search the 10,000 test queries and write the ids, or compare the
ids with a directory written before.

    python benchmarks/same_ids.py --out runs/ids-before            # on the old commit
    python benchmarks/same_ids.py --out runs/ids-after --compare runs/ids-before

A refactor that changes no behaviour gives the same ids for every preset at
every setting; one line per preset says how many rows differ.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# (preset, fit overrides, search settings); the label index runs on a planted problem
SETTINGS = [
    ("fast", {}, [dict(probes=8), dict(probes=24), dict(probes=24, refine=8)]),
    ("ivf", {}, [dict(probes=8), dict(probes=32)]),
    ("ivf-ltr", {}, [dict(probes=8), dict(probes=32)]),
    ("irli", {"epochs": 5}, [dict(probes=8), dict(probes=8, min_votes=2), dict(probes=8, top_c=500)]),
]


def run(out: Path, presets: list[str]) -> None:
    import irli
    from irli.io.datasets import glove_split, synthetic_labels

    out.mkdir(parents=True, exist_ok=True)
    x, q, _, _ = glove_split()
    for preset, over, searches in SETTINGS:
        if preset not in presets:
            continue
        t = time.perf_counter()
        index = irli.Index(preset, metric="cosine", **over).fit(x)
        fit_s = time.perf_counter() - t
        for j, s in enumerate(searches):
            np.save(out / f"{preset}-{j}.npy", index.search(q, k=10, **s).ids)
        print(f"{preset}: fit {fit_s:.1f} s", flush=True)
    if "labels" in presets:
        xl, yl = synthetic_labels(4500, 500, n_features=2000, seed=1)
        lab = irli.LabelIndex(epochs=6).fit(xl[:4000], yl[:4000])
        xte = xl[4000:]
        np.save(out / "labels-0.npy", np.asarray(lab.predict(xte, k=5)[0]))
        print("labels: done", flush=True)


def compare(out: Path, before: Path) -> int:
    bad = 0
    for f in sorted(before.glob("*.npy")):
        if not (out / f.name).exists():
            continue  # a preset not run this time
        a, b = np.load(f), np.load(out / f.name)
        rows = int((a != b).any(axis=1).sum())
        bad += rows
        print(f"{f.stem}: {rows} of {a.shape[0]} rows differ")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--compare", type=Path)
    ap.add_argument("--presets", nargs="*", default=["fast", "ivf", "ivf-ltr", "irli", "labels"])
    args = ap.parse_args(argv)
    run(args.out, args.presets)
    return 1 if args.compare is not None and compare(args.out, args.compare) else 0


if __name__ == "__main__":
    sys.exit(main())
