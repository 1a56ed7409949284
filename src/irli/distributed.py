"""Ray as irli's distributed engine (optional: pip install 'irli[ray]').

* `RayExecutor` runs independent work as Ray tasks: groups of repetitions
  training in parallel (`Index.fit(..., executor=...)`), each task with its own
  CPU/GPU request and retried when its worker dies.
* `ShardedIndex` places shards of a fitted index in Ray actors: the driver
  routes each query once, sends it only to the shards that own one of its
  probed buckets, and merges their top-k (an item stored in two shards is
  counted once).

Nothing here imports Ray until it is used, and `import irli` never does.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import InvalidInputError, IrliError


class DistributedError(IrliError, RuntimeError):
    """A Ray task or actor failed for good (after its retries)."""


def _ray():
    try:
        import ray
    except ImportError:
        raise IrliError("Ray is not installed; pip install 'irli[ray]'") from None
    return ray


def _failure(ray, e: Exception, what: str) -> DistributedError:
    cause = getattr(e, "cause", None) or e
    first = " ".join(str(cause).split())[:300]
    return DistributedError(f"{what} failed: {type(cause).__name__}: {first}")


class RayExecutor:
    """Where distributed work runs: a Ray cluster.

    address: None starts (or reuses) a local Ray in this process, "auto" joins
    the cluster of `ray start`, or a "ray://host:port" address. workers:
    parallel tasks (default: the cluster's CPUs / cpus_per_task).
    cpus_per_task / gpus_per_task: each task's resource request; torch in a
    task uses that many threads. max_retries: re-runs of a task whose worker
    died (Ray's own retry); a task that raises is not retried.
    """

    def __init__(self, address: str | None = None, workers: int | None = None, cpus_per_task: int = 1,
                 gpus_per_task: float = 0, max_retries: int = 2) -> None:
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise InvalidInputError(f"workers must be a positive integer, got {workers!r}")
        self.address, self.workers = address, workers
        self.cpus_per_task, self.gpus_per_task, self.max_retries = cpus_per_task, gpus_per_task, max_retries

    def ray(self):
        """The ray module, connected (ray.init on first use)."""
        ray = _ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": self.address, "include_dashboard": False,
                                      "log_to_driver": False}
            if self.address is None:
                kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(_package_paths())}}
            ray.init(**kwargs)
        return ray

    def n_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        cpus = int(self.ray().cluster_resources().get("CPU", 1))
        return max(1, cpus // max(1, self.cpus_per_task))

    def map(self, fn, items: list, **shared) -> list:
        """[fn(item, **shared) for item in items] as parallel Ray tasks; the
        `shared` values go to the object store once. Raises
        DistributedError naming the first task that failed."""
        ray = self.ray()
        refs = {k: ray.put(v) for k, v in shared.items()}
        task = ray.remote(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
                          max_retries=self.max_retries)(fn)
        futures = [task.remote(item, **refs) for item in items]
        out = []
        for i, f in enumerate(futures):
            try:
                out.append(ray.get(f))
            except Exception as e:  # RayTaskError, WorkerCrashedError, ...
                for g in futures[i + 1:]:
                    ray.cancel(g, force=True)
                raise _failure(ray, e, f"Ray task {i} of {len(futures)} ({getattr(fn, '__name__', fn)})") from None
        return out

    def learn(self, x: np.ndarray, cfg, n_buckets: int, train_queries: np.ndarray | None):
        """`training.learn` with the repetitions split into `workers` groups,
        one Ray task each; joined in repetition order."""
        from .training import join, training_set

        groups = [g for g in np.array_split(np.arange(cfg.n_reps), min(self.n_workers(), cfg.n_reps)) if g.size]
        items = [(int(g[0]), int(g.size)) for g in groups]
        # the training queries' exact neighbours serve every repetition: computed
        # once here rather than once per task
        tset = training_set(x, cfg, train_queries) if cfg.learns else None
        parts = self.map(_learn_group, items, x=x, cfg=cfg, n_buckets=n_buckets,
                         train_queries=train_queries, tset=tset, threads=max(1, int(self.cpus_per_task)))
        return join(parts)


def _package_paths() -> list[str]:
    """Where this irli is imported from, so local Ray workers import the same."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def _learn_group(item: tuple[int, int], x, cfg, n_buckets, train_queries, tset, threads):
    """Ray task: repetitions first .. first + count - 1 of `cfg`."""
    import faiss
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    from .training import learn

    torch.set_num_threads(threads)  # a task uses the CPUs it asked for, not the node's
    faiss.omp_set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    first, count = item
    with threadpool_limits(threads):
        return learn(x, cfg.replace(n_reps=count), n_buckets, train_queries, first_rep=first, tset=tset)


# -- sharded search ------------------------------------------------------------------
class _Shard:
    """One shard (a Ray actor): the items of the buckets it owns, with lists
    over local positions; answers exact top-k over the probed buckets."""

    def __init__(self, vectors, sqnorms, offsets, lists, positions, l2, copies):
        self.vectors, self.sqnorms = np.ascontiguousarray(vectors), np.ascontiguousarray(sqnorms)
        self.offsets, self.lists = np.ascontiguousarray(offsets), np.ascontiguousarray(lists)
        self.positions, self.l2, self.copies = positions, l2, copies

    def search(self, q, probed, k):
        from .search import scan

        pos, scores, cand = scan(q, self.vectors, self.sqnorms, self.offsets, self.lists, probed,
                                 np.empty((probed.shape[0], 0, 0), np.float32), k, 1, 0, self.l2,
                                 copies=self.copies)
        return np.where(pos >= 0, self.positions[np.maximum(pos, 0)], -1), scores, cand

    def ping(self):
        return os.getpid()


def split_by_bucket(index, shards: int) -> list[dict]:
    """The arrays of each shard of `index`: shard s owns bucket b of every
    repetition when b % shards == s, and holds every item with an entry in
    one of its buckets. Returns one dict of `_Shard` arguments per shard."""
    off, lists = index.lists_.offsets, index.lists_.lists
    reps, b1 = off.shape
    out = []
    for s in range(shards):
        owned = (np.arange(b1 - 1) % shards) == s
        sizes = np.where(owned[None, :], np.diff(off, axis=1), 0)
        keep = [np.repeat(owned, np.diff(off[r])) for r in range(reps)]
        entries = [lists[r][keep[r]] for r in range(reps)]
        positions = np.unique(np.concatenate(entries)).astype(np.int64)
        local = [np.searchsorted(positions, e).astype(np.int32) for e in entries]
        width = max((e.size for e in local), default=0)
        lst = np.zeros((reps, width), dtype=np.int32)
        for r, e in enumerate(local):
            lst[r, : e.size] = e
        offsets = np.zeros((reps, b1), dtype=np.int64)
        offsets[:, 1:] = np.cumsum(sizes, axis=1)
        sq = index.sqnorms_[positions] if index.sqnorms_.size else np.zeros(0, np.float32)
        out.append({"vectors": np.asarray(index.vectors_[positions]), "sqnorms": sq, "offsets": offsets,
                    "lists": lst, "positions": positions, "l2": index.config.metric == "l2",
                    "copies": index.assign_.shape[1]})
    return out


class ShardedIndex:
    """A fitted `Index` split by bucket over `shards` Ray actors.

    >>> sharded = ShardedIndex(index, shards=2, executor=RayExecutor())
    >>> ids, scores = sharded.search(queries, k=10, probes=16)

    The routers stay on the driver. Each shard scans its probed buckets
    exactly, so for exact-scan indexes the results equal `index.search`
    (min_votes=1, no top_c); for a `scan="pq4"` index they equal an exact
    scan of the probed buckets (what `index.search` returns with a refine
    large enough), at least as good as the compressed search. Removed items
    are dropped when the shards are made. Actors restart up to
    `max_restarts` times after a crash; a shard that cannot answer raises
    DistributedError.
    """

    def __init__(self, index, shards: int = 2, executor: RayExecutor | None = None,
                 max_restarts: int = 2) -> None:
        index.check_fitted()
        if not isinstance(shards, int) or not 1 <= shards <= index.n_buckets:
            raise InvalidInputError(f"shards must be between 1 and {index.n_buckets}, got {shards!r}")
        if index.n_removed:
            index = _without_removed(index)
        self.index, self.n_shards = index, shards
        self.executor = executor or RayExecutor()
        ray = self.executor.ray()
        actor = ray.remote(num_cpus=self.executor.cpus_per_task, max_restarts=max_restarts,
                           max_task_retries=max_restarts)(_Shard)
        self.actors = [actor.remote(**{k: ray.put(v) if isinstance(v, np.ndarray) else v for k, v in part.items()})
                       for part in split_by_bucket(index, shards)]

    def search(self, queries, k: int = 10, probes: int | None = None):
        """Like `Index.search` (routing on the driver, scans on the shards).
        `.candidates` sums the items each shard scored, so an item held by
        two probed shards counts twice."""
        from .result import SearchResult
        from .routers import route
        from .search import scanned
        from .validation import positive_int

        ray = self.executor.ray()
        q = self.index.prepare_queries(queries)
        k = positive_int(k, "k")
        m = self.index.probes_for(probes)
        probed = route(self.index.routers_, q, m)[0]  # (R, n, m)
        nq = q.shape[0]
        owner = probed % self.n_shards
        calls = []
        for s, actor in enumerate(self.actors):
            rows = np.flatnonzero((owner == s).any(axis=(0, 2)))  # only queries that probe shard s
            if rows.size:
                calls.append((s, rows, actor.search.remote(q[rows], np.ascontiguousarray(probed[:, rows]), k)))
        pos = np.full((nq, len(calls) * k or k), -1, dtype=np.int64)
        scores = np.full(pos.shape, -np.inf, dtype=np.float32)
        cand = np.zeros(nq, dtype=np.int64)
        for j, (s, rows, ref) in enumerate(calls):
            try:
                p, sc, c = ray.get(ref)
            except Exception as e:
                raise _failure(ray, e, f"shard {s} of {self.n_shards}") from None
            pos[rows, j * k:(j + 1) * k] = p
            scores[rows, j * k:(j + 1) * k] = sc
            cand[rows] += c
        top_pos, top_scores = _merge(pos, scores, k)
        ids = np.where(top_pos >= 0, self.index.ids_[np.maximum(top_pos, 0)], -1)
        if self.index.config.metric == "l2":
            top_scores = -top_scores
        return SearchResult(ids, top_scores, cand, scanned(self.index.lists_.offsets, probed))

    def close(self) -> None:
        ray = self.executor.ray()
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []


def _merge(pos: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row of candidate (position, score) pairs (int64 / float32
    (n, c), -1 unused), each position once, best first; vectorised."""
    n, c = pos.shape
    rows = np.repeat(np.arange(n), c)
    p, s = pos.ravel(), scores.ravel()
    ok = p >= 0
    rows, p, s = rows[ok], p[ok], s[ok]
    o = np.lexsort((-s, p, rows))  # by row, then position, best score first
    rows, p, s = rows[o], p[o], s[o]
    first = np.ones(rows.size, dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (p[1:] != p[:-1])
    rows, p, s = rows[first], p[first], s[first]
    o = np.lexsort((p, -s, rows))  # by row, best score first (ties: lower position)
    rows, p, s = rows[o], p[o], s[o]
    start = np.searchsorted(rows, np.arange(n))
    rank = np.arange(rows.size) - start[rows]
    keep = rank < k
    out_p = np.full((n, k), -1, dtype=np.int64)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    out_p[rows[keep], rank[keep]] = p[keep]
    out_s[rows[keep], rank[keep]] = s[keep]
    return out_p, out_s


def _without_removed(index):
    import copy

    clone = copy.deepcopy(index)
    clone.compact()
    return clone
