"""The commands that read an index: search and eval, on every kind of index
`irli.load` opens (a vector index, a sharded one, a label index)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
from cyclopts import Parameter

from ..errors import InvalidInputError
from .bars import Bars
from .options import (
    Address,
    File,
    Ids,
    K,
    Name,
    Quiet,
    Threads,
    probe_list,
    read,
    read_ids,
    read_xc,
    refuse,
)


def search(index: str, queries: str, /, *, k: K = 10, probes: int | None = None, min_votes: int | None = None,
           top_c: int | None = None, refine: int | None = None, allow: Ids = None,
           out: Annotated[str | None, Parameter(metavar="PREFIX")] = None, key: Name = "test", labels: File = None,
           ray_address: Address = None, shards: int = 2, threads: Threads = None) -> int:
    """Search an index with a file of queries.

    Writes PREFIX.ids.npy and PREFIX.scores.npy with --out, else prints a line per query: its row, a tab, and
    id:score pairs, best first. A label index gives label ids.

    Parameters
    ----------
    index
        index directory (single, sharded or label), or a sharded index's fsspec URL
    queries
        queries file (.npy, .fvecs, .hdf5: its test set), or an XC file for a label index
    k
        results per query
    probes
        buckets opened per repetition (default: the index's own setting)
    min_votes
        keep candidates seen in at least this many repetitions
    top_c
        score only the C most probable candidates
    refine
        with PQ codes: re-rank the best REFINE x k exactly
    allow
        return only these ids: a .npy of ids or a bool mask by id, or 3,17,42
    out
        prefix of the .npy files to write
    key
        dataset to read from an .hdf5 file
    labels
        label index, split format: the labels file of QUERIES
    ray_address
        search shards of the index in Ray actors on this cluster ('auto': an existing one)
    shards
        with --ray-address and an unsharded INDEX: cut it into this many parts in memory
    threads
        threads for the search (default: all cores)
    """
    from ..distributed.sharded import ShardedIndex
    from ..labels.index import LabelIndex
    from ..loader import load

    opened = load(index)
    if isinstance(opened, LabelIndex):  # label ids
        refuse(opened, {"--allow": allow, "--refine": refine, "--top-c": top_c, "--ray-address": ray_address})
        x, _ = read_xc(queries, labels)
        res = opened.predict(x, k=k, probes=probes, min_votes=min_votes, threads=threads)
        return _show(res, out, "labels")
    refuse(opened, {"--labels": labels})
    q = read(queries, key)
    if ray_address:  # the parts of the index in Ray actors
        from ..distributed.executor import RayExecutor

        executor = RayExecutor(address=ray_address)
        if isinstance(opened, ShardedIndex):  # each actor loads its own part
            opened.close()
            opened = ShardedIndex.open(index, executor=executor)
        else:
            opened = ShardedIndex(opened, shards=shards, executor=executor)
    mask = read_ids(allow, "--allow", mask=True) if allow else None
    if isinstance(opened, ShardedIndex):
        if min_votes or top_c:
            raise InvalidInputError("--min-votes and --top-c are not supported for a sharded search")
        with opened:
            res = opened.search(q, k=k, probes=probes, allow=mask, refine=refine)
    else:
        res = opened.search(q, k=k, probes=probes, min_votes=min_votes, top_c=top_c, refine=refine, allow=mask,
                            threads=threads)
    return _show(res, out, "candidates")


def _show(res, out: str | None, scored: str) -> int:
    """Write a result as OUT.ids.npy and OUT.scores.npy, or print it a row a line."""
    if out:
        prefix = Path(out)
        np.save(f"{prefix}.ids.npy", res.ids)
        np.save(f"{prefix}.scores.npy", res.scores)
        print(f"wrote {prefix}.ids.npy and {prefix}.scores.npy ({res.ids.shape[0]} queries, "
              f"{res.candidates.mean():.0f} {scored} per query)")
        return 0
    for i in range(res.ids.shape[0]):
        print(f"{i}\t" + " ".join(f"{j}:{s:.4f}" for j, s in zip(res.ids[i], res.scores[i]) if j >= 0))
    return 0


def eval_(index: str, queries: str, /, *, truth: File = None, k: K = 10,
          probes: Annotated[str | None, Parameter(metavar="LIST")] = None, labels: File = None,
          min_votes: int | None = None, top_c: int | None = None, refine: int | None = None, threads: Threads = None,
          json_out: Annotated[str | None, Parameter(name="--json", metavar="FILE")] = None,
          quiet: Quiet = False) -> int:
    """Recall@k, candidates and QPS over a sweep of probes.

    Evaluates INDEX on QUERIES against exact ground truth: from --truth (ids, .npy or .ivecs), from the
    'neighbors' of an .hdf5 file, or computed exactly over the index's items. A label index reports P@k,
    nDCG@k and PSP@k (k = 1, 3, 5), coverage and time per point on an XC-format file.

    Parameters
    ----------
    index
        index directory (single, sharded or label), or a sharded index's fsspec URL
    queries
        queries file (.npy, .fvecs, .hdf5 with its neighbors), or an XC file for a label index
    truth
        ground-truth ids, (n, >= k): .npy or .ivecs
    k
        recall@k (a label index always reports k = 1, 3, 5)
    probes
        comma-separated probe counts (default 1,2,4,8,16,32,64; a label index: its own setting)
    labels
        label index, split format: the labels file of QUERIES
    min_votes
        keep candidates seen in at least this many repetitions
    top_c
        score only the C most probable candidates
    refine
        with PQ codes: re-rank the best REFINE x k exactly
    threads
        threads for the timed search (default 1; a label index: all cores)
    json_out
        also write the table as JSON here
    quiet
        no progress bar
    """
    from ..labels.index import LabelIndex
    from ..loader import load
    from .evaluation import format_table, sweep

    opened = load(index)
    if isinstance(opened, LabelIndex):
        refuse(opened, {"--truth": truth, "--top-c": top_c, "--refine": refine})
        return _eval_labels(opened, queries, labels, probes, min_votes, threads, json_out)
    refuse(opened, {"--labels": labels})
    steps = probe_list(probes or "1,2,4,8,16,32,64")
    q, known = _queries(queries)
    if truth:
        from ..io.datasets import read_vectors

        known = read_vectors(truth)
    if known is None:
        known = _exact_truth(opened, q, k, quiet)
    known = np.asarray(known)
    if known.ndim != 2 or known.shape[0] != q.shape[0] or known.shape[1] < k:
        raise InvalidInputError(f"ground truth has shape {known.shape}, need ({q.shape[0]}, >= {k})")
    rows = sweep(opened, q, known, k, steps, threads or 1, min_votes=min_votes, top_c=top_c, refine=refine)
    print(format_table(rows))
    if json_out:
        Path(json_out).write_text(json.dumps(rows, indent=2))
    return 0


def _queries(path: str):
    """(queries, their true neighbours or None): an ann-benchmarks .hdf5
    file holds both."""
    from ..io.datasets import read_ann_hdf5, read_vectors

    if Path(path).suffix.lower() in (".hdf5", ".h5"):
        data = read_ann_hdf5(path)
        return data.test, data.neighbors
    return read_vectors(path), None


def _exact_truth(index, q: np.ndarray, k: int, quiet: bool) -> np.ndarray:
    """Exact top-k ids of `q` among the items `index` holds now."""
    from ..kernels.exact import exact_knn

    if len(index) == 0:
        raise InvalidInputError("the index holds no items: there is no ground truth to evaluate against")
    if not hasattr(index, "vectors_"):  # a sharded index: the parts hold the vectors
        return _exhaustive(index, q, k)
    if index.n_removed:  # removed items keep their slots until compact(): only the live ones
        ids = index.ids
        vectors = index.get_vectors(ids)
    else:
        ids, vectors = index.ids_, index.vectors_
    bars = Bars(not quiet)
    try:
        pos, _ = exact_knn(vectors, q, k, index.config.metric, callback=bars)
    finally:
        bars.close()
    return np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)


def _exhaustive(index, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids of `q` from an index whose vectors are not at hand
    (a sharded one): every bucket probed, and with codes every probed item
    re-ranked exactly."""
    refine = -(-len(index) // k) if index.config.scan == "pq4" else None
    step = 32  # each query holds a heap of every item: a few at a time
    return np.concatenate([index.search(q[s : s + step], k=k, probes=index.n_buckets, refine=refine).ids
                           for s in range(0, q.shape[0], step)])


def _eval_labels(index, queries: str, labels: str | None, probes: str | None, min_votes: int | None,
                 threads: int | None, json_out: str | None) -> int:
    x, y = read_xc(queries, labels)
    ks = (1, 3, 5)
    rows = []
    for p in (probe_list(probes) if probes else [None]):
        r = index.evaluate(x, y, ks=ks, probes=p, min_votes=min_votes, threads=threads)
        rows.append({"probes": p or index.fitted_config_.probes, **r})
    cols = ["probes"] + [f"P@{k}" for k in ks] + [f"nDCG@{k}" for k in ks] + [f"PSP@{k}" for k in ks] \
        + ["coverage@5", "ms_per_point"]
    print(f"{x.shape[0]:,} points, {index.n_labels:,} labels (PSP: propensities from the training "
          "label counts, A=0.55 B=1.5, normalised)")
    print("  ".join(f"{c:>9}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]:>9}" if c == "probes" else
                        (f"{r[c]:9.3f}" if c == "ms_per_point" else f"{100 * r[c]:9.2f}") for c in cols))
    if json_out:
        Path(json_out).write_text(json.dumps(rows, indent=2))
    return 0
