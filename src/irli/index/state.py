"""What a search reads, published as one object: `State` (the arrays and
kernel arguments taken together), the update lock, and how a change is
published (see Index._commit). A search reads the state once, so it never
mixes arrays from before and after a change running in another thread."""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from ..kernels.exact_scan import ExactIndexArgs
from ..kernels.pq_scan import PQIndexArgs
from ..learn.budget import ProbeBudget
from ..model.partition import InvertedLists
from ..model.routers import Routing
from ..threads import UpdateLock
from .codes import PQ4Codes
from .idmap import IdMap


def exclusive(method):
    """Run a method that changes (or saves) the index under its update
    lock: such calls from several threads run one at a time, each on the
    state the previous one left. Searches never wait for it: they read the
    published snapshot (see Index._publish)."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


def read_only(a):
    """A read-only plain-ndarray view of an array (anything else as it is).
    The search kernels take the index's arrays read-only whether they are
    memory maps of a loaded index, arrays of a fitted one or buffers grown
    by `add`, so one compiled version of each kernel serves them all; a
    memory map goes as a plain view of its pages, which numba's dispatcher
    types faster (about 0.6 µs a call each)."""
    if isinstance(a, np.ndarray) and (a.flags.writeable or type(a) is not np.ndarray):
        a = a.view(np.ndarray)
        a.flags.writeable = False
    return a


class State(NamedTuple):
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
    kernel_args: PQIndexArgs | ExactIndexArgs  # the index's arguments of its search kernel
    budget: ProbeBudget | None  # the learned probe budget (learned_probes), or None: fixed probes
    # (k, probes, refine) -> (pq_one's compiled entry, its arguments before the outputs, the bytes of
    # scratch it needs, a list of spare scratch buffers), checked and resolved once (SearchMixin._plan): a query per call skips the checks
    # it has passed before
    plans: dict




class StateMixin(UpdateLock):
    """Index's published state and its update lock."""

    _transient = ("_update_lock", "_state")  # the snapshot is rebuilt from the arrays on first search

    def _snapshot(self) -> "State":
        """The searchable state as one object (see `_publish`): a search
        reads it once, so it never mixes arrays from before and after an
        add, remove or compact running in another thread."""
        self.check_fitted()
        st = self.__dict__.get("_state")
        return st if st is not None else self._publish()

    def _publish(self) -> "State":
        """Bundle the current arrays into the state searches read; called
        under the update lock at the end of every change."""
        with self._lock:
            keep = self.live_.view(np.uint8) if self.n_removed else np.zeros(0, dtype=np.uint8)
            cosine, l2 = self.config.metric_type.cosine, self.config.metric_type.l2
            r = self.routing_
            # the kernels emit ids when given a non-empty id array (positions otherwise): an index
            # with no slots left (all removed, then compacted) passes one unused id
            ids = self.ids_ if self.ids_.shape[0] else np.full(1, -1, dtype=np.int64)
            if self.codes_ is not None:
                args = self.codes_.kernel_args(cosine, r, self.vectors_, self.sqnorms_, keep, ids)
            else:
                args = ExactIndexArgs(cosine=cosine, l2=l2, a1=r.first_tiles, b1=r.b1, tiles=r.tiles, b2=r.b2,
                                      rows=r.rows, half=r.half, slack=r.slack, tiles8=r.tiles8,
                                      scale8=r.scale8, x=self.vectors_, sqn=self.sqnorms_,
                                      offsets=self.lists_.offsets, lists=self.lists_.lists, keep=keep, ids=ids)
            args = type(args)(*(read_only(a) for a in args))
            st = State(self.vectors_, self.sqnorms_, self.ids_, self.live_, keep, self.lists_, self.codes_,
                        self.routing_, self.idmap_, self.assign_.shape[1], len(self.idmap_),
                        self.vectors_.shape[1], self.lists_.offsets.shape[1] - 1, args,
                        self.budget_, {})
            self._state = st
            return st

