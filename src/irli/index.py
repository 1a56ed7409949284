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
from .partition import InvertedLists
from .progress import Callback, report
from .routers import Router
from .codes import PQ4Codes, default_pq_m
from .search import rerank, route, scan, scanned
from .storage import read_index, write_index
from .training import learn
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
    def fit(self, vectors, train_queries=None, callback: Callback = None) -> "Index":
        """Learn partitions and routers for `vectors` (n, d) and store them.

        Item ids are the row numbers. Training queries default to `n_train`
        items sampled from `vectors` (their targets are their exact neighbours
        other than themselves); pass `train_queries` (m, d) to learn from a
        query log instead. `callback` receives `irli.progress.Progress`
        reports. Returns self.
        """
        cfg = self.config
        t0 = time.perf_counter()
        x = as_matrix(vectors, "vectors")
        n, d = x.shape
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
        result = learn(x, cfg, b, tq, callback)
        perm = np.argsort(result.assign[0, 0], kind="stable")  # group by home bucket of rep 0
        self.vectors_ = np.ascontiguousarray(x[perm])
        self.ids_ = perm.astype(np.int64)
        self.assign_ = np.ascontiguousarray(result.assign[:, :, perm])
        self.centres_ = result.centres
        report(callback, "lists", 0, 1)
        self.lists_ = InvertedLists.from_assignments(self.assign_, b)
        report(callback, "lists", 1, 1)
        self.routers_: list[Router] = result.routers
        self.sqnorms_ = self._sqnorms(self.vectors_)
        self.codes_: list[PQ4Codes] = []
        if cfg.scan == "pq4":
            for r in range(cfg.n_reps):
                self.codes_.append(PQ4Codes.build(self.vectors_, self.assign_[r], self.centres_[r],
                                                  cfg.metric, cfg.pq_m, seed=cfg.seed + r))
                report(callback, "codes", r + 1, cfg.n_reps)
        self.history_ = {"rounds": result.history, "fit_seconds": time.perf_counter() - t0}
        return self

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
        return 0 if self.vectors_ is None else int(self.vectors_.shape[0])

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
        return f"Index(preset={self.preset!r}, metric={self.config.metric!r}, R={self.n_reps}, {state})"

    def assignments(self, spilled: bool = False) -> np.ndarray:
        """Home bucket of each item in each repetition, int32 (R, N), columns
        in id order; with `spilled`, all its buckets, int32 (R, 1 + spill, N)."""
        self._check_fitted()
        out = np.empty(self.assign_.shape, dtype=np.int32)
        out[:, :, self.ids_] = self.assign_
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
               top_c: int | None = None, refine: int | None = None, batch_size: int = 4096) -> SearchResult:
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
        l2 = self.config.metric == "l2"
        parts = []
        for s in range(0, q.shape[0], batch_size):
            qb = q[s : s + batch_size]
            probed, probs = route(self.routers_, qb, m, with_probs=cut is not None)
            if self.codes_:  # approximate scan of codes, exact re-rank of the best refine x k
                kk = min(factor * k, len(self) * self.assign_.shape[1])
                cand = np.concatenate([c.search(qb, probed[r], kk) for r, c in enumerate(self.codes_)], axis=1)
                out = rerank(qb, self.vectors_, self.sqnorms_, cand, k, l2)
            else:
                out = scan(qb, self.vectors_, self.sqnorms_, self.lists_.offsets, self.lists_.lists,
                           probed, probs, k, votes, cut or 0, l2, copies=self.assign_.shape[1])
            parts.append((*out, scanned(self.lists_.offsets, probed)))
        pos, scores, cand, read = (np.concatenate([p[i] for p in parts]) for i in range(4))
        ids = np.where(pos >= 0, self.ids_[np.maximum(pos, 0)], -1)
        if l2:
            scores = -scores  # negative squared distance -> squared distance (+inf pads)
        return SearchResult(ids, scores, cand, read)

    # -- persistence ---------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index to the directory `path`, atomically (see storage)."""
        self._check_fitted()
        arrays = {"vectors": self.vectors_, "ids": self.ids_, "offsets": self.lists_.offsets,
                  "lists": self.lists_.lists, "assign": self.assign_, "centres": self.centres_}
        for r, codes in enumerate(self.codes_):
            arrays[f"codes{r}"] = codes.to_array()
        if self.config.metric == "l2":
            arrays["sqnorms"] = self.sqnorms_
        routers = {f"{r}.{k}": v for r, rt in enumerate(self.routers_) for k, v in rt.state().items()}
        manifest = {
            "irli_version": __version__, "preset": self.preset, "config": self.config.to_dict(),
            "n_items": len(self), "dim": self.dim, "n_buckets": self.n_buckets,
            "n_reps": self.n_reps, "router": self.routers_[0].kind,
            "saved_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "history": self.history_,
        }
        return write_index(path, arrays, routers, manifest)

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
        self = cls.from_config(config, preset=man.get("preset", "custom"))
        self.vectors_, self.ids_ = arrays["vectors"], arrays["ids"]
        self.lists_ = InvertedLists(offsets, arrays["lists"])
        self.sqnorms_ = arrays.get("sqnorms", np.zeros(0, dtype=np.float32))
        self.assign_, self.centres_ = arrays["assign"], np.asarray(arrays["centres"])
        self.codes_ = [PQ4Codes.from_array(arrays[f"codes{r}"], self.centres_[r], config.metric)
                       for r in range(reps)] if config.scan == "pq4" else []
        self.routers_ = routers
        self.history_ = man.get("history", {})
        return self


def load(path: str | os.PathLike, mmap: bool = True, verify: bool = True):
    """Load an index directory: an `Index`, or a `LabelIndex` for a label
    index; see their `load` methods."""
    from .storage import read_manifest

    if read_manifest(path).get("task", "ann") == "xml":
        from .labels import LabelIndex

        return LabelIndex.load(path, verify=verify)
    return Index.load(path, mmap=mmap, verify=verify)
