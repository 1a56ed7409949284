"""Index's changes of items: add, remove, compact (each saved first with
`save_to`), drift and refresh."""

from __future__ import annotations

import os
from typing import Self

import numpy as np

from ..errors import InvalidInputError
from ..model.partition import InvertedLists
from ..model.repetitions import Drift
from ..progress import Callback, report
from ..threads import limit
from ..validation import (
    as_ids,
    as_matrix,
    first_duplicate,
    positive_int,
)
from .state import exclusive
from .updates import append, sample_rows


class ChangesMixin:
    """Changing an Index's items (see Index.add, remove, compact)."""

    # -- changing the items ----------------------------------------------------------
    @exclusive
    def add(self, vectors, ids=None, replace: bool = False, callback: Callback = None,
            threads: int | None = None, save_to: str | os.PathLike | None = None) -> Self:
        """Add items without retraining: each goes to the bucket(s) its
        router picks in every repetition, under the same load rule as the
        partition (see `irli.model.repetitions.place`). Storage grows as needed.

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

    def _add(self, vectors, ids, replace, callback, save_to) -> Self:
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
        x = cfg.metric_type.prepare_items(x, "vectors")
        replaced = self.idmap_.find(uid[present]) if present.any() else np.zeros(0, np.int64)
        report(callback, "add", 0, n)
        staying = self.live_
        if replaced.size:
            staying = self.live_.copy()
            staying[replaced] = False
        loads = np.stack([np.bincount(self.assign_[r, 0][staying], minlength=self.n_buckets)
                          for r in range(self.n_reps)])
        where = self.reps_.place(x, cfg, loads, seed=cfg.seed + self.next_id_ + len(self))
        first = self.vectors_.shape[0]
        new_codes = self.codes_.encode(x, where) if self.codes_ is not None else None
        # new arrays are built beside the old ones (appends write past the old
        # views' ends, which no search reads), then swapped in by _commit
        vectors = self._append("vectors", self.vectors_, x)
        ids_ = self._append("ids", self.ids_, uid)
        live = self._append("live", self.live_, np.ones(n, dtype=bool))
        assign = self._append("assign", self.assign_, where, axis=2)
        sqnorms = self._append("sqnorms", self.sqnorms_, cfg.metric_type.sqnorms(x)) if cfg.metric_type.l2 \
            else self.sqnorms_
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
        self._commit({"vectors_": vectors, "ids_": ids_, "live_": live, "sqnorms_": sqnorms,
                      "reps_": self.reps_.changed(assign=assign, lists=lists), "codes_": codes, "history_": history,
                      "idmap_": idmap.inserted(uid, np.arange(first, first + n, dtype=np.int64)),
                      "next_id_": max(self.next_id_, int(uid.max()) + 1)}, save_to)
        report(callback, "add", n, n)
        return self

    def _append(self, name: str, view: np.ndarray, new: np.ndarray, axis: int = 0) -> np.ndarray:
        """`view` + `new` along `axis` in this index's growth buffers (see
        irli.index.updates.append)."""
        return append(self.__dict__.setdefault("_buffers", {}), name, view, new, axis)

    @exclusive
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

    @exclusive
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
        self._install(vectors, np.ascontiguousarray(self.ids_[perm]), assign, self.centroids_, lists,
                      self.routers_, codes, self.history_, live=None, next_id=self.next_id_,
                      budget=self.budget_, save_to=save_to)
        return gone

    def drift(self, sample: int = 20_000) -> Drift:
        """How far the partition has drifted from what the routers would now
        build (see `irli.model.repetitions.Drift`); measured on a seeded sample of
        `sample` live items. A `refresh()` is worth it when `excess` or
        `imbalance` grows."""
        self.check_fitted()
        sample = positive_int(sample, "sample")
        alive = self.idmap_.pos
        rows = alive[sample_rows(alive.size, sample, self.config.seed)]
        moved, imbalance, cv = self.reps_.drift(self.vectors_[rows], rows, alive, self.config)
        at_fit = self.history_.get("drift_at_fit", {})
        return Drift(moved=float(np.mean(moved)), moved_per_rep=moved, imbalance=imbalance, load_cv=cv,
                     moved_at_fit=float(at_fit.get("moved", 0.0)),
                     imbalance_at_fit=float(at_fit.get("imbalance", 0.0)),
                     added=int(self.history_.get("added", 0)), removed=int(self.history_.get("removed", 0)),
                     sample=int(rows.size))

    @exclusive
    def refresh(self, train_queries=None, callback: Callback = None) -> Self:
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
