"""What the service does with a request, without HTTP: check it against
the index and the limits, search (many requests as one batch), add and
remove (saved before they are published), health and info.

Every refusal is a RequestError(status, one line): 400 a bad request, 403
writes switched off, 409 an index that cannot change here, 413 over a
limit, 503 a change that could not be saved (nothing applied) or a part of
a sharded index down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import IndexLockedError, InvalidInputError, IrliError, SaveError
from ..io.locks import WriterLock
from ..validation import as_ids
from .options import ServeOptions
from .protocol import (
    AddBody,
    RemoveBody,
    RequestError,
    SearchBody,
    as_allow,
    as_vectors,
    encode_result,
)


@dataclass
class SearchRequest:
    """A checked search: raw queries float32 (n, d), k, probes, refine,
    allow (as Index.search takes it) and the answer's format."""

    queries: np.ndarray
    k: int
    probes: int | None
    refine: int | None
    allow: object
    fmt: str

    @property
    def key(self) -> tuple:
        """Requests with the same key can be answered by one batched search."""
        return (self.k, self.probes, self.refine)


class Service:
    """Requests against one index: an `Index` or a `ShardedIndex`.

    path: the index's directory; when the service may write (an unsharded
    index, options.read_only off, `writable`), it holds the directory's
    WriterLock (a second writer is refused with IndexLockedError) and every
    change is saved there before it is applied and answered. Without a path
    changes stay in memory. Call `close()` to let go of the lock."""

    def __init__(self, index, options: ServeOptions | None = None, path: str | os.PathLike | None = None,
                 writable: bool = True) -> None:
        from ..distributed.sharded import ShardedIndex

        self.index, self.options = index, options or ServeOptions()
        self.sharded = isinstance(index, ShardedIndex)
        self.path = None if path is None else Path(path)
        self.read_only = self.options.read_only
        self.why_not = ("a sharded index is read-only" if self.sharded else
                        None if writable else "the service runs more than one replica")
        self.dim = index.dim
        self.n_buckets = index.n_buckets
        self.lock = None
        if self.writable and self.path is not None:
            self.lock = WriterLock(self.path, wait_s=2.0, holder="irli serve")

    @property
    def writable(self) -> bool:
        return self.why_not is None and not self.read_only

    def close(self) -> None:
        """Release the index directory's writer lock (if held)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # -- searching ------------------------------------------------------------------------
    def search_request(self, body: SearchBody, fmt: str) -> SearchRequest:
        """The checked search of a decoded /search body."""
        o = self.options
        q = as_vectors(body.vectors, self.dim, body.dim, name="queries", finite=False)
        n = q.shape[0]
        if n > o.max_vectors:
            raise RequestError(413, f"{n} query vectors in one request; the limit is {o.max_vectors}")
        try:
            self.index.search_params(k=body.k, probes=body.probes, refine=body.refine)  # the rule of every index
        except InvalidInputError as e:
            raise RequestError(400, str(e)) from None
        if n * body.k > o.max_results:
            raise RequestError(413, f"{n} queries x k={body.k} = {n * body.k:,} results; the limit is "
                               f"{o.max_results:,} per request")
        return SearchRequest(q, body.k, body.probes, body.refine, as_allow(body.allow, n), fmt)

    def search(self, reqs: list[SearchRequest]) -> list[bytes | RequestError]:
        """Encoded answers to checked searches: those with one key and no
        allow filter as one batched search, the others alone. A request the
        search refuses gets its RequestError in its place."""
        out: list = [None] * len(reqs)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(reqs):
            if r.allow is None:
                groups.setdefault(r.key, []).append(i)
            else:
                out[i] = self.answer(r)
        for rows in groups.values():
            if len(rows) == 1:
                out[rows[0]] = self.answer(reqs[rows[0]])
                continue
            first = reqs[rows[0]]
            try:
                res = self._search(np.concatenate([reqs[i].queries for i in rows]), first)
            except RequestError:  # what only the search could see (a zero vector for cosine): each alone
                for i in rows:
                    out[i] = self.answer(reqs[i])
                continue
            lo = 0
            for i in rows:
                hi = lo + reqs[i].queries.shape[0]
                out[i] = encode_result(res.ids[lo:hi], res.scores[lo:hi], res.candidates[lo:hi], reqs[i].fmt)
                lo = hi
        return out

    def answer(self, r: SearchRequest) -> bytes | RequestError:
        """The encoded answer to one checked search (or its RequestError)."""
        try:
            res = self._search(r.queries, r)
        except RequestError as e:
            return e
        return encode_result(res.ids, res.scores, res.candidates, r.fmt)

    def _search(self, q: np.ndarray, r: SearchRequest):
        if q.shape[0] == 1:
            q = q[0]  # one (d,) query: Index.search's short path
        try:
            if self.sharded:
                return self.index.search(q, k=r.k, probes=r.probes, allow=r.allow)
            return self.index.search(q, k=r.k, probes=r.probes, refine=r.refine, allow=r.allow,
                                     threads=self.options.threads)
        except InvalidInputError as e:  # what the checks could not see (e.g. a zero vector for cosine)
            raise RequestError(400, str(e)) from None
        except IrliError as e:  # a part of a sharded index down
            raise RequestError(503, str(e)) from None

    # -- changing -------------------------------------------------------------------------
    def add(self, body: AddBody) -> dict:
        """Add the items of a decoded /add body; saved before answered."""
        self._check_writable("add")
        x = as_vectors(body.vectors, self.dim, body.dim)
        if x.shape[0] > self.options.max_vectors:
            raise RequestError(413, f"{x.shape[0]} vectors in one request; the limit is {self.options.max_vectors}")
        ids = None if body.ids is None else self._ids(body.ids)
        first = self.index.next_id_
        self._change(lambda: self.index.add(x, ids=ids, replace=body.replace, threads=self.options.threads,
                                            save_to=self.path))
        out = ids if ids is not None else np.arange(first, first + x.shape[0], dtype=np.int64)
        return {"ids": out.tolist(), "n_items": len(self.index)}

    def remove(self, body: RemoveBody) -> dict:
        """Remove the ids of a decoded /remove body; saved before answered."""
        self._check_writable("remove")
        ids = self._ids(body.ids)
        n = self._change(lambda: self.index.remove(ids, save_to=self.path))
        return {"removed": n, "n_items": len(self.index)}

    @staticmethod
    def _ids(ids: list[int]) -> np.ndarray:
        try:
            return as_ids(np.array(ids, dtype=np.int64))
        except OverflowError:
            raise RequestError(400, "ids must fit in int64") from None
        except InvalidInputError as e:
            raise RequestError(400, str(e)) from None

    def _change(self, apply):
        try:
            if self.lock is None:
                return apply()
            with self.lock.saving():
                return apply()
        except InvalidInputError as e:  # an id taken or unknown, and the like
            raise RequestError(400, str(e)) from None
        except (SaveError, IndexLockedError) as e:  # nothing was applied
            raise RequestError(503, f"the change was not applied: {e}") from None

    def _check_writable(self, what: str) -> None:
        if self.read_only:
            raise RequestError(403, f"/{what} is switched off: the service is read-only (--read-only)")
        if self.why_not is not None:
            raise RequestError(409, f"/{what} is not available: {self.why_not}; change the index offline "
                               "and serve it again")

    # -- facts ----------------------------------------------------------------------------
    def health(self) -> dict:
        if self.sharded:
            try:
                self.index.ping()
            except IrliError as e:
                raise RequestError(503, str(e)) from None
        return {"status": "ok"}

    def info(self) -> dict:
        from ..version import __version__

        cfg = self.index.config
        out = {"kind": "sharded" if self.sharded else "index", "n_items": len(self.index), "dim": self.dim,
               "metric": cfg.metric, "n_buckets": self.n_buckets, "n_reps": cfg.n_reps, "probes": cfg.probes,
               "preset": getattr(self.index, "preset", None) or self.index.layout.preset,
               "writable": self.writable, "irli_version": __version__, "config": cfg.to_dict(),
               "limits": {"max_body": self.options.max_body, "max_vectors": self.options.max_vectors,
                          "max_results": self.options.max_results}}
        if self.sharded:
            out["parts"] = self.index.n_shards
        return out
