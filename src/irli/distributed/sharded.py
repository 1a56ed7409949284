"""ShardedIndex: one index searched as S parts, each in its own process.

The driver holds only the routers and the bucket -> part table
(`irli.distributed.layout.Layout`). It routes each query once, sends it only to the
parts that own one of its probed buckets, and merges their top-k (an item
stored in two parts counts once). A part is a read-only `Index` holding its
buckets' items; it answers as the whole index would over those buckets.

Parts run in Ray actors (`executor=RayExecutor(...)`), each loading its own
part directory, so no process holds the whole index; or in this process
(`executor=None`). Every call to a part has a timeout: a dead or hung part
raises `DistributedError` naming it, never a hang. A crashed actor restarts
(reloading its part) and its calls in flight are retried.
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from ..errors import IndexFormatError, InvalidInputError
from ..index.index import Index
from ..io.storage import MANIFEST, read_index, sha256
from ..kernels.exact_scan import scanned
from ..model.routers import route
from ..params import SearchParams
from ..result import SearchResult
from ..validation import positive_int
from .executor import DistributedError, RayExecutor, failure
from .layout import Layout, fetched, part_arrays, shards_touched

# seconds a search waits for a part (Ray) before it gives up on it
TIMEOUT_S = 60.0


class PartServer:
    """One part of a sharded index, in the process that holds it (a Ray
    actor, or the driver). `source`: where the part is (path or URL), or
    its (manifest, arrays, router tensors) in memory."""

    def __init__(self, source, shard: int, n_shards: int, expect: str | None = None,
                 threads: int | None = None, mmap: bool = True, verify: bool = True) -> None:
        if isinstance(source, str):
            self.index = open_part(source, shard, n_shards, expect, mmap=mmap, verify=verify)
        else:
            man, arrays, tensors = source
            self.index = Index.from_saved(f"<part {shard}>", man, arrays, tensors)
        self.threads = threads

    def search(self, queries: np.ndarray, k: int, probes: int, allow=None, refine: int | None = None):
        """(ids int64 (n, k), scores float32 (n, k), candidates, scanned) as
        Index.search over this part."""
        r = self.index.search(queries, k=k, probes=probes, allow=allow, refine=refine, threads=self.threads)
        return r.ids, r.scores, r.candidates, r.scanned

    def info(self) -> dict:
        return {"n_items": len(self.index), "pid": os.getpid()}


class ShardedIndex:
    """An index searched as S parts in S processes (Ray actors).

    >>> index.save("big.index", shards=4)                        # or: irli shard
    >>> sharded = ShardedIndex.open("big.index", executor=RayExecutor())
    >>> ids, scores = sharded.search(queries, k=10, probes=16)

    `ShardedIndex(index, shards=S, executor=...)` cuts a fitted index held
    in this process instead (nothing is written). Each part scans its probed
    buckets as the whole index would, so for exact-scan indexes the results
    equal `index.search` (min_votes=1, no top_c); for scan="pq4" every part
    re-ranks its own best refine x k exactly, so at least as many items are
    scored exactly as by the single index. Removed items are left out of
    the parts. timeout_s bounds every wait on a part; max_restarts is how
    often a crashed part actor is restarted; part_cpus is the CPUs each part
    actor reserves (0: none, so more parts than CPUs fit; actors are spread
    over the nodes either way), and it searches with max(1, part_cpus)
    threads.
    """

    def __init__(self, index, shards: int = 2, executor: RayExecutor | None = None, assignment: str = "locality",
                 timeout_s: float = TIMEOUT_S, max_restarts: int = 2, part_cpus: float = 0) -> None:
        index.check_fitted()
        layout = Layout.of_index(index, shards, assignment)
        sources = []
        for s in range(layout.n_shards):
            arrays, tensors, man = part_arrays(index, layout.owner, s)
            sources.append((man, arrays, tensors))
        self._start(layout, sources, executor, timeout_s, max_restarts, part_cpus, mmap=True, verify=True)

    @classmethod
    def open(cls, path: str | os.PathLike, executor: RayExecutor | None = None, parts: list[str] | None = None,
             timeout_s: float = TIMEOUT_S, max_restarts: int = 2, part_cpus: float = 0, mmap: bool = True,
             verify: bool = True) -> "ShardedIndex":
        """Open the sharded index directory at `path` (local or fsspec URL)
        written by `Index.save(path, shards=S)` or `irli shard`. Only its
        manifest and routers are read here; each part is loaded by its own
        actor (executor: a RayExecutor) or in this process (None). `parts`
        overrides where each part is (a path on the node its actor runs on,
        or a URL); by default the part directories inside `path`."""
        layout = Layout.read(path, verify=verify)
        where = layout.parts
        if parts is not None:
            if len(parts) != layout.n_shards:
                raise InvalidInputError(f"parts: {len(parts)} locations for {layout.n_shards} parts")
            where = [(os.fspath(p), sha) for p, (_, sha) in zip(parts, where)]
            layout.parts = where
        self = cls.__new__(cls)
        self._start(layout, where, executor, timeout_s, max_restarts, part_cpus, mmap, verify)
        return self

    def _start(self, layout: Layout, sources: list, executor, timeout_s, max_restarts, part_cpus, mmap,
               verify) -> None:
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise InvalidInputError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        self.layout, self.n_shards, self.executor, self.timeout_s = layout, layout.n_shards, executor, float(timeout_s)
        self.config = layout.config
        n = layout.n_shards
        if executor is None:
            self.parts = [PartServer(_source(src), s, n, _sha(src), mmap=mmap, verify=verify)
                          for s, src in enumerate(sources)]
            self.actors = []
            return
        ray = executor.ray()
        cls = ray.remote(num_cpus=part_cpus, max_restarts=max_restarts, max_task_retries=max_restarts,
                         scheduling_strategy="SPREAD")(PartServer)
        threads = max(1, int(part_cpus))
        self.parts = []
        self.actors = [cls.remote(_source(src) if isinstance(_source(src), str) else ray.put(src), s, n, _sha(src),
                                  threads, mmap, verify) for s, src in enumerate(sources)]
        try:  # every part loaded, or a clear error naming the first that did not
            self._wait([(s, None, a.info.remote()) for s, a in enumerate(self.actors)], "load")
        except BaseException:
            self.close()
            raise

    # -- facts ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.layout.n_items

    @property
    def dim(self) -> int:
        return self.layout.dim

    @property
    def n_buckets(self) -> int:
        return self.layout.n_buckets

    @property
    def n_reps(self) -> int:
        return self.config.n_reps

    def __repr__(self) -> str:
        return (f"ShardedIndex({self.n_shards} parts, {len(self)} items, d={self.dim}, B={self.n_buckets}, "
                f"R={self.n_reps}, {'Ray' if self.actors else 'in process'})")

    def search_params(self, k=10, probes=None, refine=None) -> SearchParams:
        """The checked parameters of a search (irli.params)."""
        return SearchParams.resolve(self.config, len(self), self.n_buckets, k, probes, refine=refine,
                                    codes=self.config.scan == "pq4")

    def probes_for(self, probes: int | None) -> int:
        p = self.config.probes if probes is None else positive_int(probes, "probes")
        return min(p, self.n_buckets)

    def route(self, queries, probes: int | None = None) -> np.ndarray:
        """Buckets each repetition would open: int32 (R, n, m), best first."""
        return route(self.layout.routing, self.layout.prepare(queries), self.probes_for(probes))[0]

    def shards_touched(self, queries, probes: int | None = None) -> np.ndarray:
        """Parts each query is sent to: int64 (n,)."""
        return shards_touched(self.layout.owner, self.route(queries, probes))

    # -- searching -----------------------------------------------------------------------
    def search(self, queries, k: int = 10, probes: int | None = None, allow=None,
               refine: int | None = None) -> SearchResult:
        """Like `Index.search` (routing here, scans in the parts). `allow`
        as for Index.search. `.candidates` and `.scanned` sum over the
        parts, so an item held by two probed parts counts twice."""
        raw = as_queries(queries, self.dim)
        q = self.layout.prepare(raw)
        k, m, _, _, refine = self.search_params(k, probes, refine=refine)
        probed = route(self.layout.routing, q, m)[0]  # (R, n, m)
        nq = q.shape[0]
        owner = self.layout.owner[np.arange(probed.shape[0])[:, None, None], probed]  # (R, n, m)
        asked = [(s, np.flatnonzero((owner == s).any(axis=(0, 2)))) for s in range(self.n_shards)]
        asked = [(s, rows) for s, rows in asked if rows.size]  # only the parts a query reaches
        if self.actors:
            calls = [(s, rows, self.actors[s].search.remote(raw[rows], k, m, _rows(allow, rows, nq), refine))
                     for s, rows in asked]
            answers = self._wait(calls, "search")
        else:
            answers = [self.parts[s].search(raw[rows], k, m, _rows(allow, rows, nq), refine) for s, rows in asked]
        kind = self.config.metric_type
        ids = np.full((nq, max(1, len(asked)) * k), -1, dtype=np.int64)
        scores = np.full(ids.shape, -np.inf, dtype=np.float32)
        cand = np.zeros(nq, dtype=np.int64)
        for j, ((s, rows), (i, sc, c, _)) in enumerate(zip(asked, answers)):
            ids[rows, j * k:(j + 1) * k] = i
            scores[rows, j * k:(j + 1) * k] = np.where(i >= 0, kind.ranked_scores(sc), -np.inf)
            cand[rows] += c
        top_ids, top = merge(ids, scores, k)
        if kind.l2:
            top = np.where(top_ids >= 0, kind.user_scores(top), np.inf).astype(np.float32)
        return SearchResult(top_ids, top, cand, scanned(self.layout.offsets, probed))

    def _wait(self, calls: list, what: str) -> list:
        """The answers of Ray calls [(part, rows, ref)], each waited for at
        most timeout_s in all; raises DistributedError naming the first part
        that failed or did not answer."""
        ray = self.executor.ray()
        refs = [ref for _, _, ref in calls]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.timeout_s)
        done = set(ready)
        out = []
        for s, _, ref in calls:
            if ref not in done:
                for r in refs:
                    if r not in done:
                        ray.cancel(r)
                raise DistributedError(f"shard {s} of {self.n_shards} did not answer ({what}) within "
                                       f"{self.timeout_s:g} s")
            try:
                out.append(ray.get(ref, timeout=self.timeout_s))
            except Exception as e:  # RayActorError, RayTaskError, GetTimeoutError, ...
                raise failure(e, f"shard {s} of {self.n_shards} ({what})") from None
        return out

    def ping(self) -> list[dict]:
        """Each part's info ({"n_items", "pid"}); DistributedError names a
        part that does not answer within timeout_s."""
        if not self.actors:
            return [p.info() for p in self.parts]
        return self._wait([(s, None, a.info.remote()) for s, a in enumerate(self.actors)], "ping")

    def close(self) -> None:
        """Stop the part actors (in-process parts are dropped)."""
        if self.actors:
            ray = self.executor.ray()
            for a in self.actors:
                try:
                    ray.kill(a, no_restart=True)
                except Exception:  # already gone
                    pass
        self.actors, self.parts = [], []

    def __enter__(self) -> "ShardedIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_part(location: str, shard: int, n_shards: int, expect: str | None = None, mmap: bool = True,
              verify: bool = True):
    """Load part `shard` from `location` (local path or URL) as a read-only
    Index; `expect` is the sha256 of its manifest the sharded manifest
    records (a part from another save is refused)."""
    local, tmp = fetched(location, recursive=True)
    try:
        man, arrays, tensors = read_index(local, mmap=mmap, verify=verify)
        if expect is not None and sha256(local / MANIFEST) != expect:
            raise IndexFormatError(f"{location}: this part is not the one its sharded index was saved with "
                                   "(replaced or from another save)")
        part = man.get("part")
        if not isinstance(part, dict) or part.get("shard") != shard or part.get("n_shards") != n_shards:
            raise IndexFormatError(f"{location}: not part {shard} of {n_shards} of a sharded index")
        return Index.from_saved(location, man, arrays, tensors)
    finally:
        if tmp is not None:  # memory maps keep their pages after the files are unlinked
            shutil.rmtree(tmp, ignore_errors=True)


def as_queries(queries, dim: int) -> np.ndarray:
    """Queries as float32 (n, d), shape and dtype checked (values by prepare)."""
    from ..validation import as_matrix

    return as_matrix(queries, "queries", dim=dim, allow_1d=True, finite=False)


def _source(src):
    """A part's location (str) or in-memory arrays, from a layout entry."""
    return src[0] if isinstance(src, tuple) and len(src) == 2 and isinstance(src[0], str) else src


def _sha(src) -> str | None:
    return src[1] if isinstance(src, tuple) and len(src) == 2 and isinstance(src[0], str) else None


def _rows(allow, rows: np.ndarray, n: int):
    """The allow filter of queries `rows` (per-query filters are cut; one
    filter for all queries is passed as it is)."""
    if allow is None:
        return None
    if isinstance(allow, np.ndarray) and allow.ndim == 2 and allow.dtype == bool:
        return allow[rows]
    if isinstance(allow, (list, tuple)) and len(allow) == n and len(allow) and (
            np.ndim(allow[0]) >= 1 or isinstance(allow[0], (set, frozenset, range))):
        return [allow[i] for i in rows]
    if isinstance(allow, np.ndarray) and allow.dtype == object:
        return allow[rows]
    return allow


def merge(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row of candidate (id, score) pairs (int64 / float32 (n, c),
    higher is better, id -1 unused), each id once with its best score, best
    first (ties: lower id); vectorised."""
    n, c = ids.shape
    rows = np.repeat(np.arange(n), c)
    p, s = ids.ravel(), scores.ravel()
    ok = p >= 0
    rows, p, s = rows[ok], p[ok], s[ok]
    o = np.lexsort((-s, p, rows))  # by row, then id, best score first
    rows, p, s = rows[o], p[o], s[o]
    first = np.ones(rows.size, dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (p[1:] != p[:-1])
    rows, p, s = rows[first], p[first], s[first]
    o = np.lexsort((p, -s, rows))  # by row, best score first
    rows, p, s = rows[o], p[o], s[o]
    start = np.searchsorted(rows, np.arange(n))
    rank = np.arange(rows.size) - start[rows]
    keep = rank < k
    out_p = np.full((n, k), -1, dtype=np.int64)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    out_p[rows[keep], rank[keep]] = p[keep]
    out_s[rows[keep], rank[keep]] = s[keep]
    return out_p, out_s
