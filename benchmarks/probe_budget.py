"""How many codes would a per-query probe count save on GloVe? (issue 15)

Fits `fast` on the GloVe split, traces every test query (and 10,000 items
as training queries) through its first 64 probed buckets, scoring their
candidates exactly, and reports the codes read at recall@10 0.90 / 0.95 /
0.962 for: a fixed count, the per-query oracle, the bound rule (stop when
the next centroid score + a margin falls below the 10th best score found),
and ridge models of log(probes needed) fitted on the training queries, from
router scores only and with the best / 10th best scores after m0 probes.

    python benchmarks/probe_budget.py [--out benchmarks/results/learned-probes/traces.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import irli  # noqa: E402
from irli.io.datasets import glove_split  # noqa: E402
from irli.kernels.exact import exact_knn  # noqa: E402

WIDTH = 64
TARGETS = (0.90, 0.95, 0.962)


@numba.njit(nogil=True)
def _trace(qs, probed, offsets, lists, xv, truth, skip):
    """Per query and probe j: hits of the true top-10, the 10th best and best
    exact score so far, and the codes read."""
    n, m = probed.shape
    hits = np.zeros((n, m), np.int16)
    kth = np.zeros((n, m), np.float32)
    best = np.zeros((n, m), np.float32)
    codes = np.zeros((n, m), np.int64)
    stamp = np.full(xv.shape[0], -1, np.int64)
    top = np.empty(10, np.float32)
    for i in range(n):
        top[:] = -np.inf
        h = 0
        c = 0
        for j in range(m):
            b = probed[i, j]
            for p in range(offsets[b], offsets[b + 1]):
                it = lists[p]
                c += 1
                if it == skip[i] or stamp[it] == i:
                    continue
                stamp[it] = i
                s = np.float32(0.0)
                for t in range(qs.shape[1]):
                    s += qs[i, t] * xv[it, t]
                if s > top[9]:
                    at = 9
                    while at > 0 and top[at - 1] < s:
                        top[at] = top[at - 1]
                        at -= 1
                    top[at] = s
                for t in range(truth.shape[1]):
                    if truth[i, t] == it:
                        h += 1
            hits[i, j], kth[i, j], best[i, j], codes[i, j] = h, top[9], top[0], c
    return hits, kth, best, codes


def trace(index, qs, skip):
    probed = index.route(qs, probes=WIDTH)[0]
    scores = np.take_along_axis(qs @ index.centroids_[0].T, probed.astype(np.int64), axis=1).astype(np.float32)
    near = exact_knn(index.vectors_, qs, 11, "cosine")[0]
    truth = np.array([[p for p in row if p != s][:10] for row, s in zip(near, skip)], dtype=np.int64)
    h, t, t1, c = _trace(qs, probed, index.lists_.offsets[0], index.lists_.lists[0], index.vectors_, truth, skip)
    return dict(S=scores, H=h, T=t, T1=t1, C=c)


def codes_at(points, target):
    """Codes read at `target` recall, interpolated on (recall, codes) points."""
    pts = sorted(points, key=lambda p: p[1])
    for (r0, c0), (r1, c1) in zip(pts, pts[1:]):
        if r0 < target <= r1:
            return c0 + (c1 - c0) * (target - r0) / (r1 - r0)
    return float("nan")


def stop_at(t, j):
    rows = np.arange(len(j))
    return t["H"][rows, j].mean() / 10, t["C"][rows, j].mean()


def fixed(t):
    return [stop_at(t, np.full(len(t["H"]), m - 1)) for m in range(1, WIDTH + 1)]


def oracle(t):
    return [stop_at(t, (t["H"] / 10 - lam * t["C"]).argmax(1)) for lam in np.geomspace(1e-7, 1e-3, 60)]


def bound(t, margin, m0):
    stop = np.zeros(t["S"].shape, bool)
    stop[:, :-1] = t["S"][:, 1:] + margin < t["T"][:, :-1]
    stop[:, : m0 - 1] = False
    stop[:, -1] = True
    return stop_at(t, stop.argmax(1))


def features(t, m0):
    f = [t["S"][:, :32]]
    if m0:
        f += [t["T"][:, m0 - 1 : m0], t["T1"][:, m0 - 1 : m0]]
    return np.hstack(f + [np.ones((len(t["S"]), 1), np.float32)]).astype(np.float64)


def needed(t):
    h = t["H"]
    return (h >= h[:, -1:]).argmax(1) + 1


def ridge(train, test, m0, lam=1.0):
    a, y = features(train, m0), np.log(needed(train))
    mu, sd = a[:, :-1].mean(0), a[:, :-1].std(0) + 1e-9
    za = np.hstack([(a[:, :-1] - mu) / sd, a[:, -1:]])
    pen = lam * np.eye(za.shape[1])
    pen[-1, -1] = 0
    w = np.linalg.solve(za.T @ za + pen, za.T @ y)
    b = features(test, m0)
    pred = np.exp(np.hstack([(b[:, :-1] - mu) / sd, b[:, -1:]]) @ w)
    return [stop_at(test, np.clip(np.ceil(pred * s).astype(int), max(m0, 1), WIDTH) - 1)
            for s in np.geomspace(0.3, 8, 80)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    x, q, _, _ = glove_split()
    index = irli.Index("fast").fit(x)
    rows = np.random.default_rng(1).choice(len(x), 10_000, replace=False)
    pos = np.asarray(index.idmap_.pos[rows], np.int64)  # ids are 0 .. N-1: the items' positions
    test = trace(index, q, np.full(len(q), -1, np.int64))
    train = trace(index, np.ascontiguousarray(x[rows]), pos)
    base = [codes_at(fixed(test), tg) for tg in TARGETS]
    lines = ["| probes per query | " + " | ".join(f"codes @{tg}" for tg in TARGETS) + " |", "|---|---|---|---|"]

    def row(name, pts):
        cells = [codes_at(pts, tg) for tg in TARGETS]
        lines.append(f"| {name} | " + " | ".join(f"{c:,.0f} ({c / b:.2f}x)" for c, b in zip(cells, base)) + " |")

    row("fixed", fixed(test))
    row("per-query oracle", oracle(test))
    for m0 in (1, 4, 8):
        row(f"bound rule, {m0} probes first", [bound(test, a, m0) for a in np.linspace(-0.3, 0.6, 91)])
    for m0 in (0, 2, 4, 6, 8):
        row("ridge, router scores only" if m0 == 0 else f"ridge after {m0} probes", ridge(train, test, m0))
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
