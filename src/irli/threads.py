"""How many threads irli uses, and the pool that runs blocks of queries.

Search splits a batch into blocks of queries and runs them on a shared pool
of Python threads; the kernels are compiled with `nogil`, so the blocks run
in parallel. Each query is computed the same way whatever block it falls in,
so results do not depend on the thread count. `threads=None` anywhere means
the process default: every core this process may use, or what
`set_num_threads` set. `limit` pins the libraries fit and add use (BLAS,
FAISS's OpenMP, numba, torch) for the length of a call.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

from .errors import InvalidInputError

_default: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_lock = threading.Lock()
_local = threading.local()


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def set_num_threads(n: int | None) -> None:
    """Threads irli uses when a call passes threads=None (None: all cores)."""
    global _default
    _default = None if n is None else resolve(n)


def get_num_threads() -> int:
    """Threads a call with threads=None uses now."""
    return _default if _default is not None else cpu_count()


def resolve(threads: int | None) -> int:
    """`threads` checked (a positive integer), or the default for None."""
    if threads is None:
        return get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidInputError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="irli")
            _pool_size = n
        return _pool


def run_blocks(fn: Callable[[int, int], None], n: int, threads: int | None, min_block: int = 32,
               max_block: int = 4096) -> None:
    """Call fn(lo, hi) over [0, n) in blocks of at most `max_block`, on up
    to `threads` threads.

    Small batches (fewer than 2 x min_block items) or threads=1 run in the
    calling thread. Exceptions from a block are raised here.
    """
    t = resolve(threads)
    if t == 1 or n < 2 * min_block:
        for lo in range(0, n, max_block):
            fn(lo, min(n, lo + max_block))
        return
    blocks = max(min(4 * t, -(-n // min_block)), -(-n // max_block))
    step = -(-n // blocks)
    spans = [(lo, min(n, lo + step)) for lo in range(0, n, step)]
    if getattr(_local, "in_pool", False):  # already on a pool thread: do not wait on the pool
        for lo, hi in spans:
            fn(lo, hi)
        return
    # the caller and t - 1 pool threads take blocks in turn until none is left:
    # t threads on t cores, and a slow block does not hold the others back
    taken = itertools.count()

    def work() -> None:
        while (i := next(taken)) < len(spans):
            fn(*spans[i])

    pool = _executor(t - 1)
    futures = [pool.submit(_in_pool, work) for _ in range(min(t - 1, len(spans) - 1))]
    try:
        work()
    finally:
        errors = [f.exception() for f in futures]
    for e in errors:
        if e is not None:
            raise e


def _in_pool(work) -> None:
    _local.in_pool = True
    work()


class Stamps:
    """Per-thread scratch of the exact scan: int32 arrays of one entry per
    stored item, marked with query stamps that only grow, so no call ever
    clears them (a call costs what it touches, not the collection size)."""

    def __init__(self) -> None:
        self.arrays: dict[str, object] = {}
        self.next = 0

    def take(self, names: tuple[str, ...], size: int, n_queries: int):
        """(arrays for `names`, each int32 of at least `size`, first stamp);
        stamps first .. first + n_queries - 1 are this call's."""
        import numpy as np

        if self.next + n_queries >= 2**31 - 1:  # wrap: start again from clean arrays
            self.arrays.clear()
            self.next = 0
        out = []
        for name in names:
            a = self.arrays.get(name)
            if a is None or a.shape[0] < size:
                a = np.full(size, -1, dtype=np.int32)
                self.arrays[name] = a
            out.append(a)
        first = self.next
        self.next += n_queries
        return out, first


def stamps() -> Stamps:
    """This thread's scan scratch."""
    s = getattr(_local, "stamps", None)
    if s is None:
        s = _local.stamps = Stamps()
    return s


@contextlib.contextmanager
def limit(threads: int | None) -> Iterator[int]:
    """Pin BLAS, FAISS (OpenMP), numba and torch to `threads` for a block
    of code (fit, add); restores the previous settings after."""
    import faiss
    import numba
    from threadpoolctl import threadpool_limits

    t = resolve(threads)
    old_numba = numba.get_num_threads()
    old_faiss = faiss.omp_get_max_threads()
    torch = _torch()
    old_torch = torch.get_num_threads() if torch is not None else None
    try:
        numba.set_num_threads(min(t, numba.config.NUMBA_NUM_THREADS))
        faiss.omp_set_num_threads(t)
        if torch is not None:
            torch.set_num_threads(t)
        with threadpool_limits(t):
            yield t
    finally:
        numba.set_num_threads(old_numba)
        faiss.omp_set_num_threads(old_faiss)
        if torch is not None:
            torch.set_num_threads(old_torch)


def _torch():
    """torch if it is already imported (fit imports it; search never does)."""
    import sys

    return sys.modules.get("torch")


# -- one writer at a time ---------------------------------------------------------
_LOCKS = threading.Lock()


class UpdateLock:
    """A mixin giving an object `_lock`: one re-entrant lock, made on first
    use, under which its changes run one at a time (Index, LabelIndex).
    Copies and pickles get a lock of their own; the names in `_transient`
    (the lock, and whatever a subclass rebuilds on demand) are left out of
    both."""

    _transient: tuple[str, ...] = ("_update_lock",)

    @property
    def _lock(self) -> threading.RLock:
        lock = self.__dict__.get("_update_lock")
        if lock is None:
            with _LOCKS:
                lock = self.__dict__.setdefault("_update_lock", threading.RLock())
        return lock

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in self._transient:
            state.pop(name, None)
        return state
