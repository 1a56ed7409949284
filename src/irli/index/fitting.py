"""Fitting a vector index: the input checks, the learning (irli.learn)
and everything built from what it learned (inverted lists, PQ codes, the
probe budget, the drift baseline), as the parts `Index._install` takes.
Nothing is installed here, so a fit that fails leaves the index as it was."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..config import IndexConfig
from ..errors import InvalidInputError
from ..learn.budget import fit_budget
from ..learn.loop import learn
from ..model.partition import InvertedLists
from ..model.repetitions import measure
from ..model.routers import Routing
from ..progress import Callback, report
from ..validation import as_ids, as_matrix, first_duplicate
from .codes import PQ4Codes, default_pq_m
from .idmap import IdMap
from .updates import sample_rows


def target_positions(train_targets, uid: np.ndarray, n_queries: int | None) -> np.ndarray:
    """`train_targets` (m, t) item ids, checked, as positions int64 (m, t)
    into the ids `uid` (N,)."""
    if n_queries is None:
        raise InvalidInputError("train_targets needs train_queries: one row of target ids per training query")
    a = np.asarray(train_targets)
    if a.ndim != 2 or a.shape[1] == 0:
        raise InvalidInputError(f"train_targets must be an (m, t) matrix of item ids, got shape {a.shape}")
    if a.shape[0] != n_queries:
        raise InvalidInputError(f"train_targets has {a.shape[0]} rows for {n_queries} train_queries")
    flat = as_ids(a.ravel(), name="train_targets")
    pos = IdMap(uid, np.arange(uid.size, dtype=np.int64)).find(flat)
    if (pos < 0).any():
        raise InvalidInputError(f"train_targets holds id {int(flat[pos < 0][0])}, which is not among the items' ids")
    return pos.reshape(a.shape)


def fit_parts(cfg: IndexConfig, vectors, ids, train_queries, callback: Callback, executor,
              train_targets=None) -> dict[str, Any]:
    """Check the inputs of `Index.fit` and learn from them: the keyword
    arguments of `Index._install` (vectors float32 (N, d) grouped by
    repetition 0's home bucket, ids int64 (N,), assign int32 (R, c, N),
    centroids, lists, routers, codes, history, live, next_id, budget).
    `train_targets` (m, t) ids: the items each training query should reach."""
    t0 = time.perf_counter()
    x = as_matrix(vectors, "vectors")
    n, d = x.shape
    uid = np.arange(n, dtype=np.int64) if ids is None else as_ids(ids, n)
    dup = first_duplicate(uid)
    if dup is not None:
        raise InvalidInputError(f"ids repeat id {dup}; ids must be unique")
    b = cfg.buckets_for(n)
    if n < 2:
        raise InvalidInputError(f"{n} item is too few: an index needs at least 2 items (2 buckets)")
    if n < b:
        raise InvalidInputError(
            f"{n} items are fewer than n_buckets={b}; pass n_buckets <= {n} or more items"
        )
    if cfg.k_choices > b:
        raise InvalidInputError(f"k_choices={cfg.k_choices} exceeds the {b} buckets")
    tq = None
    if train_queries is not None:
        tq = as_matrix(train_queries, "train_queries", dim=d)
    x = cfg.metric_type.prepare_items(x, "vectors")
    tq = cfg.metric_type.prepare_items(tq, "train_queries") if tq is not None else None
    if cfg.scan == "pq4" and d % (cfg.pq_m or default_pq_m(d)):
        raise InvalidInputError(f"pq_m={cfg.pq_m} must divide the dimension d={d}")
    if train_targets is not None and not cfg.learns:
        raise InvalidInputError("train_targets train a router: they need router='linear' or 'mlp' and epochs >= 1")
    targets = None if train_targets is None else target_positions(train_targets, uid, None if tq is None
                                                                  else tq.shape[0])
    result = learn(x, cfg, b, tq, callback, executor=executor, train_targets=targets)
    perm = np.argsort(result.assign[0, 0], kind="stable")  # group by home bucket of rep 0
    vectors_ = np.ascontiguousarray(x[perm])
    assign_ = np.ascontiguousarray(result.assign[:, :, perm])
    report(callback, "lists", 0, 1)
    lists_ = InvertedLists.from_assignments(assign_, b)
    report(callback, "lists", 1, 1)
    codes_ = None
    if cfg.scan == "pq4":
        report(callback, "codes", 0, 1)
        codes_ = PQ4Codes.build(vectors_, assign_, result.centroids, cfg.metric, cfg.pq_m,
                                residual=cfg.pq_residual, seed=cfg.seed, queries=tq, lists=lists_,
                                anisotropic=cfg.pq_anisotropic)
        report(callback, "codes", 1, 1)
    budget_ = None
    if cfg.learned_probes:
        report(callback, "budget", 0, 1)
        budget_ = fit_budget(vectors_, assign_[0], lists_.offsets[0], lists_.lists[0],
                             Routing.from_routers(result.routers), cfg.metric, cfg.seed, queries=tq)
        report(callback, "budget", 1, 1)
    rows = sample_rows(n, 20_000, cfg.seed)
    moved, imbalance, _ = measure(vectors_[rows], assign_[:, 0, rows], assign_[:, 0], result.routers, cfg, b)
    history = {"rounds": result.history, "fit_seconds": time.perf_counter() - t0,
               "drift_at_fit": {"moved": float(np.mean(moved)), "imbalance": imbalance},
               "added": 0, "removed": 0}
    return {"vectors": vectors_, "ids": uid[perm], "assign": assign_, "centroids": result.centroids, "lists": lists_,
            "routers": result.routers, "codes": codes_, "history": history, "live": None,
            "next_id": int(uid.max()) + 1, "budget": budget_}
