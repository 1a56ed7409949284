"""Out-of-core builds: index a collection larger than memory into an index
directory, in bounded memory.

    index = irli.build("items.npy", "items.index", preset="fast", sample=1_000_000)

1. Partitions and routers are learned on a seeded sample of `sample` items
   (k-means, router training and the PQ codebooks see only the sample), with
   the bucket count of the whole collection.
2. One streamed pass over the items, `batch` rows at a time, places every
   item by the rule `Index.add` uses (routers, the load rule against running
   loads, SOAR spill), encodes its PQ codes and appends its vector
   (normalised for cosine) to the index's vectors file.
3. The inverted lists are built from the assignments (R x copies x N int32)
   and everything is written into the directory atomically; the returned
   index memory-maps the vectors for the exact re-rank.

Memory holds the sample and its training state (freed before the pass),
the assignments, the lists and one copy of the PQ codes, in their scan
layout; never the vectors: the vectors and the codes are streamed into
their files, and pages of the mapped files are released after each batch.
The finished files are moved into the directory and the returned index
maps them. The staging files are reserved on disk at their full size
before they are written (a full disk is a SaveError naming the path, not a
SIGBUS) and locked while the build runs; a later build or save to the same
path deletes those of a build that died. The input file's size is checked
before every read of it: one that shrinks during the build is an error
naming it (reading a truncated memory map would end the process). Items
keep their input
order on disk (a streamed build cannot regroup them by bucket without a
second pass), so the `fast` preset, which reads vectors only to re-rank a few
candidates, is the natural choice for such collections.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..config import IndexConfig
from ..errors import InvalidInputError, IrliError
from ..io.locks import preallocate, remove_abandoned, save_error, stage_file
from ..io.storage import (
    release,
    write_index,
)
from ..model.partition import InvertedLists
from ..model.repetitions import place
from ..progress import Callback, report
from ..validation import (
    as_ids,
    as_matrix,
    first_duplicate,
    positive_int,
)
from .codes import PQ4Codes
from .index import Index
from .updates import sample_rows


def _backing(x: np.ndarray) -> tuple[str, int] | None:
    """(the file under the memory map `x` views, the bytes that map needs),
    or None for an array in memory."""
    base = x
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap) and getattr(base, "filename", None):
            return base.filename, int(base.offset) + int(base.nbytes)
        base = base.base
    return None


def check_source(x: np.ndarray) -> None:
    """Raise InvalidInputError if the file under the memory map `x` has
    shrunk below what the map needs (reading past its end would end the
    process with SIGBUS)."""
    backing = _backing(x)
    if backing is None:
        return
    name, need = backing
    try:
        size = os.stat(name).st_size
    except OSError as e:
        raise InvalidInputError(f"{name}: the input file went away during the build ({e.strerror})") from None
    if size < need:
        raise InvalidInputError(f"{name}: the input file shrank to {size:,} bytes during the build (it held "
                                f"{need:,}); nothing was written")


def _rows(x: np.ndarray, s: int, e: int) -> np.ndarray:
    """Rows s .. e - 1 of `x` as float32 (e - s, d), the input file's size
    checked first; NaN or inf is an error naming the row of the file."""
    check_source(x)
    xb = as_matrix(np.ascontiguousarray(x[s:e]), "vectors", finite=False)
    finite = np.isfinite(xb).all(axis=1)
    if not finite.all():
        raise InvalidInputError(f"vectors hold NaN or inf (first in row {s + int(np.argmin(finite))})")
    return xb


def _gather(x: np.ndarray, rows: np.ndarray, batch: int) -> np.ndarray:
    """x[rows] as float32 for sorted row numbers `rows`, read `batch` rows
    of the file at a time with the mapped pages released after each: a
    sample spread over the whole file would otherwise leave most of its
    pages resident. NaN or inf is an error naming the row of the file."""
    out = np.empty((rows.size, x.shape[1]), dtype=np.float32)
    at = 0
    for s in range(0, x.shape[0], batch):
        stop = int(np.searchsorted(rows, s + batch))
        if stop > at:
            check_source(x)
            part = as_matrix(x[rows[at:stop]], "vectors", finite=False)
            finite = np.isfinite(part).all(axis=1)
            if not finite.all():
                raise InvalidInputError(f"vectors hold NaN or inf (first in row {int(rows[at + np.argmin(finite)])})")
            out[at:stop] = part
            at = stop
        release(x)
    return out


def _source(vectors) -> np.ndarray:
    if isinstance(vectors, (str, os.PathLike)):
        from ..io.datasets import read_vectors

        return read_vectors(vectors, mmap=True)
    x = np.asarray(vectors)  # a memory map passes through as a view of its file
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidInputError(f"vectors must be a non-empty (n, d) matrix, got shape {x.shape}")
    return x


def build(vectors, path: str | os.PathLike, preset: str = "fast", metric: str = "cosine", ids=None,
          sample: int = 1_000_000, batch: int = 1 << 18, callback: Callback = None,
          executor=None, **overrides) -> Index:
    """Index `vectors` (a path to .npy/.fvecs/.hdf5, or an (N, d) array, typically
    memory-mapped) into the directory `path` without loading them; returns
    the index, memory-mapped. `ids`: int64 (N,) user ids (default 0..N-1).
    `sample`: items that partitions and routers learn from; `batch`: rows
    per streamed step. `executor` (irli.distributed.RayExecutor): the
    streamed pass runs as parallel Ray tasks over row ranges of the file
    (each task writes its rows of the vectors file, which must be on a file
    system the tasks share; codes and assignments merge in row order). With
    re-partitioning presets each range counts loads from zero, so the load
    cap holds per range and thus overall. Other keywords override the preset
    (IndexConfig)."""
    t0 = time.perf_counter()
    x = _source(vectors)
    n, d = x.shape
    sample = positive_int(sample, "sample")
    batch = positive_int(batch, "batch")
    uid = np.arange(n, dtype=np.int64) if ids is None else as_ids(ids, n)
    if ids is not None and first_duplicate(uid) is not None:
        raise InvalidInputError(f"ids repeat id {first_duplicate(uid)}; ids must be unique")
    cfg = IndexConfig.from_preset(preset, metric=metric, **overrides)
    b = cfg.buckets_for(n)
    cfg = cfg.replace(n_buckets=b)
    rows = sample_rows(n, max(sample, b), cfg.seed)
    dest = Path(path)
    remove_abandoned(dest)  # what builds of this path that died left behind
    report(callback, "sample", 0, 1)
    xs = _gather(x, rows, batch)
    learned = Index.from_config(cfg, preset=preset).fit(xs, ids=uid[rows], callback=callback)
    del xs

    encoder = learned.codes_.encoder() if learned.codes_ is not None else None
    routers, centroids, learned_history = learned.routers_, learned.centroids_, learned.history_
    budget = learned.budget_  # fitted on the sample's partition
    del learned  # the sample's index: its vectors and codes are not needed any more
    index = vec = None
    staged, hold = stage_file(dest, "vectors")
    staged_codes, hold_codes = stage_file(dest, "pq_codes")
    try:
        try:
            _reserve(staged, hold, np.float32, (n, d), dest)
            if encoder is not None:  # codes go to their file as they are made, like the vectors
                cc = cfg.copies if encoder.residual else 1
                _reserve(staged_codes, hold_codes, np.uint8, (cfg.n_reps, cc, n, (encoder.n_sub + 1) // 2), dest)
        except OSError as e:
            raise e if isinstance(e, IrliError) else save_error(dest, e) from None
        if executor is None:
            assign, sqnorms, codes = _stream(x, 0, n, staged, cfg, routers, centroids, encoder, batch, callback,
                                             staged_codes=staged_codes if encoder is not None else None)
        else:  # row ranges (whole batches) as parallel Ray tasks; codes merged in range order
            if not isinstance(vectors, (str, os.PathLike)):
                raise InvalidInputError("a build on Ray reads the vectors from a file: pass its path")
            spans = [(s, min(n, s + step)) for step in [batch * max(1, -(-n // batch) // executor.n_workers())]
                     for s in range(0, n, step)]
            parts = executor.map(_stream_task, spans, path=str(vectors), staged=str(staged), cfg=cfg,
                                 routers=routers, centroids=centroids, encoder=encoder, batch=batch)
            assign = np.concatenate([p[0] for p in parts], axis=2)
            sqnorms = np.concatenate([p[1] for p in parts]) if cfg.metric_type.l2 else None
            if encoder is not None:
                out = np.load(staged_codes, mmap_mode="r+")
                for at, p in zip(np.cumsum([0] + [q[2].shape[2] for q in parts[:-1]]), parts):
                    out[:, :, at : at + p[2].shape[2]] = p[2]
                out.flush()
                del out, parts
        report(callback, "lists", 0, 1)
        lists = InvertedLists.from_assignments(assign, b)
        report(callback, "lists", 1, 1)
        codes = None
        if encoder is not None:  # the scan layout is the one copy of the codes held in memory
            flat = np.load(staged_codes, mmap_mode="r")
            codes = encoder.extended(flat, lists, assign)
            release(flat)
        vec = np.load(staged, mmap_mode="r")
        history = {**learned_history, "fit_seconds": time.perf_counter() - t0, "sample": int(rows.size),
                   "out_of_core": True}
        index = Index.from_arrays(cfg, preset, vec, uid, assign, centroids, lists, routers, codes, history,
                                  sqnorms=sqnorms, budget=budget)
        report(callback, "write", 0, 1)
        # the staged files are moved in; the index's maps of them stay valid
        moved = {"vectors": staged, **({"pq_codes": staged_codes} if codes is not None else {})}
        arrays, weights, manifest = index.to_arrays()
        write_index(dest, {k: v for k, v in arrays.items() if k not in moved}, weights, manifest, staged=moved)
        report(callback, "write", 1, 1)
    finally:
        for f in (staged, staged_codes):
            if f.exists():
                f.unlink()
        os.close(hold)
        os.close(hold_codes)
    return index


def _reserve(f: Path, fd: int, dtype, shape: tuple, dest: Path) -> None:
    """Make the staging file `f` (open as `fd`) a .npy of `shape` whose
    bytes are reserved on disk."""
    np.lib.format.open_memmap(f, mode="w+", dtype=dtype, shape=shape).flush()  # header and size (sparse)
    preallocate(fd, os.fstat(fd).st_size, dest)


def _stream(x, start: int, stop: int, staged, cfg: IndexConfig, routers, centroids, encoder: PQ4Codes | None,
            batch: int, callback: Callback = None, staged_codes=None
            ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Place, encode and store rows start .. stop - 1 of `x`, `batch` at a
    time: writes their vectors into the .npy file `staged` (opened in place)
    and encodes their PQ codes with `encoder` (when the index has codes).
    Returns (assignments int32 (R, c, stop - start), squared norms float32 or
    None, codes uint8 (R, c', stop - start, nb) or None)."""
    b = centroids.shape[1]
    out = np.load(staged, mmap_mode="r+")
    assign = np.empty((cfg.n_reps, cfg.copies, stop - start), dtype=np.int32)
    loads = np.zeros((cfg.n_reps, b), dtype=np.int64)
    sqnorms = np.empty(stop - start, dtype=np.float32) if cfg.metric_type.l2 else None
    codes = np.load(staged_codes, mmap_mode="r+") if staged_codes is not None else None
    for s in range(start, stop, batch):
        e = min(stop, s + batch)
        xb = _rows(x, s, e)
        release(x)
        xb = cfg.metric_type.prepare_items(xb, f"vectors (rows {s}..{e - 1})")
        where = place(xb, routers, cfg, loads, centroids, seed=cfg.seed + s)
        assign[:, :, s - start : e - start] = where
        for r in range(cfg.n_reps):
            loads[r] += np.bincount(where[r, 0], minlength=b)
        if encoder is not None:
            part = encoder.encode(xb, where)
            if codes is None:
                codes = np.empty(part.shape[:2] + (stop - start, part.shape[3]), dtype=np.uint8)
            codes[:, :, s - start : e - start] = part
            if staged_codes is not None:
                codes.flush()
                release(codes)
        out[s:e] = xb
        if sqnorms is not None:
            sqnorms[s - start : e - start] = np.einsum("ij,ij->i", xb, xb)
        out.flush()
        release(out)
        report(callback, "assign", e, stop)
    del out
    if staged_codes is not None:
        del codes
        return assign, sqnorms, None
    return assign, sqnorms, codes


def _stream_task(span, path, staged, cfg, routers, centroids, encoder, batch):
    """Ray task: `_stream` over one row range of the file at `path`."""
    from ..io.datasets import read_vectors

    return _stream(read_vectors(path, mmap=True), span[0], span[1], staged, cfg, routers, centroids, encoder, batch)
