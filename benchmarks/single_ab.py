"""One query per call (or a batch on one thread), two irli configurations
timed in alternation.

bench.py times each system's settings one after the other, minutes apart;
on a shared 2-core machine the memory bandwidth a query's scan gets moves
by ±10-20 % over minutes, and a single-mode ratio between two systems moves
with it. This script times the given settings in rounds, every setting
once per round (in alternating order), all queries one call each (as
bench.py's single mode), and keeps each setting's fastest round: both
systems see the same machine. With --compare RECALL it also pairs the
systems round by round (each one's fastest setting reaching RECALL) and
prints the median of the per-round ratios: on a machine whose speed drifts,
the steadiest figure. It prints the same ratio at exactly RECALL too, each
system's QPS interpolated between its settings on either side (qps_at):
the fastest setting reaching RECALL moves by ±5 % with how close to RECALL
a system's settings happen to fall, so give each system settings on both
sides.
With --slice N (single mode), each round is cut into slices of N queries
and every setting runs each slice in turn: the settings then share the
machine's state within milliseconds, where whole rounds are seconds apart.
With --mode batch, each round times one call of all the queries on one
thread instead (bench.py's batch mode); with --mode all, one call on every
core (bench.py's all-cores mode).

    python benchmarks/single_ab.py --dataset glove \
        --system fast:20/3,24/2 --system fast:learned_probes=1:18/2,16/3,20/2

Each --system is an irli preset with overrides (as bench.py's irli:<spec>,
without the prefix) and its probes/refine settings. Indexes are built once
into --index-dir and loaded from there afterwards. Prints, per setting,
recall@10, QPS (fastest round) and the median over rounds, as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the data preparation bench.py uses)

import irli  # noqa: E402
from irli.metrics import recall_at_k  # noqa: E402


def _index(spec: str, data_dir: Path, metric: str, index_dir: Path, buckets: int | None) -> irli.Index:
    path = index_dir / spec.replace(":", "_").replace("=", "-")
    if path.exists():
        return irli.Index.load(path, mmap=False)
    preset, _, rest = spec.partition(":")
    over = irli.IndexConfig.parse_overrides([kv for kv in rest.split(":") if kv]) if rest else {}
    x = np.load(data_dir / "items.npy")
    kw = {"n_buckets": buckets} if buckets else {}
    index = irli.Index(preset, metric=metric, **kw, **over).fit(x)
    index.save(path)
    return irli.Index.load(path, mmap=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="glove")
    p.add_argument("--system", action="append", required=True,
                   help="<preset>[:key=value...]:<probes>/<refine>[,<probes>/<refine>...]")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--mode", choices=("single", "batch", "all"), default="single")
    p.add_argument("--n", type=int, default=10_000, help="queries per round, spread through the test set")
    p.add_argument("--buckets", type=int, default=1024)
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "irli-bench"))
    p.add_argument("--index-dir", default=str(Path.home() / ".cache" / "irli-bench" / "ab-indexes"))
    p.add_argument("--slice", type=int, default=0, metavar="N",
                   help="single mode: cut each round into slices of N queries, every setting running each slice "
                        "in turn (order alternating), so that all settings see the same machine state within "
                        "milliseconds; 0: each setting runs the whole round at once")
    p.add_argument("--compare", type=float, default=None, metavar="RECALL",
                   help="also print, per round, each system's fastest setting reaching RECALL and the last "
                        "system's QPS over the first's, with the median of those ratios")
    a = p.parse_args()
    data_dir, metric = bench.prepare(a.dataset, Path(a.cache), 10_000)
    q = np.load(data_dir / "queries.npy")
    truth = np.load(data_dir / "truth.npy")
    one = np.linspace(0, q.shape[0] - 1, min(a.n, q.shape[0])).round().astype(np.int64)
    index_dir = Path(a.index_dir) / a.dataset.replace(":", "_").replace("/", "_")
    runs = []
    for s in a.system:
        spec, _, settings = s.rpartition(":")
        index = _index(spec, data_dir, metric, index_dir, a.buckets)
        for pr in settings.split(","):
            probes, refine = (int(v) for v in pr.split("/"))
            runs.append((spec, probes, refine, index))
    qs = np.ascontiguousarray(q[one])  # the batch modes' queries
    times = {i: [] for i in range(len(runs))}
    found = {i: np.empty((one.shape[0], 10), np.int64) for i in range(len(runs))}
    if a.mode == "single":
        for spec, probes, refine, index in runs:
            for j in one[:64]:
                index.search(q[j], k=10, probes=probes, refine=refine)  # warm-up: compile, plans
    step = a.slice if a.mode == "single" and a.slice > 0 else one.shape[0]
    for rnd in range(a.rounds):
        for i in times:
            times[i].append(0.0)
        for c, lo in enumerate(range(0, one.shape[0], step)):
            order = list(range(len(runs)))
            for i in order if (rnd + c) % 2 == 0 else order[::-1]:  # alternate the order: a drift favours no one
                spec, probes, refine, index = runs[i]
                if a.mode != "single":
                    threads = 1 if a.mode == "batch" else None  # None: every core
                    index.search(qs[:64], k=10, probes=probes, refine=refine, threads=threads)  # warm-up
                    t0 = time.perf_counter()
                    found[i][:] = index.search(qs, k=10, probes=probes, refine=refine, threads=threads).ids
                    times[i][-1] += time.perf_counter() - t0
                    continue
                ids = found[i]
                t0 = time.perf_counter()
                for r in range(lo, min(lo + step, one.shape[0])):
                    ids[r] = index.search(q[one[r]], k=10, probes=probes, refine=refine).ids[0]
                times[i][-1] += time.perf_counter() - t0
    recall = {}
    for i, (spec, probes, refine, _) in enumerate(runs):
        t = np.array(times[i])
        recall[i] = round(recall_at_k(found[i], truth[one], 10), 4)
        print(json.dumps({"system": spec, "probes": probes, "refine": refine, "recall@10": recall[i],
                          "qps_best": round(one.shape[0] / t.min()), "qps_median": round(one.shape[0] / np.median(t)),
                          "qps_rounds": [round(one.shape[0] / v) for v in t], "rounds": a.rounds, "mode": a.mode}))
    if a.compare is not None:
        print(json.dumps(compare(runs, times, recall, a.compare, one.shape[0])))


def compare(runs, times, recall, target, n):
    """Per round, each system's fastest setting at recall >= target; the
    last system's QPS over the first's per round and their median (None
    where a system has no such setting). Also the same at exactly the
    target recall, interpolated on each round's frontier (qps_at): a
    figure that does not move with where a system's settings happen to
    fall around the target ("interpolated"; None where a system has no
    setting on one side of it)."""
    specs = list(dict.fromkeys(spec for spec, *_ in runs))
    rounds = len(next(iter(times.values())))
    qps, at = {}, {}
    for spec in specs:
        mine = [i for i, r in enumerate(runs) if r[0] == spec]
        ok = [i for i in mine if recall[i] >= target]
        qps[spec] = [round(max(n / times[i][k] for i in ok)) for k in range(rounds)] if ok else None
        at[spec] = [qps_at([(recall[i], n / times[i][k]) for i in mine], target) for k in range(rounds)]
        at[spec] = [round(v) for v in at[spec]] if None not in at[spec] else None
    first, last = specs[0], specs[-1]
    out = {"compare_at": target, "systems": specs, "qps_rounds": qps}
    for key, per in (("", qps), ("interpolated_", at)):
        ratios = ([round(b / f, 4) for f, b in zip(per[first], per[last])]
                  if per[first] and per[last] and len(specs) > 1 else None)
        if key:
            out["interpolated_qps_rounds"] = at
        out[key + "ratio_rounds"] = ratios
        out[key + "ratio_median"] = float(np.median(ratios)) if ratios else None
    return out


def qps_at(points, target):
    """QPS at exactly recall `target` from (recall, qps) settings: on their
    frontier (the settings no other one beats in both), log QPS is
    interpolated linearly in recall between the nearest frontier settings
    below and at or above the target (the fastest setting reaching it
    where every setting below is slower); None without a setting on either
    side (nothing is extrapolated)."""
    front = []
    for rc, q in sorted(points, key=lambda p: (-p[0], -p[1])):  # highest recall first
        if not front or q > front[-1][1]:
            front.append((rc, q))
    above = [p for p in front if p[0] >= target]
    below = [p for p in front if p[0] < target]
    if not above or all(p[0] >= target for p in points):
        return None
    if not below:  # the settings below are slower than one that reaches the target: that one's QPS
        return float(above[-1][1])
    (r1, q1), (r0, q0) = above[-1], below[0]  # the nearest on each side
    t = (target - r0) / (r1 - r0)
    return float(np.exp(np.log(q0) + t * (np.log(q1) - np.log(q0))))


if __name__ == "__main__":
    main()
