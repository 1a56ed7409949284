"""The commands that write an index: build, add, remove, compact, shard."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from cyclopts import Parameter

from ..config import PRESETS
from ..errors import InvalidInputError
from ..metric import METRICS
from .bars import Bars
from .config_options import ConfigOptions, Options, overrides
from .options import (
    Address,
    File,
    Flag,
    Ids,
    MaybePositive,
    Name,
    Positive,
    Quiet,
    Threads,
    read,
    read_ids,
    read_xc,
)

Preset = Literal[tuple(PRESETS)]
Metric = Literal[tuple(METRICS)]


def build(vectors: str, /, *,
          output: Annotated[str, Parameter(name=["--output", "-o"], metavar="DIR")],
          force: Flag = False,
          preset: Preset = "fast",
          metric: Metric = "cosine",
          sets: Annotated[tuple[str, ...],
                          Parameter(name="--set", metavar="KEY=VALUE", negative=(), show_default=False)] = (),
          train_queries: File = None,
          train_targets: File = None,
          key: Name = "train",
          task: Literal["auto", "vectors", "labels"] = "auto",
          labels: File = None,
          sample: MaybePositive = None,
          ray_address: Address = None,
          workers: MaybePositive = None,
          threads: Threads = None,
          quiet: Quiet = False,
          config: Options = ConfigOptions()) -> int:  # noqa: B006, B008 - never changed
    """Build an index from VECTORS and save it to OUTPUT.

    VECTORS: .npy, .fvecs, .ivecs, .bvecs, or an ann-benchmarks .hdf5 (its 'train' set); or an Extreme
    Classification Repository file, which builds a label index. Every configuration field is an option
    (below), or --set KEY=VALUE.

    Parameters
    ----------
    vectors
        vectors file (.npy, .fvecs, .ivecs, .bvecs, .hdf5), or an XC label file
    output
        index directory to write
    force
        replace OUTPUT if it exists
    preset
        the defaults to start from (a vector index)
    metric
        similarity of a vector index: cosine, inner product or squared L2
    sets
        override a config field, e.g. --set n_buckets=1024 (repeatable; the same as --n-buckets 1024)
    train_queries
        vectors file of training queries (a query log)
    train_targets
        .npy int matrix (queries x t): the item ids each training query should reach (its clicks, say); default:
        its target-k exact neighbours
    key
        dataset to read from an .hdf5 file
    task
        vectors: a nearest-neighbour index of vectors; labels: a label index from an XC file (auto: from the
        file's header)
    labels
        the XC split format's labels file (VECTORS is then the features file)
    sample
        out-of-core build: learn from this many sampled items and stream the file into the index in bounded
        memory
    ray_address
        train the repetitions as Ray tasks on this cluster ('auto': the one `ray start` made)
    workers
        parallel Ray tasks (default: the cluster's CPUs)
    threads
        threads for the build (default: all cores)
    quiet
        no progress bars
    """
    from ..index.index import Index
    from ..labels.xcformat import looks_like_xc

    if Path(output).exists() and not force:  # a build takes minutes; replacing an index in use costs more
        raise InvalidInputError(f"{output} exists; pass --force to replace it")
    if task == "labels" or (task == "auto" and (labels or looks_like_xc(vectors))):
        return _build_labels(vectors, labels, output, overrides(config, sets, labels=True), quiet)
    kw = overrides(config, sets)
    executor = None
    if ray_address:  # only now is anything Ray-related imported
        from ..distributed.executor import RayExecutor

        executor = RayExecutor(address=ray_address, workers=workers)
    bars = Bars(not quiet)
    t = time.perf_counter()
    try:
        if sample is not None:  # out of core: stream the file into the index directory
            from ..index.build import build as streamed

            if train_queries or train_targets:
                raise InvalidInputError("--sample (out-of-core) builds learn from the items; drop --train-queries")
            index = streamed(vectors, output, preset=preset, metric=metric, sample=sample, callback=bars,
                             executor=executor, **kw)
        else:
            x = read(vectors, key)
            tq = read(train_queries, "train") if train_queries else None
            tt = np.load(train_targets, allow_pickle=False) if train_targets else None
            index = Index(preset, metric=metric, **kw).fit(x, train_queries=tq, callback=bars, executor=executor,
                                                           threads=threads, train_targets=tt)
    finally:
        bars.close()
    built = time.perf_counter() - t
    if sample is None:
        index.save(output)
    print(f"built {index!r} in {built:.1f} s -> {output}")
    return 0


def _build_labels(vectors: str, labels: str | None, output: str, kw: dict, quiet: bool) -> int:
    from ..labels.index import LabelIndex

    x, y = read_xc(vectors, labels)
    bars = Bars(not quiet)
    t = time.perf_counter()
    try:
        index = LabelIndex(**kw).fit(x, y, callback=bars)
    finally:
        bars.close()
    built = time.perf_counter() - t
    index.save(output)
    cfg = index.fitted_config_
    print(f"built LabelIndex({index.n_labels:,} labels, {x.shape[1]:,} features, R={cfg.n_reps}, "
          f"B={cfg.n_buckets}) on {x.shape[0]:,} points in {built:.1f} s -> {output}")
    return 0


def _writable(path: str):
    """The vector index at `path`, to change and save back, and the
    directory's writer lock (held until the command ends)."""
    from ..index.index import Index
    from ..io.locks import WriterLock
    from ..loader import load

    index = load(path)
    if not isinstance(index, Index):
        raise InvalidInputError(f"{path}: a {type(index).__name__}; add, remove and compact change a vector "
                                "index of one directory")
    return index, WriterLock(path, wait_s=2.0, holder="the irli command")


def add(index: str, vectors: str, /, *, ids: Ids = None, replace: Flag = False, key: Name = "train",
        threads: Threads = None) -> int:
    """Add vectors to an index directory (saved in place).

    The vectors of VECTORS go into INDEX, which is saved atomically under its writer lock. New items get the
    next free ids unless --ids.

    Parameters
    ----------
    index
        index directory
    vectors
        vectors file (.npy, .fvecs, .hdf5: --key)
    ids
        their ids: a .npy of integers, or 3,17,42
    replace
        replace items whose id is already in the index
    key
        dataset to read from an .hdf5 file
    threads
        threads (default: all cores)
    """
    target, lock = _writable(index)
    with lock, lock.saving():
        x = read(vectors, key)
        given = read_ids(ids, "--ids") if ids else None
        first = target.next_id_
        target.add(x, ids=given, replace=replace, threads=threads, save_to=index)
    got = given if given is not None else np.arange(first, first + x.shape[0])
    print(f"added {x.shape[0]:,} items (ids {int(got.min())} .. {int(got.max())}); {len(target):,} in {index}")
    return 0


def remove(index: str, ids: str, /, *, missing_ok: Flag = False) -> int:
    """Remove items from an index directory by id (saved in place).

    Parameters
    ----------
    index
        index directory
    ids
        ids to remove: a .npy of integers, or 3,17,42
    missing_ok
        skip ids that are not in the index
    """
    target, lock = _writable(index)
    with lock, lock.saving():
        n = target.remove(read_ids(ids, "ids"), missing="ignore" if missing_ok else "raise", save_to=index)
    print(f"removed {n:,} items; {len(target):,} in {index} ({target.n_removed:,} slots to compact)")
    return 0


def compact(index: str, /) -> int:
    """Reclaim the slots of removed items (saved in place).

    Parameters
    ----------
    index
        index directory
    """
    target, lock = _writable(index)
    with lock, lock.saving():
        n = target.compact(save_to=index)
    print(f"reclaimed {n:,} slots; {len(target):,} items in {index}")
    return 0


def shard(index: str, output: str, /, *, shards: Positive,
          assignment: Literal["locality", "modulo"] = "locality", no_verify: Flag = False) -> int:
    """Write an index as S self-contained parts.

    INDEX is written as a sharded index at OUTPUT (a directory or an fsspec URL): S part directories, each
    with only its buckets' items, plus the routers and the bucket -> part table. Serve or search it with Ray,
    one actor per part.

    Parameters
    ----------
    index
        index directory to split
    output
        sharded index directory (or fsspec URL) to write
    shards
        parts to write
    assignment
        buckets to parts by locality (few parts per query) or by bucket mod S
    no_verify
        skip checksum verification of INDEX
    """
    from ..index.index import Index

    source = Index.load(index, verify=not no_verify)
    out = source.save(output, shards=shards, assignment=assignment)
    print(f"wrote {out}: {shards} parts, buckets by {assignment}")
    return 0
