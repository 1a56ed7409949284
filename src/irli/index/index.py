"""Index, the façade of the vector index: construction, fit, the one step
that installs or changes its learned state (saved first with `save_to`)
and the facts about it. Its searches are irli.index.searcher, its changes
irli.index.changes, its file format irli.index.format and its published
state irli.index.state; the math lives in kernels, model and learn."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..config import IndexConfig
from ..errors import InvalidInputError, NotFittedError
from ..io.storage import write_index
from ..learn.budget import ProbeBudget
from ..model.partition import InvertedLists
from ..model.repetitions import Repetitions
from ..model.routers import Router
from ..progress import Callback
from ..threads import limit
from ..validation import as_ids
from .changes import ChangesMixin
from .codes import PQ4Codes
from .fitting import fit_parts
from .format import FormatMixin
from .idmap import IdMap
from .searcher import SearchMixin
from .state import StateMixin, exclusive


class Index(StateMixin, SearchMixin, ChangesMixin, FormatMixin):
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
    @exclusive
    def fit(self, vectors, ids=None, train_queries=None, callback: Callback = None,
            executor=None, threads: int | None = None, train_targets=None) -> "Index":
        """Learn partitions and routers for `vectors` (n, d) and store them.

        `ids`: int64 (n,) user ids, unique and >= 0 (default 0 .. n-1); search
        results return them. Training queries default to `n_train` items
        sampled from `vectors` (their targets are their exact neighbours
        other than themselves); pass `train_queries` (m, d) to learn from a
        query log instead: its queries' targets are their `target_k` exact
        neighbours, or with `train_targets` (m, t) the ids each should reach
        (what its users clicked, say; repeat an id to pad a row), and the
        training schedule follows the log's size (`schedule`, see
        IndexConfig.scaled_schedule). `callback` receives `irli.progress.Progress`
        reports. `executor` (irli.distributed.RayExecutor) trains groups of
        repetitions as parallel Ray tasks. `threads` pins BLAS, FAISS, numba
        and torch for the fit (None: all cores, see irli.threads). Replaces
        anything stored before; returns self.
        """
        with limit(threads):
            return self._fit(vectors, ids, train_queries, callback, executor, train_targets)

    def _fit(self, vectors, ids, train_queries, callback, executor, train_targets=None) -> "Index":
        self._install(**fit_parts(self.config, vectors, ids, train_queries, callback, executor, train_targets))
        return self

    @classmethod
    def from_arrays(cls, config: IndexConfig, preset: str, vectors: np.ndarray, ids: np.ndarray,
                    assign: np.ndarray, centroids: np.ndarray, lists: InvertedLists, routers: list[Router],
                    codes: PQ4Codes | None, history: dict, live: np.ndarray | None = None,
                    next_id: int | None = None, sqnorms: np.ndarray | None = None,
                    budget: ProbeBudget | None = None) -> "Index":
        """A fitted index from its parts (what `fit` learns and `load` and
        `irli.build` read): vectors float32 (N, d) by position, ids int64
        (N,), assign int32 (R, c, N), centroids float32 (R, B, d), lists over
        the positions, one router per repetition, PQ codes (scan="pq4"),
        history, live bool (N,) (None: all), the next free id, sqnorms (l2),
        the learned probe budget (learned_probes)."""
        self = cls.from_config(config, preset=preset)
        if next_id is None:
            next_id = int(ids.max()) + 1 if ids.size else 0
        self._install(vectors, ids, assign, centroids, lists, routers, codes, history, live, next_id, sqnorms,
                      budget)
        return self

    def _install(self, vectors, ids, assign, centroids, lists, routers, codes, history, live,
                 next_id, sqnorms=None, budget=None, save_to=None) -> None:
        """Set the learned state in one step (see fit, from_arrays and
        compact); with `save_to`, saved there first (see `_commit`)."""
        live = np.ones(ids.shape[0], dtype=bool) if live is None else live
        alive = np.flatnonzero(live)
        self._commit({
            "vectors_": vectors, "ids_": ids, "reps_": Repetitions(routers, assign, lists, centroids),
            "codes_": codes, "history_": history, "live_": live, "sqnorms_": self.config.metric_type.sqnorms(vectors) if sqnorms is None else sqnorms,
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

    # -- facts ---------------------------------------------------------------------
    # the model's parts, read from `reps_` (irli.model.repetitions.Repetitions)
    reps_: Repetitions | None = None  # the model: R x (partition + router)
    routers_ = property(lambda self: list(self.reps_.routers) if self.reps_ else None, doc="one router per rep")
    routing_ = property(lambda self: self.reps_.routing if self.reps_ else None, doc="routers stacked for kernels")
    assign_ = property(lambda self: self.reps_.assign if self.reps_ else None, doc="int32 (R, c, N) buckets")
    lists_ = property(lambda self: self.reps_.lists if self.reps_ else None, doc="inverted lists by bucket")
    centroids_ = property(lambda self: self.reps_.centroids if self.reps_ else None, doc="float32 (R, B, d) centroids")

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
