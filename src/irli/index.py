"""Index: fit / search / save / load. It checks input and orchestrates the
other modules (training, partition, search, storage); the math lives there."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import __version__
from .config import IndexConfig
from .errors import IndexFormatError, InvalidInputError, NotFittedError
from .exact import exact_knn
from .filters import Allowed, parse_allow
from .idmap import IdMap, as_ids, first_duplicate
from .partition import InvertedLists
from .progress import Callback, report
from .routers import Router
from .codes import PQ4Codes, default_pq_m
from .search import rerank, route, scan, scanned, subset
from .storage import read_index, write_index
from .training import learn
from .updates import Drift, grow, measure, place, sample_rows
from .validation import as_matrix, normalize_rows, positive_int


class _Pair(NamedTuple):
    ids: np.ndarray
    scores: np.ndarray


class SearchResult(_Pair):
    """(ids, scores), each (n, k), best first; unpacks as a pair.

    ids: int64 item ids, -1 where fewer than k items were found.
    scores: float32. For "cosine" and "ip", the similarity (higher is better,
    -inf where padded); for "l2", the squared Euclidean distance (lower is
    better, +inf where padded).
    candidates: int64 (n,), items scored exactly per query; scanned: int64
    (n,), entries read from the probed buckets (vectors for scan="exact",
    4-bit codes for scan="pq4"). Both are attributes, not part of the pair.
    """

    candidates: np.ndarray
    scanned: np.ndarray

    def __new__(cls, ids: np.ndarray, scores: np.ndarray, candidates: np.ndarray,
                scanned: np.ndarray) -> "SearchResult":
        self = super().__new__(cls, ids, scores)
        self.candidates = candidates
        self.scanned = scanned
        return self


class Index:
    """A learned index over dense vectors: R repetitions x B buckets x router.

    >>> index = Index("irli", metric="cosine").fit(vectors)
    >>> ids, scores = index.search(queries, k=10)

    `preset` is "irli", "ivf-ltr" or "ivf" (see `irli.PRESETS`); any field of
    `IndexConfig` can be overridden by keyword. Learned state lives in
    attributes ending in "_" and exists after `fit` or `load`.
    """

    def __init__(self, preset: str = "irli", metric: str = "cosine", **overrides: Any) -> None:
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
    def fit(self, vectors, ids=None, train_queries=None, callback: Callback = None,
            executor=None) -> "Index":
        """Learn partitions and routers for `vectors` (n, d) and store them.

        `ids`: int64 (n,) user ids, unique and >= 0 (default 0 .. n-1); search
        results return them. Training queries default to `n_train` items
        sampled from `vectors` (their targets are their exact neighbours
        other than themselves); pass `train_queries` (m, d) to learn from a
        query log instead. `callback` receives `irli.progress.Progress`
        reports. `executor` (irli.distributed.RayExecutor) trains groups of
        repetitions as parallel Ray tasks. Replaces anything stored before;
        returns self.
        """
        cfg = self.config
        t0 = time.perf_counter()
        x = as_matrix(vectors, "vectors")
        n, d = x.shape
        uid = np.arange(n, dtype=np.int64) if ids is None else as_ids(ids, n)
        dup = first_duplicate(uid)
        if dup is not None:
            raise InvalidInputError(f"ids repeat id {dup}; ids must be unique")
        b = cfg.buckets_for(n)
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
        codes_: list[PQ4Codes] = []
        if cfg.scan == "pq4":
            for r in range(cfg.n_reps):
                codes_.append(PQ4Codes.build(vectors_, assign_[r], result.centres[r],
                                             cfg.metric, cfg.pq_m, seed=cfg.seed + r))
                report(callback, "codes", r + 1, cfg.n_reps)
        rows = sample_rows(n, 20_000, cfg.seed)
        moved, imbalance, _ = measure(vectors_[rows], assign_[:, 0, rows], assign_[:, 0], result.routers, cfg, b)
        history = {"rounds": result.history, "fit_seconds": time.perf_counter() - t0,
                   "drift_at_fit": {"moved": float(np.mean(moved)), "imbalance": imbalance},
                   "added": 0, "removed": 0}
        self._install(vectors_, uid[perm], assign_, result.centres, lists_, result.routers, codes_,
                      history, live=None, next_id=int(uid.max()) + 1)
        return self

    def _install(self, vectors, ids, assign, centres, lists, routers, codes, history, live,
                 next_id, sqnorms=None) -> None:
        """Set the learned state in one step (see fit and load)."""
        self.vectors_, self.ids_, self.assign_, self.centres_ = vectors, ids, assign, centres
        self.lists_, self.routers_, self.codes_, self.history_ = lists, routers, codes, history
        self.live_ = np.ones(ids.shape[0], dtype=bool) if live is None else live
        self.sqnorms_ = self._sqnorms(vectors) if sqnorms is None else sqnorms
        alive = np.flatnonzero(self.live_)
        self.idmap_ = IdMap(ids[alive], alive.astype(np.int64))
        self.next_id_ = int(next_id)
        self.__dict__.pop("_buffers", None)

    def _sqnorms(self, x: np.ndarray) -> np.ndarray:
        if self.config.metric != "l2":
            return np.zeros(0, dtype=np.float32)
        return np.einsum("ij,ij->i", x, x).astype(np.float32)

    # -- facts ---------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.vectors_ is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError("this Index is not fitted yet; call fit(vectors) or irli.load(path) first")

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
        self._check_fitted()
        return self.idmap_.keys.copy()

    @property
    def n_removed(self) -> int:
        """Removed items whose slots `compact()` would reclaim."""
        return 0 if self.vectors_ is None else int(self.vectors_.shape[0] - len(self.idmap_))

    def get_vectors(self, ids) -> np.ndarray:
        """The stored vectors of `ids` (unit length for cosine), float32 (m, d)."""
        return np.asarray(self.vectors_[self._positions(ids, "ids")])

    def _positions(self, ids, name: str) -> np.ndarray:
        self._check_fitted()
        want = as_ids(ids, name=name)
        pos = self.idmap_.find(want)
        if (pos < 0).any():
            raise InvalidInputError(f"{name}: id {int(want[np.argmax(pos < 0)])} is not in the index")
        return pos

    @property
    def dim(self) -> int:
        self._check_fitted()
        return int(self.vectors_.shape[1])

    @property
    def n_buckets(self) -> int:
        self._check_fitted()
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
        self._check_fitted()
        out = np.ascontiguousarray(self.assign_[:, :, self.idmap_.pos], dtype=np.int32)
        return out if spilled else out[:, 0]

    # -- searching ---------------------------------------------------------------
    def _queries(self, queries) -> np.ndarray:
        self._check_fitted()
        q = as_matrix(queries, "queries", dim=self.dim, allow_1d=True)
        return normalize_rows(q) if self.config.metric == "cosine" else q

    def _probes(self, probes) -> int:
        p = self.config.probes if probes is None else positive_int(probes, "probes")
        return min(p, self.n_buckets)

    def route(self, queries, probes: int | None = None) -> np.ndarray:
        """Buckets each repetition would open: int32 (R, n, m), best first."""
        q = self._queries(queries)
        return route(self.routers_, q, self._probes(probes))[0]

    def search(self, queries, k: int = 10, probes: int | None = None, min_votes: int | None = None,
               top_c: int | None = None, refine: int | None = None, allow=None,
               batch_size: int = 4096) -> SearchResult:
        """Approximate top-`k` items for each query.

        queries: (n, d) or a single (d,) vector (answered as n = 1).
        probes: buckets opened per repetition (default `config.probes`;
        clamped to B). min_votes: keep only candidates seen in at least this
        many repetitions (default `config.min_votes`). top_c: score only the C
        candidates with the highest summed router probability (default
        `config.top_c`, None: all). Survivors are scored exactly. refine
        (scan="pq4" only): re-score the best refine x k by code exactly
        (default `config.refine`); with refine x k >= the entries probed the
        search is exact over the probed buckets.
        allow: return only these ids (see `irli.filters` for the forms: ids
        or a boolean mask by id, for all queries or one per query). The
        filter applies before the top-k. A query whose allowed items are
        fewer than the entries a search would read (R x copies x probes x
        N / B), or whose probed buckets hold fewer than k of them, is
        answered by exact search over its allowed items.
        Returns SearchResult(ids, scores) with `.candidates`; see its doc.
        """
        q = self._queries(queries)
        k = positive_int(k, "k")
        m = self._probes(probes)
        votes = self.config.min_votes if min_votes is None else positive_int(min_votes, "min_votes")
        if votes > self.n_reps:
            raise InvalidInputError(f"min_votes={votes} exceeds the {self.n_reps} repetitions")
        cut = self.config.top_c if top_c is None else positive_int(top_c, "top_c")
        if self.codes_ and (votes > 1 or cut is not None):
            raise InvalidInputError("min_votes and top_c filter exact candidates; this index scans PQ codes")
        factor = self.config.refine if refine is None else positive_int(refine, "refine")
        batch_size = positive_int(batch_size, "batch_size")
        nq = q.shape[0]
        pos = np.full((nq, k), -1, dtype=np.int64)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        cand = np.zeros(nq, dtype=np.int64)
        read = np.zeros(nq, dtype=np.int64)
        allowed = None if allow is None else parse_allow(allow, nq, self.idmap_, self.ids_, self.live_)
        bucketed = np.arange(nq)
        if allowed is not None:  # tiny allow-lists: exact search over them
            counts = allowed.counts(nq)
            bucketed = np.flatnonzero(counts > self._exact_below(m))
        for s in range(0, bucketed.shape[0], batch_size):
            rows = bucketed[s : s + batch_size]
            if allowed is None:  # unfiltered: rows is a range, so slice without copying the queries
                rows = slice(s, s + batch_size)
            out = self._scan(q[rows], k, m, votes, cut, factor,
                             None if allowed is None else allowed.rows(rows))
            pos[rows], scores[rows], cand[rows], read[rows] = out
        if allowed is not None:
            found = (pos >= 0).sum(axis=1)
            exact = np.flatnonzero(found < np.minimum(k, counts))  # the small and the short
            if exact.size:
                pos[exact], scores[exact], cand[exact] = self._exact_allowed(q[exact], k, allowed.rows(exact))
                read[exact] = cand[exact]
        ids = np.where(pos >= 0, self.ids_[np.maximum(pos, 0)], -1)
        if self.config.metric == "l2":
            scores = -scores  # negative squared distance -> squared distance (+inf pads)
        return SearchResult(ids, scores, cand, read)

    def _exact_below(self, probes: int) -> float:
        """Entries a search reads per query, on average: allow-lists up to
        this size are searched exactly (it costs no more)."""
        return self.assign_.shape[1] * self.n_reps * probes * len(self) / self.n_buckets

    def _scan(self, q, k, m, votes, cut, factor, allowed: Allowed | None):
        """One batch of the bucket search: (positions, scores, candidates,
        entries read), positions into the stored arrays."""
        l2 = self.config.metric == "l2"
        probed, probs = route(self.routers_, q, m, with_probs=cut is not None)
        if self.codes_ and allowed is None:  # approximate scan of codes, exact re-rank of the best refine x k
            kk = min(factor * k, len(self) * self.assign_.shape[1])
            cand = np.concatenate([c.search(q, probed[r], kk) for r, c in enumerate(self.codes_)], axis=1)
            out = rerank(q, self.vectors_, self.sqnorms_, cand, k, l2)
        else:  # exact scan of the lists; removed and filtered-out items are skipped
            keep = allow = None
            if allowed is not None and allowed.per_query:
                allow = (allowed.ptr, allowed.pos)
            elif allowed is not None:
                keep = allowed.keep
            elif self.n_removed:
                keep = self.live_.view(np.uint8)
            out = scan(q, self.vectors_, self.sqnorms_, self.lists_.offsets, self.lists_.lists,
                       probed, probs, k, votes, cut or 0, l2, copies=self.assign_.shape[1],
                       keep=keep, allow=allow)
        return (*out, scanned(self.lists_.offsets, probed))

    def _exact_allowed(self, q, k, allowed: Allowed):
        """Exact top-k of each query among its allowed items: (positions,
        scores higher-is-better, candidates)."""
        l2 = self.config.metric == "l2"
        if allowed.per_query:
            return subset(q, self.vectors_, self.sqnorms_, allowed.ptr, allowed.pos, k, l2)[:3]
        p = allowed.positions
        nq = q.shape[0]
        if p.size == 0:
            return (np.full((nq, k), -1, np.int64), np.full((nq, k), -np.inf, np.float32),
                    np.zeros(nq, np.int64))
        idx, d = exact_knn(np.asarray(self.vectors_[p]), q, k, "l2" if l2 else "ip")
        pos = np.where(idx >= 0, p[np.maximum(idx, 0)], -1)
        return pos, (-d if l2 else d), np.full(nq, p.size, dtype=np.int64)

    # -- changing the items ----------------------------------------------------------
    def add(self, vectors, ids=None, replace: bool = False, callback: Callback = None) -> "Index":
        """Add items without retraining: each goes to the bucket(s) its
        router picks in every repetition, under the same load rule as the
        partition (see `irli.updates`). Storage grows as needed.

        vectors: (n, d). ids: int64 (n,), unique, >= 0; default next_id_ ..
        next_id_ + n - 1 (one past the largest id ever stored). An id that is
        already in the index is an error, unless `replace`, which removes the
        old item first. Returns self.
        """
        self._check_fitted()
        x = as_matrix(vectors, "vectors", dim=self.dim)
        n = x.shape[0]
        uid = np.arange(self.next_id_, self.next_id_ + n, dtype=np.int64) if ids is None else as_ids(ids, n)
        dup = first_duplicate(uid)
        if dup is not None:
            raise InvalidInputError(f"ids repeat id {dup} within one call; ids must be unique")
        present = self.idmap_.contains(uid)
        if present.any() and not replace:
            raise InvalidInputError(f"id {int(uid[np.argmax(present)])} is already in the index; "
                                    "remove it first or pass replace=True")
        cfg = self.config
        if cfg.metric == "cosine":
            x = normalize_rows(x)
        if present.any():
            self.remove(uid[present])
        report(callback, "add", 0, n)
        loads = np.stack([np.bincount(self.assign_[r, 0][self.live_], minlength=self.n_buckets)
                          for r in range(self.n_reps)])
        where = place(x, self.routers_, cfg, loads, self.centres_, seed=cfg.seed + self.next_id_ + len(self))
        first = self.vectors_.shape[0]
        self._updatable_codes()
        self.vectors_ = self._append("vectors", self.vectors_, x)
        self.ids_ = self._append("ids", self.ids_, uid)
        self.live_ = self._append("live", self.live_, np.ones(n, dtype=bool))
        self.assign_ = self._append("assign", self.assign_, where, axis=2)
        if cfg.metric == "l2":
            self.sqnorms_ = self._append("sqnorms", self.sqnorms_, self._sqnorms(x))
        self.lists_ = self.lists_.extend(where, first)
        for r, c in enumerate(self.codes_):
            c.add(x, where[r], first)
        self.idmap_.insert(uid, np.arange(first, first + n, dtype=np.int64))
        self.next_id_ = max(self.next_id_, int(uid.max()) + 1)
        self.history_["added"] = self.history_.get("added", 0) + n
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

    def remove(self, ids, missing: str = "raise") -> int:
        """Remove items by id; they vanish from results at once (their slots
        are reclaimed by `compact`). An id not in the index is an error, or
        skipped with missing="ignore". Returns the number removed."""
        self._check_fitted()
        if missing not in ("raise", "ignore"):
            raise InvalidInputError(f"missing must be 'raise' or 'ignore', got {missing!r}")
        want = as_ids(ids, name="ids")
        if missing == "raise":
            absent = ~self.idmap_.contains(want)
            if absent.any():
                raise InvalidInputError(f"id {int(want[np.argmax(absent)])} is not in the index")
        pos = self.idmap_.delete(want)
        if pos.size:
            self._updatable_codes()
            if not self.live_.flags.writeable:
                self.live_ = self.live_.copy()
            self.live_[pos] = False
            for c in self.codes_:
                c.remove(pos)
            self.history_["removed"] = self.history_.get("removed", 0) + int(pos.size)
        return int(pos.size)

    def _updatable_codes(self) -> None:
        """Codes saved by irli 0.1.0 cannot change: encode them anew (once)."""
        if all(c.updatable for c in self.codes_):
            return
        cfg = self.config
        self.codes_ = [PQ4Codes.build(self.vectors_, self.assign_[r], self.centres_[r], cfg.metric,
                                      cfg.pq_m, seed=cfg.seed + r) for r in range(self.n_reps)]
        dead = np.flatnonzero(~self.live_)
        if dead.size:
            for c in self.codes_:
                c.remove(dead)

    def compact(self) -> int:
        """Reclaim the slots of removed items: rewrite the stored arrays, lists
        and codes without them (positions change, ids do not) and regroup the
        items by bucket. Returns the number of slots reclaimed."""
        self._check_fitted()
        gone = self.n_removed
        alive = np.flatnonzero(self.live_)
        perm = alive[np.argsort(self.assign_[0, 0][alive], kind="stable")]
        vectors = np.ascontiguousarray(self.vectors_[perm])
        assign = np.ascontiguousarray(self.assign_[:, :, perm])
        lists = InvertedLists.from_assignments(assign, self.n_buckets)
        codes = [c.rebuilt(vectors, assign[r]) if c.updatable else
                 PQ4Codes.build(vectors, assign[r], self.centres_[r], self.config.metric, self.config.pq_m,
                                seed=self.config.seed + r)
                 for r, c in enumerate(self.codes_)]
        self._install(vectors, np.ascontiguousarray(self.ids_[perm]), assign, self.centres_, lists,
                      self.routers_, codes, self.history_, live=None, next_id=self.next_id_)
        return gone

    def drift(self, sample: int = 20_000) -> Drift:
        """How far the partition has drifted from what the routers would now
        build (see `irli.updates.Drift`); measured on a seeded sample of
        `sample` live items. A `refresh()` is worth it when `excess` or
        `imbalance` grows."""
        self._check_fitted()
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

    def refresh(self, train_queries=None, callback: Callback = None) -> "Index":
        """Retrain the routers and re-partition on the items in the index now
        (a `fit` on them, in id order, with the same configuration and ids).
        The old state serves until the new one is complete; save afterwards
        to replace a saved copy atomically. Returns self."""
        self._check_fitted()
        alive = self.idmap_.pos  # ascending id order
        next_id = self.next_id_
        self.fit(np.asarray(self.vectors_[alive]), ids=self.idmap_.keys.copy(),
                 train_queries=train_queries, callback=callback)
        self.next_id_ = max(self.next_id_, next_id)  # ids of removed items are not handed out again
        return self

    # -- persistence ---------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index to the directory `path`, atomically (see storage)."""
        return self._write(path)

    def _write(self, path: str | os.PathLike, staged: dict[str, Path] | None = None) -> Path:
        """`save`, with arrays already on disk in `staged` (name -> .npy file
        on the same file system, moved in; see irli.build)."""
        self._check_fitted()
        arrays = {"vectors": self.vectors_, "ids": self.ids_, "offsets": self.lists_.offsets,
                  "lists": self.lists_.lists, "assign": self.assign_, "centres": self.centres_}
        for r, codes in enumerate(self.codes_):
            arrays[f"codes{r}"] = codes.to_array()
        if self.config.metric == "l2":
            arrays["sqnorms"] = self.sqnorms_
        if self.n_removed:
            arrays["live"] = self.live_
        for name in staged or {}:
            arrays.pop(name)
        routers = {f"{r}.{k}": v for r, rt in enumerate(self.routers_) for k, v in rt.state().items()}
        manifest = {
            "irli_version": __version__, "preset": self.preset, "config": self.config.to_dict(),
            "n_items": len(self), "n_slots": int(self.vectors_.shape[0]), "next_id": self.next_id_,
            "dim": self.dim, "n_buckets": self.n_buckets,
            "n_reps": self.n_reps, "router": self.routers_[0].kind,
            "saved_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "history": self.history_,
        }
        return write_index(path, arrays, routers, manifest, staged=staged)

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> "Index":
        """Read an index directory written by `save`. With `mmap`, the vectors
        and lists stay on disk, memory-mapped; `verify` checks every file's
        sha256 against the manifest."""
        man, arrays, tensors = read_index(path, mmap=mmap, verify=verify)
        if man.get("task", "ann") != "ann":
            raise IndexFormatError(f"{path}: a label index (task {man.get('task')!r}); load it with irli.LabelIndex.load or irli.load")
        try:
            config = IndexConfig.from_dict(man["config"])
        except Exception as e:  # a config this version cannot build
            raise IndexFormatError(f"{path}: invalid config in manifest ({e})") from None
        need = ["vectors", "ids", "offsets", "lists", "assign", "centres"]
        need += ["sqnorms"] if config.metric == "l2" else []
        need += [f"codes{r}" for r in range(config.n_reps)] if config.scan == "pq4" else []
        for name in need:
            if name not in arrays:
                raise IndexFormatError(f"{path}: missing {name}.npy")
        n, d = arrays["vectors"].shape
        reps, b1 = arrays["offsets"].shape
        copies = config.copies
        if (arrays["ids"].shape != (n,) or arrays["lists"].shape != (reps, copies * n)
                or arrays["assign"].shape != (reps, copies, n) or arrays["centres"].shape != (reps, b1 - 1, d)
                or reps != config.n_reps or b1 - 1 != man.get("n_buckets")):
            raise IndexFormatError(f"{path}: array shapes do not agree with each other or the manifest")
        offsets = np.asarray(arrays["offsets"])
        if ((offsets[:, 0] != 0).any() or (offsets[:, -1] != copies * n).any()
                or (np.diff(offsets, axis=1) < 0).any()):
            raise IndexFormatError(f"{path}: inverted-list offsets are inconsistent")
        routers = []
        kind = man.get("router")
        for r in range(reps):
            state = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == str(r)}
            rt = Router.from_state(kind, state, config.metric)
            if rt.n_buckets != b1 - 1 or rt.dim != d:
                raise IndexFormatError(f"{path}: router {r} maps {rt.dim} -> {rt.n_buckets}, "
                                       f"index has d={d}, B={b1 - 1}")
            routers.append(rt)
        live = None
        if "live" in arrays:
            live = np.asarray(arrays["live"])
            if live.shape != (n,) or live.dtype != bool:
                raise IndexFormatError(f"{path}: live.npy must be bool ({n},), got {live.dtype} {live.shape}")
        ids = np.asarray(arrays["ids"])
        alive = ids if live is None else ids[live]
        if alive.size and (alive.min() < 0 or first_duplicate(alive) is not None):
            raise IndexFormatError(f"{path}: item ids are negative or repeat (corrupted ids.npy)")
        self = cls.from_config(config, preset=man.get("preset", "custom"))
        codes = [PQ4Codes.from_array(arrays[f"codes{r}"], np.asarray(arrays["centres"])[r], config.metric)
                 for r in range(reps)] if config.scan == "pq4" else []
        next_id = man.get("next_id", int(ids.max()) + 1 if ids.size else 0)
        self._install(arrays["vectors"], arrays["ids"], arrays["assign"], np.asarray(arrays["centres"]),
                      InvertedLists(offsets, arrays["lists"]), routers, codes, man.get("history", {}),
                      live=live, next_id=next_id, sqnorms=arrays.get("sqnorms"))
        return self

def load(path: str | os.PathLike, mmap: bool = True, verify: bool = True):
    """Load an index directory: an `Index`, or a `LabelIndex` for a label
    index; see their `load` methods."""
    from .storage import read_manifest

    if read_manifest(path).get("task", "ann") == "xml":
        from .labels import LabelIndex

        return LabelIndex.load(path, verify=verify)
    return Index.load(path, mmap=mmap, verify=verify)

