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

Memory holds the sample and its training state, the assignments, the lists
and the PQ codes (d/2 bytes per item and copy), never the vectors: pages of
the mapped input are released after each batch. Items keep their input
order on disk (a streamed build cannot regroup them by bucket without a
second pass), so the `fast` preset, which reads vectors only to re-rank a few
candidates, is the natural choice for such collections.
"""

from __future__ import annotations

import mmap
import os
import time
import uuid
from pathlib import Path

import numpy as np

from .codes import PQ4Codes, encode_into
from .config import IndexConfig
from .errors import InvalidInputError
from .idmap import as_ids, first_duplicate
from .index import Index
from .partition import InvertedLists
from .progress import Callback, report
from .updates import place, sample_rows
from .validation import as_matrix, normalize_rows, positive_int


def release(x: np.ndarray) -> None:
    """Drop the resident pages of the file mapping under `x` (a memory map or
    a view of one) from this process; later reads fault them back in from
    the page cache. A no-op for arrays in memory."""
    base = x
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "_mmap", None) if isinstance(base, np.memmap) and base._mmap is not None \
            else getattr(base, "base", None)
    if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        try:
            base.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # pragma: no cover - platform dependent
            pass


def _source(vectors) -> np.ndarray:
    if isinstance(vectors, (str, os.PathLike)):
        from .datasets import read_vectors

        return read_vectors(vectors, mmap=True)
    x = np.asarray(vectors) if not isinstance(vectors, np.ndarray) else vectors
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidInputError(f"vectors must be a non-empty (n, d) matrix, got shape {x.shape}")
    return x


def build(vectors, path: str | os.PathLike, preset: str = "fast", metric: str = "cosine", ids=None,
          sample: int = 1_000_000, batch: int = 1 << 18, callback: Callback = None,
          **overrides) -> Index:
    """Index `vectors` (a path to .npy/.fvecs/.hdf5, or an (N, d) array, typically
    memory-mapped) into the directory `path` without loading them; returns
    the index, memory-mapped. `ids`: int64 (N,) user ids (default 0..N-1).
    `sample`: items that partitions and routers learn from; `batch`: rows
    per streamed step. Other keywords override the preset (IndexConfig)."""
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
    report(callback, "sample", 0, 1)
    xs = as_matrix(np.ascontiguousarray(x[rows]), "vectors")
    release(x)
    learned = Index.from_config(cfg, preset=preset).fit(xs, ids=uid[rows], callback=callback)
    del xs

    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = dest.parent / f".{dest.name}.vectors-{uuid.uuid4().hex[:12]}.npy"
    try:
        out = np.lib.format.open_memmap(staged, mode="w+", dtype=np.float32, shape=(n, d))
        reps, copies = cfg.n_reps, cfg.copies
        assign = np.empty((reps, copies, n), dtype=np.int32)
        loads = np.zeros((reps, b), dtype=np.int64)
        bases = [c.empty_base() for c in learned.codes_]
        sqnorms = np.empty(n, dtype=np.float32) if cfg.metric == "l2" else None
        for s in range(0, n, batch):
            xb = as_matrix(np.ascontiguousarray(x[s : s + batch]), "vectors")
            release(x)
            if cfg.metric == "cosine":
                xb = normalize_rows(xb)
            where = place(xb, learned.routers_, cfg, loads, learned.centres_, seed=cfg.seed + s)
            assign[:, :, s : s + xb.shape[0]] = where
            for r in range(reps):
                loads[r] += np.bincount(where[r, 0], minlength=b)
            for r, base in enumerate(bases):
                encode_into(base, xb, where[r], s)
            out[s : s + xb.shape[0]] = xb
            if sqnorms is not None:
                sqnorms[s : s + xb.shape[0]] = np.einsum("ij,ij->i", xb, xb)
            out.flush()
            release(out)
            report(callback, "assign", min(s + batch, n), n)
        del out
        report(callback, "lists", 0, 1)
        lists = InvertedLists.from_assignments(assign, b)
        report(callback, "lists", 1, 1)
        codes = [PQ4Codes.from_base(base, learned.centres_[r], cfg.metric) for r, base in enumerate(bases)]
        vec = np.load(staged, mmap_mode="r")
        history = {**learned.history_, "fit_seconds": time.perf_counter() - t0, "sample": int(rows.size),
                   "out_of_core": True}
        index = Index.from_config(cfg, preset=preset)
        index._install(vec, uid, assign, learned.centres_, lists, learned.routers_, codes, history,
                       live=None, next_id=int(uid.max()) + 1, sqnorms=sqnorms)
        report(callback, "write", 0, 1)
        index._write(dest, staged={"vectors": staged})
        report(callback, "write", 1, 1)
    finally:
        if staged.exists():
            staged.unlink()
    del index, vec
    return Index.load(dest, mmap=True, verify=False)
