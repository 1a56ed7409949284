"""What the HTTP service does, without the server: parse and check a JSON
request, run it on an index, and answer JSON (see irli.serve for the Ray
Serve deployment and irli.client for the client).

Endpoints (JSON in and out):
  POST /search  {"vectors": [[float] * d] * n or [float] * d, "k": 10,
                 "probes": null, "allow": [id, ...] or null}
                -> {"ids": [[int] * k] * n, "scores": [[float or null] * k] * n,
                    "candidates": [int] * n}   (-1 / null where padded)
  POST /add     {"vectors": ..., "ids": [int] or null, "replace": false}
                -> {"ids": [int], "n_items": int}   (unsharded, one replica)
  POST /remove  {"ids": [int]} -> {"removed": int, "n_items": int}
  GET  /health  -> {"status": "ok"}
  GET  /info    -> the index's kind, size, dimension, metric and settings

Every error is {"error": "<one line>"} with status 400 (bad JSON, field,
dimension, NaN, k or probes out of range, unknown id to remove), 404
(unknown path), 405 (wrong method), 409 (add / remove where the index
cannot change), 413 (body over the limit) or 503 (a part of a sharded
index is down).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidInputError, IrliError
from .idmap import as_ids
from .index import K_MAX

# largest request body, bytes (about 40,000 vectors of 50 floats as JSON text)
MAX_BODY = 16 << 20


class RequestError(Exception):
    """A request the service refuses: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, " ".join(message.split())


@dataclass
class SearchRequest:
    """A checked search: raw queries float32 (n, d), k, probes, allow ids."""

    queries: np.ndarray
    k: int
    probes: int | None
    allow: np.ndarray | None

    @property
    def key(self) -> tuple:
        """Requests with the same key can be answered by one batched search."""
        return (self.k, self.probes)


def parse_json(body: bytes, limit: int = MAX_BODY) -> dict:
    """The JSON object in `body`; RequestError 413 / 400 otherwise."""
    if len(body) > limit:
        raise RequestError(413, f"request body of {len(body)} bytes is over the limit of {limit}")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, f"malformed JSON: {e}") from None
    if not isinstance(doc, dict):
        raise RequestError(400, f"the body must be a JSON object, got {type(doc).__name__}")
    return doc


def _fields(doc: dict, allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    for key in doc:
        if key not in allowed:
            raise RequestError(400, f"unknown field {key!r} (fields: {', '.join(allowed)})")
    for key in required:
        if doc.get(key) is None:
            raise RequestError(400, f"missing field {key!r}")


def _int(doc: dict, key: str, default: int | None) -> int | None:
    v = doc.get(key, default)
    if v is None:
        return None
    if type(v) is not int:
        raise RequestError(400, f"{key} must be an integer, got {json.dumps(v)[:40]}")
    return v


def _vectors(v: Any, dim: int) -> np.ndarray:
    """JSON vectors as float32 (n, d); a flat list is one vector."""
    if not isinstance(v, list) or not v:
        raise RequestError(400, "vectors must be a non-empty list of numbers or of lists of numbers")
    try:
        a = np.array(v, dtype=np.float64)
    except (ValueError, TypeError):
        raise RequestError(400, "vectors must hold numbers only, in lists of equal length") from None
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2 or a.shape[1] == 0:
        raise RequestError(400, f"vectors must be a list of numbers or a list of lists, got depth {a.ndim}")
    if a.shape[1] != dim:
        raise RequestError(400, f"vectors have dimension {a.shape[1]}, the index has {dim}")
    if not np.isfinite(a).all():
        row = int(np.argmax(~np.isfinite(a).all(axis=1)))
        raise RequestError(400, f"vector {row} holds NaN or inf")
    return a.astype(np.float32)


def _ids(v: Any, name: str) -> np.ndarray:
    if not isinstance(v, list) or any(type(i) is not int for i in v):
        raise RequestError(400, f"{name} must be a list of integers")
    try:
        return as_ids(v, name=name)
    except (InvalidInputError, OverflowError) as e:
        raise RequestError(400, str(e)) from None


class Service:
    """Requests against one index: an `Index` or a `ShardedIndex`.

    threads: threads per search; writable: whether /add and /remove may
    change the index (an unsharded index served by one replica); save_to:
    where the index is saved after each change (atomically, before the
    answer), so an acknowledged change survives a restart."""

    def __init__(self, index, threads: int | None = None, writable: bool = True, save_to=None) -> None:
        from .sharded import ShardedIndex

        self.index, self.threads = index, threads
        self.sharded = isinstance(index, ShardedIndex)
        self.writable = writable and not self.sharded
        self.save_to = save_to
        self.dim = index.dim
        self.n_buckets = index.n_buckets

    # -- reading a request ---------------------------------------------------------------
    def search_request(self, doc: dict) -> SearchRequest:
        """The checked search in a /search body."""
        _fields(doc, ("vectors", "k", "probes", "allow"), ("vectors",))
        q = _vectors(doc["vectors"], self.dim)
        k = _int(doc, "k", 10)
        if k < 1 or k > max(K_MAX, len(self.index)):
            raise RequestError(400, f"k={k} out of range: 1 .. {max(K_MAX, len(self.index))}")
        probes = _int(doc, "probes", None)
        if probes is not None and probes < 1:
            raise RequestError(400, f"probes={probes} out of range: at least 1")
        allow = doc.get("allow")
        allow = None if allow is None else _ids(allow, "allow")
        return SearchRequest(q, k, probes, allow)

    # -- answering -----------------------------------------------------------------------
    def search(self, reqs: list[SearchRequest]) -> list[dict]:
        """Answers to checked searches with one key (k, probes) and no allow
        filter, as one batched search; or to one request alone."""
        if len(reqs) == 1:
            r = reqs[0]
            return [self._answer(self._search(r.queries, r.k, r.probes, r.allow))]
        sizes = [r.queries.shape[0] for r in reqs]
        res = self._search(np.concatenate([r.queries for r in reqs]), reqs[0].k, reqs[0].probes, None)
        out, lo = [], 0
        for n in sizes:
            out.append(self._answer(res, slice(lo, lo + n)))
            lo += n
        return out

    def _search(self, q, k, probes, allow):
        try:
            if self.sharded:
                return self.index.search(q, k=k, probes=probes, allow=allow)
            return self.index.search(q, k=k, probes=probes, allow=allow, threads=self.threads)
        except InvalidInputError as e:  # what the parse could not see (e.g. a zero vector for cosine)
            raise RequestError(400, str(e)) from None

    @staticmethod
    def _answer(res, rows=slice(None)) -> dict:
        scores = res.scores[rows]
        s = scores.astype(object)
        s[~np.isfinite(scores)] = None
        return {"ids": res.ids[rows].tolist(), "scores": s.tolist(), "candidates": res.candidates[rows].tolist()}

    def add(self, doc: dict) -> dict:
        self._check_writable("add")
        _fields(doc, ("vectors", "ids", "replace"), ("vectors",))
        x = _vectors(doc["vectors"], self.dim)
        ids = None if doc.get("ids") is None else _ids(doc["ids"], "ids")
        replace = doc.get("replace", False)
        if type(replace) is not bool:
            raise RequestError(400, "replace must be true or false")
        first = self.index.next_id_
        try:
            self.index.add(x, ids=ids, replace=replace, threads=self.threads)
        except InvalidInputError as e:
            raise RequestError(400, str(e)) from None
        self._persist()
        out = ids if ids is not None else np.arange(first, first + x.shape[0], dtype=np.int64)
        return {"ids": out.tolist(), "n_items": len(self.index)}

    def remove(self, doc: dict) -> dict:
        self._check_writable("remove")
        _fields(doc, ("ids",), ("ids",))
        ids = _ids(doc["ids"], "ids")
        absent = ~self.index.idmap_.contains(ids)
        if absent.any():
            raise RequestError(400, f"unknown id {int(ids[np.argmax(absent)])}: not in the index")
        n = self.index.remove(ids)
        self._persist()
        return {"removed": n, "n_items": len(self.index)}

    def _check_writable(self, what: str) -> None:
        if not self.writable:
            why = "a sharded index is read-only" if self.sharded else "the service runs more than one replica"
            raise RequestError(409, f"/{what} is not available: {why}; change the index offline and serve it again")

    def _persist(self) -> None:
        if self.save_to is not None:
            self.index.save(self.save_to)

    def health(self) -> dict:
        if self.sharded:
            try:
                self.index.ping()
            except IrliError as e:
                raise RequestError(503, str(e)) from None
        return {"status": "ok", "n_items": len(self.index)}

    def info(self) -> dict:
        from .version import __version__

        cfg = self.index.config
        out = {"kind": "sharded" if self.sharded else "index", "n_items": len(self.index), "dim": self.dim,
               "metric": cfg.metric, "n_buckets": self.n_buckets, "n_reps": cfg.n_reps, "probes": cfg.probes,
               "preset": getattr(self.index, "preset", None) or self.index.layout.preset,
               "writable": self.writable, "irli_version": __version__}
        if self.sharded:
            out["n_shards"] = self.index.n_shards
        return out

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        """Everything but /search batching: (status, JSON answer)."""
        try:
            routes = {"/search": "POST", "/add": "POST", "/remove": "POST", "/health": "GET", "/info": "GET"}
            path = path.rstrip("/") or "/"
            if path not in routes:
                raise RequestError(404, f"no endpoint {path} (endpoints: {', '.join(routes)})")
            if method != routes[path]:
                raise RequestError(405, f"{path} takes {routes[path]}, not {method}")
            if path == "/health":
                return 200, self.health()
            if path == "/info":
                return 200, self.info()
            doc = parse_json(body)
            if path == "/search":
                return 200, self.search([self.search_request(doc)])[0]
            return 200, (self.add(doc) if path == "/add" else self.remove(doc))
        except RequestError as e:
            return e.status, {"error": e.message}
        except IrliError as e:  # a part down, or the like
            return 503, {"error": " ".join(str(e).split())}

