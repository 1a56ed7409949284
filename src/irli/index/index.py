"""Index: fit / search / save / load. It checks input and orchestrates the
other modules (training, partition, search, storage); the math lives there."""

from __future__ import annotations

import copy
import functools
import os
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..learn.budget import FIXED, ProbeBudget, fit_budget
from .codes import PQ4Codes, default_pq_m
from ..config import IndexConfig
from ..errors import IndexFormatError, InvalidInputError, NotFittedError
from ..params import SearchParams
from ..kernels.exact import exact_knn
from .filters import Allowed, parse_allow
from .idmap import IdMap
from ..model.partition import InvertedLists
from ..kernels.pq_scan import pq_block
from ..progress import Callback, report
from ..result import SearchResult
from ..model.routers import Router, Routing
from ..kernels.scoring import prepare, query_error
from ..kernels.exact_scan import exact_block, marks, outputs, scan, scanned, subset
from ..io.storage import check_vector_index, read_index, router_states, write_index
from ..threads import limit, resolve, run_blocks
from ..learn.loop import learn
from .updates import Drift, grow, measure, place, sample_rows
from ..validation import as_ids, as_matrix, check_norms, first_duplicate, normalize_rows, positive_int
from ..version import __version__

_LOCKS = threading.Lock()


def _exclusive(method):
    """Run a method that changes (or saves) the index under its update
    lock: such calls from several threads run one at a time, each on the
    state the previous one left. Searches never wait for it: they read the
    published snapshot (see Index._publish)."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


def _read_only(a):
    """A read-only view of an array (anything else as it is). The search
    kernels take the index's arrays read-only whether they are memory maps
    of a loaded index, arrays of a fitted one or buffers grown by `add`, so
    one compiled version of each kernel serves them all."""
    if isinstance(a, np.ndarray) and a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


class _State(NamedTuple):
    """What a search reads, taken together (see Index._snapshot)."""

    vectors: np.ndarray
    sqnorms: np.ndarray
    ids: np.ndarray
    live: np.ndarray
    keep: np.ndarray
    lists: InvertedLists
    codes: PQ4Codes | None
    routing: Routing
    idmap: IdMap
    copies: int
    n_live: int
    dim: int
    n_buckets: int
    kernel_args: tuple  # the index's arguments of the search kernel (pq_block or exact_block)
    budget: ProbeBudget | None  # the learned probe budget (learned_probes), or None: fixed probes


class Index:
    """A learned index over dense vectors: R repetitions x B buckets x router.

    >>> index = Index(metric="cosine").fit(vectors)      # the "fast" preset
    >>> ids, scores = index.search(queries, k=10)
    >>> Index("irli").fit(vectors)                      # the paper's model

    `preset` is "fast" (the default: k-means buckets, SOAR spill, 4-bit PQ
    scan, exact re-rank), "irli" (IRLI / BLISS), "ivf-ltr" (learned linear
    routing) or "ivf" (see `irli.PRESETS`); any field of `IndexConfig` can
    be overridden by keyword. Learned state lives in
    attributes ending in "_" and exists after `fit` or `load`.
    """

    part_: dict | None = None  # set on a part of a sharded index (read-only)
    budget_ = None  # the learned probe budget (irli.learn.budget.ProbeBudget) with learned_probes

    def __init__(self, preset: str = "fast", metric: str = "cosine", **overrides: Any) -> None:
        self.config = IndexConfig.from_preset(preset, metric=metric, **overrides)
        self.preset = preset
        self.vectors_: np.ndarray | None = None

    @classmethod
    def from_config(cls, config: IndexConfig, preset: str = "custom") -> "Index":
        """An unfitted index with exactly `config`."""
        self = cls.__new__(cls)
        self.config, self.preset, self.vectors_ = config, preset, None
        return self

    # -- fitting ------------------------------------------------------------------
    @_exclusive
    def fit(self, vectors, ids=None, train_queries=None, callback: Callback = None,
            executor=None, threads: int | None = None) -> "Index":
        """Learn partitions and routers for `vectors` (n, d) and store them.

        `ids`: int64 (n,) user ids, unique and >= 0 (default 0 .. n-1); search
        results return them. Training queries default to `n_train` items
        sampled from `vectors` (their targets are their exact neighbours
        other than themselves); pass `train_queries` (m, d) to learn from a
        query log instead. `callback` receives `irli.progress.Progress`
        reports. `executor` (irli.distributed.RayExecutor) trains groups of
        repetitions as parallel Ray tasks. `threads` pins BLAS, FAISS, numba
        and torch for the fit (None: all cores, see irli.threads). Replaces
        anything stored before; returns self.
        """
        with limit(threads):
            return self._fit(vectors, ids, train_queries, callback, executor)

    def _fit(self, vectors, ids, train_queries, callback, executor) -> "Index":
        cfg = self.config
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
        if cfg.metric == "cosine":
            x = normalize_rows(x)
            tq = normalize_rows(tq) if tq is not None else None
        else:
            check_norms(x, "vectors")
            if tq is not None:
                check_norms(tq, "train_queries")
        if cfg.scan == "pq4" and d % (cfg.pq_m or default_pq_m(d)):
            raise InvalidInputError(f"pq_m={cfg.pq_m} must divide the dimension d={d}")
        result = learn(x, cfg, b, tq, callback, executor=executor)
        # everything is built into locals and installed at the end, so a fit
        # (or refresh) that fails leaves the index as it was
        perm = np.argsort(result.assign[0, 0], kind="stable")  # group by home bucket of rep 0
        vectors_ = np.ascontiguousarray(x[perm])
        assign_ = np.ascontiguousarray(result.assign[:, :, perm])
        report(callback, "lists", 0, 1)
        lists_ = InvertedLists.from_assignments(assign_, b)
        report(callback, "lists", 1, 1)
        codes_ = None
        if cfg.scan == "pq4":
            report(callback, "codes", 0, 1)
            codes_ = PQ4Codes.build(vectors_, assign_, result.centres, cfg.metric, cfg.pq_m,
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
        self._install(vectors_, uid[perm], assign_, result.centres, lists_, result.routers, codes_,
                      history, live=None, next_id=int(uid.max()) + 1, budget=budget_)
        return self

    @classmethod
    def from_arrays(cls, config: IndexConfig, preset: str, vectors: np.ndarray, ids: np.ndarray,
                    assign: np.ndarray, centres: np.ndarray, lists: InvertedLists, routers: list[Router],
                    codes: PQ4Codes | None, history: dict, live: np.ndarray | None = None,
                    next_id: int | None = None, sqnorms: np.ndarray | None = None,
                    budget: ProbeBudget | None = None) -> "Index":
        """A fitted index from its parts (what `fit` learns and `load` and
        `irli.build` read): vectors float32 (N, d) by position, ids int64
        (N,), assign int32 (R, c, N), centres float32 (R, B, d), lists over
        the positions, one router per repetition, PQ codes (scan="pq4"),
        history, live bool (N,) (None: all), the next free id, sqnorms (l2),
        the learned probe budget (learned_probes)."""
        self = cls.from_config(config, preset=preset)
        if next_id is None:
            next_id = int(ids.max()) + 1 if ids.size else 0
        self._install(vectors, ids, assign, centres, lists, routers, codes, history, live, next_id, sqnorms,
                      budget)
        return self

    def _install(self, vectors, ids, assign, centres, lists, routers, codes, history, live,
                 next_id, sqnorms=None, budget=None, save_to=None) -> None:
        """Set the learned state in one step (see fit, from_arrays and
        compact); with `save_to`, saved there first (see `_commit`)."""
        live = np.ones(ids.shape[0], dtype=bool) if live is None else live
        alive = np.flatnonzero(live)
        self._commit({
            "vectors_": vectors, "ids_": ids, "assign_": assign, "centres_": centres, "lists_": lists,
            "routers_": routers, "codes_": codes, "history_": history, "routing_": Routing.from_routers(routers),
            "live_": live, "sqnorms_": self._sqnorms(vectors) if sqnorms is None else sqnorms,
            "idmap_": IdMap(ids[alive], alive.astype(np.int64)), "next_id_": int(next_id), "budget_": budget,
            "part_": None}, save_to, fresh=True)

    def _commit(self, changes: dict[str, Any], save_to=None, fresh: bool = False) -> None:
        """Apply `changes` (new values of learned attributes) in one step
        and publish them to searches. With `save_to`, the index as changed
        is first saved to that directory (atomically): if the save fails,
        nothing changes and the error (irli.errors.SaveError) propagates,
        so a change is never served that was not saved. `fresh`: the
        arrays are new (no growth buffers of earlier adds apply)."""
        if save_to is not None:
            changed = copy.copy(self)  # shares the arrays; __getstate__ leaves out the lock and the snapshot
            changed.__dict__.update(changes)
            write_index(save_to, *changed.to_arrays())
        with self._lock:
            self.__dict__.update(changes)
            if fresh:
                self.__dict__.pop("_buffers", None)
            self._publish()

    def _sqnorms(self, x: np.ndarray) -> np.ndarray:
        if self.config.metric != "l2":
            return np.zeros(0, dtype=np.float32)
        return np.einsum("ij,ij->i", x, x).astype(np.float32)

    # -- facts ---------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.vectors_ is not None

    def check_fitted(self) -> None:
        """Raise NotFittedError unless the index is fitted or loaded."""
        if not self.is_fitted:
            raise NotFittedError("this Index is not fitted yet; call fit(vectors) or irli.load(path) first")

    def check_writable(self) -> None:
        """Raise unless items can be added or removed (fitted, not a part
        of a sharded index)."""
        self.check_fitted()
        if self.part_ is not None:
            raise InvalidInputError(f"this index is part {self.part_.get('shard')} of a sharded index and "
                                    "read-only; change the whole index and shard it again")

    def __len__(self) -> int:
        """Items searchable now (removed ones excluded)."""
        return 0 if self.vectors_ is None else len(self.idmap_)

    def __contains__(self, item_id) -> bool:
        if self.vectors_ is None or isinstance(item_id, bool):
            return False
        try:
            return bool(self.idmap_.contains(np.array([int(item_id)], dtype=np.int64))[0])
        except (TypeError, ValueError, OverflowError):
            return False

    @property
    def ids(self) -> np.ndarray:
        """The ids of the items in the index, int64 (len(self),), ascending."""
        self.check_fitted()
        return self.idmap_.keys.copy()

    @property
    def n_removed(self) -> int:
        """Removed items whose slots `compact()` would reclaim."""
        return 0 if self.vectors_ is None else int(self.vectors_.shape[0] - len(self.idmap_))

    def get_vectors(self, ids) -> np.ndarray:
        """The stored vectors of `ids` (unit length for cosine), float32 (m, d)."""
        return np.asarray(self.vectors_[self._positions(ids, "ids")])

    def _positions(self, ids, name: str) -> np.ndarray:
        self.check_fitted()
        want = as_ids(ids, name=name)
        pos = self.idmap_.find(want)
        if (pos < 0).any():
            raise InvalidInputError(f"{name}: id {int(want[np.argmax(pos < 0)])} is not in the index")
        return pos

    @property
    def dim(self) -> int:
        self.check_fitted()
        return int(self.vectors_.shape[1])

    @property
    def n_buckets(self) -> int:
        self.check_fitted()
        return self.lists_.n_buckets

    @property
    def n_reps(self) -> int:
        return self.config.n_reps

    def __repr__(self) -> str:
        state = f"{len(self)} items, d={self.dim}, B={self.n_buckets}" if self.is_fitted else "unfitted"
        if self.is_fitted and self.n_removed:
            state += f", {self.n_removed} removed"
        return f"Index(preset={self.preset!r}, metric={self.config.metric!r}, R={self.n_reps}, {state})"

    def assignments(self, spilled: bool = False) -> np.ndarray:
        """Home bucket of each item in each repetition, int32 (R, N), columns
        in the order of `ids` (ascending id); with `spilled`, all its
        buckets, int32 (R, 1 + spill, N)."""
        self.check_fitted()
        out = np.ascontiguousarray(self.assign_[:, :, self.idmap_.pos], dtype=np.int32)
        return out if spilled else out[:, 0]

    # -- searching ---------------------------------------------------------------
    def _raw_queries(self, queries) -> np.ndarray:
        """`queries` as float32 (n, d) C-contiguous, shape and dtype checked
        (values are checked by the search kernels). A float32 (d,) vector
        takes a short path: one query per request is the common case."""
        d = self.vectors_.shape[1]
        if (type(queries) is np.ndarray and queries.dtype == np.float32 and queries.ndim == 1
                and queries.shape[0] == d and queries.flags.c_contiguous):
            return queries.reshape(1, d)
        return as_matrix(queries, "queries", dim=d, allow_1d=True, finite=False)

    def prepare_queries(self, queries) -> np.ndarray:
        """Queries checked and prepared as searches prepare them (unit
        length for cosine): float32 (n, d)."""
        self.check_fitted()
        raw = self._raw_queries(queries)
        q, bad = prepare(raw, self.config.metric == "cosine")
        if bad >= 0:
            raise query_error(raw, bad)
        return q

    def probes_for(self, probes: int | None) -> int:
        """`probes` checked (None: the config's), clamped to B."""
        p = self.config.probes if probes is None else positive_int(probes, "probes")
        return min(p, self.lists_.offsets.shape[1] - 1)

    def route(self, queries, probes: int | None = None) -> np.ndarray:
        """Buckets each repetition would open: int32 (R, n, m), best first."""
        q = self.prepare_queries(queries)
        m = self.probes_for(probes)
        probed = np.empty((self.n_reps, q.shape[0], m), dtype=np.int32)
        run_blocks(lambda lo, hi: self.routing_.block(q, lo, hi, probed, np.empty((self.n_reps, 0, 0), np.float32)),
                   q.shape[0], None)
        return probed

    def search(self, queries, k: int = 10, probes: int | None = None, min_votes: int | None = None,
               top_c: int | None = None, refine: int | None = None, allow=None,
               threads: int | None = None, batch_size: int = 4096) -> SearchResult:
        """Approximate top-`k` items for each query.

        queries: (n, d) or a single (d,) vector (answered as n = 1).
        probes: buckets opened per repetition (default `config.probes`;
        clamped to B). min_votes: keep only candidates seen in at least this
        many repetitions (default `config.min_votes`). top_c: score only the C
        candidates with the highest summed router probability (default
        `config.top_c`, None: all). Survivors are scored exactly. refine
        (scan="pq4" only): re-score the best refine x k distinct items by
        code exactly (default `config.refine`); with refine x k >= the items
        probed the search is exact over the probed buckets.
        allow: return only these ids (see `irli.index.filters` for the forms: ids
        or a boolean mask by id, for all queries or one per query). The
        filter applies before the top-k. A query whose allowed items are
        fewer than the entries a search would read (R x copies x probes x
        N / B), or whose probed buckets hold fewer than k of them, is
        answered by exact search over its allowed items.
        threads: threads for this call (None: irli.get_num_threads(), all
        cores unless set); results are the same for any value. Queries run
        in blocks of at most `batch_size`.
        Returns SearchResult(ids, scores) with `.candidates`; see its doc.
        """
        st = self.__dict__.get("_state") or self._snapshot()
        if (type(queries) is np.ndarray and queries.dtype == np.float32 and queries.ndim == 1
                and queries.shape[0] == st.dim and queries.flags.c_contiguous):
            q = queries.reshape(1, st.dim)  # one query per request: the common case, checked in the kernel
        else:
            q = self._raw_queries(queries)
        k, m, votes, cut, factor = self._params(st, k, probes, min_votes, top_c, refine)
        if batch_size != 4096:
            batch_size = positive_int(batch_size, "batch_size")
        if threads is not None:
            resolve(threads)
        nq = q.shape[0]
        if allow is None:  # the kernels write every entry, padding included
            outs = (np.empty((nq, k), np.int64), np.empty((nq, k), np.float32), np.empty(nq, np.int64),
                    np.empty(nq, np.int64))
            if nq <= 16:  # one query per request (or a few): no pool, no closure
                bad = self._block(st, q, 0, nq, k, m, votes, cut, factor, outs)
                bad = [bad] if bad >= 0 else []
            else:
                bad = []

                def block(lo, hi):
                    row = self._block(st, q, lo, hi, k, m, votes, cut, factor, outs)
                    if row >= 0:
                        bad.append(row)

                run_blocks(block, nq, threads, max_block=batch_size)
            if bad:
                raise query_error(q, min(bad))
            return SearchResult(*outs)
        raw = q
        q, row = prepare(raw, self.config.metric == "cosine")
        if row >= 0:
            raise query_error(raw, row)
        pos, sc, cand, read = self._filtered(st, q, k, m, votes, cut, allow, threads, batch_size)
        ids = np.where(pos >= 0, st.ids[np.maximum(pos, 0)], -1) if st.ids.size else np.full(pos.shape, -1)
        scores = -sc if self.config.metric == "l2" else sc  # negative squared distance -> squared distance
        return SearchResult(ids, scores, cand, read)

    def search_params(self, k=10, probes=None, min_votes=None, top_c=None, refine=None) -> SearchParams:
        """The checked parameters of a search (irli.params: the one rule of
        every index, the service and the CLI)."""
        return self._params(self._snapshot(), k, probes, min_votes, top_c, refine)

    def _params(self, st: "_State", k, probes, min_votes, top_c, refine) -> SearchParams:
        return SearchParams.resolve(self.config, st.vectors.shape[0], st.n_buckets, k, probes, min_votes, top_c,
                                    refine, codes=st.codes is not None)

    def _snapshot(self) -> "_State":
        """The searchable state as one object (see `_publish`): a search
        reads it once, so it never mixes arrays from before and after an
        add, remove or compact running in another thread."""
        self.check_fitted()
        st = self.__dict__.get("_state")
        return st if st is not None else self._publish()

    def _publish(self) -> "_State":
        """Bundle the current arrays into the state searches read; called
        under the update lock at the end of every change."""
        with self._lock:
            keep = self.live_.view(np.uint8) if self.n_removed else np.zeros(0, dtype=np.uint8)
            cosine, l2 = self.config.metric == "cosine", self.config.metric == "l2"
            r = self.routing_
            # the kernels emit ids when given a non-empty id array (positions otherwise): an index
            # with no slots left (all removed, then compacted) passes one unused id
            ids = self.ids_ if self.ids_.shape[0] else np.full(1, -1, dtype=np.int64)
            if self.codes_ is not None:
                args = self.codes_.kernel_args(cosine, r, self.vectors_, self.sqnorms_, keep, ids)
            else:
                args = (cosine, l2, r.a1, r.b1, r.a2, r.b2, self.vectors_, self.sqnorms_, self.lists_.offsets,
                        self.lists_.lists, keep, ids)
            args = tuple(_read_only(a) for a in args)
            st = _State(self.vectors_, self.sqnorms_, self.ids_, self.live_, keep, self.lists_, self.codes_,
                        self.routing_, self.idmap_, self.assign_.shape[1], len(self.idmap_),
                        self.vectors_.shape[1], self.lists_.offsets.shape[1] - 1, args,
                        self.budget_)
            self._state = st
            return st

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_update_lock", None)  # locks do not copy or pickle; a new one comes on first use
        state.pop("_state", None)  # rebuilt from the arrays on first search
        return state

    @property
    def _lock(self) -> threading.RLock:
        lock = self.__dict__.get("_update_lock")
        if lock is None:
            with _LOCKS:
                lock = self.__dict__.setdefault("_update_lock", threading.RLock())
        return lock

    def _block(self, st: "_State", q, lo, hi, k, m, votes, cut, factor, outs) -> int:
        """Raw queries lo .. hi - 1, unfiltered, into rows lo .. hi - 1 of
        outs = (ids, scores, candidates, entries read): one compiled call.
        Returns -1, or the first row holding NaN or inf."""
        if st.codes is not None:  # approximate scan of codes, exact re-rank of the best refine x k distinct
            kk = max(1, min(factor * k, st.n_live))
            if st.budget is None:
                return pq_block(q, lo, hi, m, kk, k, *FIXED, *st.kernel_args, *outs)
            stop_w, first, budget, width = st.budget.args(m, st.n_buckets)
            return pq_block(q, lo, hi, width, kk, k, stop_w, first, budget, *st.kernel_args, *outs)
        # exact scan of the lists; removed items are skipped
        dedup = st.routing.n_reps > 1 or cut is not None or st.copies > 1
        _, mark, cnt, stamp0 = marks(dedup, False, st.vectors.shape[0], hi - lo)
        return exact_block(q, lo, hi, m, k, votes, cut or 0, dedup, mark, cnt, stamp0, *st.kernel_args, *outs)

    def _filtered(self, st: "_State", q, k, m, votes, cut, allow, threads, batch_size):
        """Search prepared queries with allow-lists: an exact scan of the
        probed buckets that skips disallowed items, and exact search over
        the allowed items for queries with tiny allow-lists or too few
        allowed items probed. Returns (positions, scores higher-is-better,
        candidates, entries read)."""
        nq = q.shape[0]
        pos, scores, cand = outputs(nq, k)
        read = np.zeros(nq, dtype=np.int64)
        l2 = self.config.metric == "l2"
        allowed = parse_allow(allow, nq, st.idmap, st.ids, st.live)
        counts = allowed.counts(nq)
        bucketed = np.flatnonzero(counts > self._exact_below(st, m))  # tiny allow-lists: exact search over them
        for s in range(0, bucketed.shape[0], batch_size):
            rows = bucketed[s : s + batch_size]
            sub = allowed.rows(rows)
            qr = q[rows]
            probed, probs = self._route(st, qr, m, cut is not None, threads)
            keep = allow_pairs = None
            if sub.per_query:
                allow_pairs = (sub.ptr, sub.pos)
            else:
                keep = sub.keep
            p, sc, c = scan(qr, st.vectors, st.sqnorms, st.lists.offsets, st.lists.lists, probed, probs, k,
                            votes, cut or 0, l2, copies=st.copies, keep=keep, allow=allow_pairs, threads=threads)
            pos[rows], scores[rows], cand[rows], read[rows] = p, sc, c, scanned(st.lists.offsets, probed)
        found = (pos >= 0).sum(axis=1)
        exact = np.flatnonzero(found < np.minimum(k, counts))  # the small and the short
        if exact.size:
            pos[exact], scores[exact], cand[exact] = self._exact_allowed(st, q[exact], k, allowed.rows(exact),
                                                                         threads)
            read[exact] = cand[exact]
        return pos, scores, cand, read

    @staticmethod
    def _route(st: "_State", q, m, with_probs: bool, threads) -> tuple[np.ndarray, np.ndarray]:
        reps = st.routing.a1.shape[0]
        probed = np.empty((reps, q.shape[0], m), dtype=np.int32)
        probs = np.empty((reps, q.shape[0], m) if with_probs else (reps, 0, 0), dtype=np.float32)
        run_blocks(lambda lo, hi: st.routing.block(q, lo, hi, probed, probs), q.shape[0], threads)
        return probed, probs

    @staticmethod
    def _exact_below(st: "_State", probes: int) -> float:
        """Entries a search of the state `st` reads per query, on average:
        allow-lists up to this size are searched exactly (it costs no more)."""
        return st.copies * st.routing.n_reps * probes * st.n_live / st.n_buckets

    def _exact_allowed(self, st: "_State", q, k, allowed: Allowed, threads=None):
        """Exact top-k of each query among its allowed items: (positions,
        scores higher-is-better, candidates)."""
        l2 = self.config.metric == "l2"
        if allowed.per_query:
            return subset(q, st.vectors, st.sqnorms, allowed.ptr, allowed.pos, k, l2, threads=threads)[:3]
        p = allowed.positions
        nq = q.shape[0]
        if p.size == 0:
            return (np.full((nq, k), -1, np.int64), np.full((nq, k), -np.inf, np.float32),
                    np.zeros(nq, np.int64))
        idx, d = exact_knn(np.asarray(st.vectors[p]), q, k, "l2" if l2 else "ip")
        pos = np.where(idx >= 0, p[np.maximum(idx, 0)], -1)
        return pos, (-d if l2 else d), np.full(nq, p.size, dtype=np.int64)

    # -- changing the items ----------------------------------------------------------
    @_exclusive
    def add(self, vectors, ids=None, replace: bool = False, callback: Callback = None,
            threads: int | None = None, save_to: str | os.PathLike | None = None) -> "Index":
        """Add items without retraining: each goes to the bucket(s) its
        router picks in every repetition, under the same load rule as the
        partition (see `irli.index.updates`). Storage grows as needed.

        vectors: (n, d). ids: int64 (n,), unique, >= 0; default next_id_ ..
        next_id_ + n - 1 (one past the largest id ever stored). An id that is
        already in the index is an error, unless `replace`, which removes the
        old item first. `threads` pins the libraries for the call (see
        irli.threads). Searches in other threads may run meanwhile: each sees
        the index as it was before the add or after it. With `save_to` (a
        directory), the changed index is saved there before the change is
        applied; a failed save (irli.errors.SaveError) changes nothing.
        Returns self.
        """
        with limit(threads):
            return self._add(vectors, ids, replace, callback, save_to)

    def _add(self, vectors, ids, replace, callback, save_to) -> "Index":
        self.check_writable()
        # everything is checked and computed first, then applied in one step
        # under the lock: a failed add leaves the index as it was
        cfg = self.config
        x = as_matrix(vectors, "vectors", dim=self.dim)
        n = x.shape[0]
        if ids is None:
            if self.next_id_ > np.iinfo(np.int64).max - n + 1:
                raise InvalidInputError(f"no ids left after {self.next_id_ - 1}; pass ids explicitly")
            uid = np.arange(self.next_id_, self.next_id_ + n, dtype=np.int64)
        else:
            uid = as_ids(ids, n)
        dup = first_duplicate(uid)
        if dup is not None:
            raise InvalidInputError(f"ids repeat id {dup} within one call; ids must be unique")
        present = self.idmap_.contains(uid)
        if present.any() and not replace:
            raise InvalidInputError(f"id {int(uid[np.argmax(present)])} is already in the index; "
                                    "remove it first or pass replace=True")
        if cfg.metric == "cosine":
            x = normalize_rows(x)
        else:
            check_norms(x, "vectors")
        replaced = self.idmap_.find(uid[present]) if present.any() else np.zeros(0, np.int64)
        report(callback, "add", 0, n)
        staying = self.live_
        if replaced.size:
            staying = self.live_.copy()
            staying[replaced] = False
        loads = np.stack([np.bincount(self.assign_[r, 0][staying], minlength=self.n_buckets)
                          for r in range(self.n_reps)])
        where = place(x, self.routers_, cfg, loads, self.centres_, seed=cfg.seed + self.next_id_ + len(self))
        first = self.vectors_.shape[0]
        new_codes = self.codes_.encode(x, where) if self.codes_ is not None else None
        # new arrays are built beside the old ones (appends write past the old
        # views' ends, which no search reads), then swapped in by _commit
        vectors = self._append("vectors", self.vectors_, x)
        ids_ = self._append("ids", self.ids_, uid)
        live = self._append("live", self.live_, np.ones(n, dtype=bool))
        assign = self._append("assign", self.assign_, where, axis=2)
        sqnorms = self._append("sqnorms", self.sqnorms_, self._sqnorms(x)) if cfg.metric == "l2" else self.sqnorms_
        lists = self.lists_.extend(where, first)
        codes = None
        if new_codes is not None:
            codes = self.codes_.extended(self._append("pq_codes", self.codes_.codes, new_codes, axis=2),
                                         lists, assign)
        idmap = self.idmap_
        history = dict(self.history_, added=self.history_.get("added", 0) + n)
        if replaced.size:
            idmap = idmap.without(uid[present])[0]
            live = live.copy()  # the old items' slots are shared with the published state
            live[replaced] = False
            history["removed"] = self.history_.get("removed", 0) + int(replaced.size)
        self._commit({"vectors_": vectors, "ids_": ids_, "live_": live, "assign_": assign, "sqnorms_": sqnorms,
                      "lists_": lists, "codes_": codes, "history_": history,
                      "idmap_": idmap.inserted(uid, np.arange(first, first + n, dtype=np.int64)),
                      "next_id_": max(self.next_id_, int(uid.max()) + 1)}, save_to)
        report(callback, "add", n, n)
        return self

    def _append(self, name: str, view: np.ndarray, new: np.ndarray, axis: int = 0) -> np.ndarray:
        """`view` + `new` along `axis`, in a buffer with spare room (kept in
        self._buffers) so that repeated adds copy O(total) in all."""
        bufs = self.__dict__.setdefault("_buffers", {})
        used = view.shape[axis]
        buf = bufs.get(name)
        if buf is None or view.base is not buf:  # views we made are slices of the buffer
            buf = view
        buf = grow(buf, used, new.shape[axis], axis)
        at = [slice(None)] * view.ndim
        at[axis] = slice(used, used + new.shape[axis])
        buf[tuple(at)] = new
        bufs[name] = buf
        at[axis] = slice(0, used + new.shape[axis])
        return buf[tuple(at)]

    @_exclusive
    def remove(self, ids, missing: str = "raise", save_to: str | os.PathLike | None = None) -> int:
        """Remove items by id; they vanish from results at once (their slots
        are reclaimed by `compact`). An id not in the index is an error, or
        skipped with missing="ignore". With `save_to`, saved there first (as
        for `add`). Returns the number removed."""
        self.check_writable()
        if missing not in ("raise", "ignore"):
            raise InvalidInputError(f"missing must be 'raise' or 'ignore', got {missing!r}")
        want = as_ids(ids, name="ids")
        if missing == "raise":
            absent = ~self.idmap_.contains(want)
            if absent.any():
                raise InvalidInputError(f"id {int(want[np.argmax(absent)])} is not in the index")
        idmap, pos = self.idmap_.without(want)
        if pos.size:
            live = self.live_.copy()  # a search may hold the published mask
            live[pos] = False  # scans skip it at once (the keep mask)
            self._commit({"idmap_": idmap, "live_": live,
                          "history_": dict(self.history_, removed=self.history_.get("removed", 0) + int(pos.size))},
                         save_to)
        return int(pos.size)

    @_exclusive
    def compact(self, save_to: str | os.PathLike | None = None) -> int:
        """Reclaim the slots of removed items: rewrite the stored arrays, lists
        and codes without them (positions change, ids do not) and regroup the
        items by bucket. With `save_to`, saved there first (as for `add`).
        Returns the number of slots reclaimed."""
        self.check_writable()
        gone = self.n_removed
        alive = np.flatnonzero(self.live_)
        perm = alive[np.argsort(self.assign_[0, 0][alive], kind="stable")]
        vectors = np.ascontiguousarray(self.vectors_[perm])
        assign = np.ascontiguousarray(self.assign_[:, :, perm])
        lists = InvertedLists.from_assignments(assign, self.n_buckets)
        codes = None
        if self.codes_ is not None:
            codes = self.codes_.extended(np.ascontiguousarray(self.codes_.codes[:, :, perm]), lists, assign)
        self._install(vectors, np.ascontiguousarray(self.ids_[perm]), assign, self.centres_, lists,
                      self.routers_, codes, self.history_, live=None, next_id=self.next_id_,
                      budget=self.budget_, save_to=save_to)
        return gone

    def drift(self, sample: int = 20_000) -> Drift:
        """How far the partition has drifted from what the routers would now
        build (see `irli.index.updates.Drift`); measured on a seeded sample of
        `sample` live items. A `refresh()` is worth it when `excess` or
        `imbalance` grows."""
        self.check_fitted()
        sample = positive_int(sample, "sample")
        alive = self.idmap_.pos
        rows = alive[sample_rows(alive.size, sample, self.config.seed)]
        moved, imbalance, cv = measure(self.vectors_[rows], self.assign_[:, 0, rows], self.assign_[:, 0, alive],
                                       self.routers_, self.config, self.n_buckets)
        at_fit = self.history_.get("drift_at_fit", {})
        return Drift(moved=float(np.mean(moved)), moved_per_rep=moved, imbalance=imbalance, load_cv=cv,
                     moved_at_fit=float(at_fit.get("moved", 0.0)),
                     imbalance_at_fit=float(at_fit.get("imbalance", 0.0)),
                     added=int(self.history_.get("added", 0)), removed=int(self.history_.get("removed", 0)),
                     sample=int(rows.size))

    @_exclusive
    def refresh(self, train_queries=None, callback: Callback = None) -> "Index":
        """Retrain the routers and re-partition on the items in the index now
        (a `fit` on them, in id order, with the same configuration and ids).
        The old state serves until the new one is complete; save afterwards
        to replace a saved copy atomically. Returns self."""
        self.check_writable()
        alive = self.idmap_.pos  # ascending id order
        next_id = self.next_id_
        self.fit(np.asarray(self.vectors_[alive]), ids=self.idmap_.keys.copy(),
                 train_queries=train_queries, callback=callback)
        self.next_id_ = max(self.next_id_, next_id)  # ids of removed items are not handed out again
        return self

    # -- persistence ---------------------------------------------------------------
    @_exclusive
    def save(self, path: str | os.PathLike, shards: int | None = None, assignment: str = "locality") -> Path:
        """Write the index to the directory `path`, atomically (see
        irli.io.storage); returns its path.

        With `shards` = S, write a sharded index instead: S self-contained
        part directories, each holding only the items of the buckets it
        owns, plus the routers and the bucket -> part table (see
        irli.distributed.layout; `assignment` "locality" or "modulo"). `path` may then
        be an fsspec URL. Open it with `irli.ShardedIndex.open`."""
        if shards is not None:
            from ..distributed.layout import save_sharded

            return save_sharded(self, path, shards, assignment)
        return write_index(path, *self.to_arrays())

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
        """What `save` writes: (arrays by file name, router weights by
        "<rep>.<name>", the manifest's fields)."""
        self.check_fitted()
        arrays = {"vectors": self.vectors_, "ids": self.ids_, "offsets": self.lists_.offsets,
                  "lists": self.lists_.lists, "assign": self.assign_, "centres": self.centres_}
        if self.codes_ is not None:
            arrays.update(self.codes_.arrays())
        if self.config.metric == "l2":
            arrays["sqnorms"] = self.sqnorms_
        if self.n_removed:
            arrays["live"] = self.live_
        routers = {f"{r}.{k}": v for r, rt in enumerate(self.routers_) for k, v in rt.state().items()}
        manifest = {
            "irli_version": __version__, "preset": self.preset, "config": self.config.to_dict(),
            "n_items": len(self), "n_slots": int(self.vectors_.shape[0]), "next_id": self.next_id_,
            "dim": self.dim, "n_buckets": self.n_buckets,
            "n_reps": self.n_reps, "router": self.routers_[0].kind,
            "saved_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "history": self.history_,
        }
        if self.codes_ is not None:
            manifest["pq_residual"] = self.codes_.residual
            manifest["pq_eta"] = self.codes_.eta
        if self.budget_ is not None:
            manifest["probe_budget"] = self.budget_.to_dict()
        return arrays, routers, manifest

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> "Index":
        """Read an index directory written by `save`. With `mmap`, the vectors
        and lists stay on disk, memory-mapped; `verify` checks every file's
        sha256 against the manifest."""
        man, arrays, tensors = read_index(path, mmap=mmap, verify=verify)
        return cls.from_saved(path, man, arrays, tensors)

    @classmethod
    def from_saved(cls, path, man: dict[str, Any], arrays: dict[str, np.ndarray],
                   tensors: dict[str, np.ndarray]) -> "Index":
        """An index from what `to_arrays` gives or `storage.read_index`
        reads (manifest, arrays by name, router tensors), checked; `path`
        names it in errors. A part of a sharded index (manifest "part") is
        read-only."""
        if man.get("task", "ann") == "sharded":
            raise IndexFormatError(f"{path}: a sharded index; open it with irli.ShardedIndex.open or irli.load")
        if man.get("task", "ann") != "ann":
            raise IndexFormatError(f"{path}: a label index (task {man.get('task')!r}); load it with irli.LabelIndex.load or irli.load")
        try:
            config = IndexConfig.from_dict(man["config"])
        except Exception as e:  # a config this version cannot build
            raise IndexFormatError(f"{path}: invalid config in manifest ({e})") from None
        check_vector_index(path, man, config.n_reps, config.copies, config.metric == "l2", config.scan == "pq4",
                           arrays, tensors)
        n, d = arrays["vectors"].shape
        b = arrays["offsets"].shape[1] - 1
        routers = []
        for r, state in enumerate(router_states(tensors, config.n_reps)):
            rt = Router.from_state(man.get("router"), state, config.metric)
            if rt.n_buckets != b or rt.dim != d:
                raise IndexFormatError(f"{path}: router {r} maps {rt.dim} -> {rt.n_buckets}, index has d={d}, B={b}")
            routers.append(rt)
        lists = InvertedLists(np.asarray(arrays["offsets"]), arrays["lists"])
        centres = np.asarray(arrays["centres"])
        codes = None
        if config.scan == "pq4":
            codes = PQ4Codes.from_arrays(arrays["pq_books"], arrays["pq_codes"], centres, config.metric,
                                         bool(man.get("pq_residual", True)), lists, arrays["assign"], n,
                                         eta=float(man.get("pq_eta", 0.0)))
        live = np.asarray(arrays["live"]) if "live" in arrays else None
        budget = None
        if config.learned_probes:
            try:
                budget = ProbeBudget.from_dict(man["probe_budget"])
            except Exception as e:  # missing or damaged
                raise IndexFormatError(f"{path}: invalid probe_budget in manifest ({e})") from None
        self = cls.from_arrays(config, man.get("preset", "custom"), arrays["vectors"], arrays["ids"],
                               arrays["assign"], centres, lists, routers, codes, man.get("history", {}), live=live,
                               next_id=man.get("next_id"), sqnorms=arrays.get("sqnorms"), budget=budget)
        self.part_ = man.get("part")
        return self
