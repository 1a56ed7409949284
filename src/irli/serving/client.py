"""irli.Client: search and change an `irli serve` service with the
signatures of Index.search, add and remove. Requests travel as msgpack
with float32 rows as bytes (no float text to print or parse), over one
kept-alive connection per thread."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse

import msgspec
import numpy as np

from ..config import IndexConfig
from ..errors import InvalidInputError, IrliError
from ..index.filters import allow_form
from ..result import SearchResult
from ..validation import as_ids, as_matrix
from .protocol import MSGPACK

# statuses worth another try for a request that may be repeated: none
# ready, a lost replica, or no answer in time
_RETRY = (408, 500, 502, 503, 504)


class ServiceError(IrliError):
    """The service refused a request (status 4xx: a bad request) or could
    not answer it (5xx, connection refused or timed out, after retries)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"{status or 'no answer'}: {message}")
        self.status = status


class BadRequestError(ServiceError, InvalidInputError):
    """A request the service refused as bad input (400, 413): caught as
    InvalidInputError too, as Index would raise it."""


def _error(status: int | None, message: str) -> ServiceError:
    return (BadRequestError if status in (400, 413) else ServiceError)(status, message)


class Client:
    """A client of the service at `url` ("http://host:port").

    token: the service's bearer token (None: IRLI_TOKEN if set). timeout_s
    bounds each request; searches, /health and /info (which change
    nothing) are tried again up to `retries` times on a connection error
    or a 5xx answer, `backoff_s` apart (doubling); /add and /remove are
    not. Errors raise ServiceError with the service's one-line message;
    bad arguments raise the InvalidInputError Index would.
    """

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 30.0, retries: int = 3,
                 backoff_s: float = 0.2) -> None:
        import os

        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInputError(f"url must be http://host:port, got {url!r}")
        self.url, self.timeout_s, self.retries, self.backoff_s = url.rstrip("/"), timeout_s, retries, backoff_s
        self._parts = parts
        token = token if token is not None else os.environ.get("IRLI_TOKEN")
        self._headers = {"Content-Type": MSGPACK, "Accept": MSGPACK}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._local = threading.local()
        self._info: dict | None = None

    # -- transport -------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
            conn = cls(self._parts.hostname, self._parts.port, timeout=self.timeout_s)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _call(self, method: str, path: str, doc: dict | None = None, retry: bool = True) -> dict:
        data = None if doc is None else msgspec.msgpack.encode(doc)
        wait = self.backoff_s
        tries = self.retries + 1 if retry else 1
        for attempt in range(tries):
            try:
                conn = self._connection()
                conn.request(method, self._parts.path.rstrip("/") + path, body=data, headers=self._headers)
                resp = conn.getresponse()
                status, body, ctype = resp.status, resp.read(), resp.getheader("Content-Type", "")
                if resp.will_close:
                    self._drop()
            except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out
                self._drop()
                error = ServiceError(None, f"{self.url}{path}: {getattr(e, 'strerror', None) or e}")
                if not retry and not isinstance(e, ConnectionRefusedError):
                    raise error from None  # a change may have been applied: never sent twice
            else:
                if status == 200:
                    return msgspec.msgpack.decode(body) if ctype.startswith(MSGPACK) else msgspec.json.decode(body)
                error = _error(status, _message(body))
                if status not in _RETRY:
                    raise error
            if attempt < tries - 1:
                time.sleep(wait)
                wait *= 2
        raise error

    # -- the index's calls -------------------------------------------------------------
    def search(self, queries, k: int = 10, probes: int | None = None, allow=None,
               refine: int | None = None) -> SearchResult:
        """Like Index.search: queries float (n, d) or (d,); allow in any
        form Index.search takes (ids, a bool mask by id, one id array per
        query, a 2-D bool mask). Returns SearchResult(ids int64 (n, k),
        scores float32 (n, k)) with .candidates."""
        q = as_matrix(queries, "queries", allow_1d=True, finite=False)
        doc = {"vectors": q.astype("<f4").tobytes(), "dim": q.shape[1], "k": _int(k, "k")}
        if probes is not None:
            doc["probes"] = _int(probes, "probes")
        if refine is not None:
            doc["refine"] = _int(refine, "refine")
        if allow is not None:
            doc["allow"] = _allow(allow, q.shape[0])
        ans = self._call("POST", "/search", doc)
        n, kk = ans["shape"]
        return SearchResult(np.frombuffer(ans["ids"], "<i8").reshape(n, kk).astype(np.int64),
                            np.frombuffer(ans["scores"], "<f4").reshape(n, kk).astype(np.float32),
                            np.frombuffer(ans["candidates"], "<i8").astype(np.int64))

    def add(self, vectors, ids=None, replace: bool = False) -> np.ndarray:
        """Add items (unsharded index, one writer); returns their ids, int64.
        Saved by the service before it answers."""
        x = as_matrix(vectors, "vectors", allow_1d=True, finite=False)
        doc = {"vectors": x.astype("<f4").tobytes(), "dim": x.shape[1], "replace": bool(replace)}
        if ids is not None:
            doc["ids"] = as_ids(ids, x.shape[0]).tolist()
        return np.asarray(self._call("POST", "/add", doc, retry=False)["ids"], dtype=np.int64)

    def remove(self, ids) -> int:
        """Remove items by id; returns how many were removed."""
        return int(self._call("POST", "/remove", {"ids": as_ids(ids).tolist()}, retry=False)["removed"])

    def health(self) -> dict:
        return self._call("GET", "/health")

    def info(self) -> dict:
        return self._call("GET", "/info")

    # -- irli.Searchable -------------------------------------------------------------
    def _fixed(self) -> dict:
        """/info, asked once: what does not change while the service lives."""
        if self._info is None:
            self._info = self.info()
        return self._info

    @property
    def dim(self) -> int:
        """The service's vector dimension."""
        return int(self._fixed()["dim"])

    @property
    def config(self) -> IndexConfig:
        """The IndexConfig of the index the service serves."""
        return IndexConfig.from_dict(self._fixed()["config"])

    def __len__(self) -> int:
        """Items searchable now (asked of the service each time)."""
        return int(self.info()["n_items"])

    def close(self) -> None:
        """Close this thread's connection."""
        self._drop()


def _message(body: bytes) -> str:
    try:
        message = msgspec.json.decode(body).get("error")
    except (msgspec.DecodeError, AttributeError):
        message = None
    return " ".join(str(message or body[:500].decode(errors="replace")).split())


def _int(v, name: str) -> int:
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        return int(v)
    raise InvalidInputError(f"{name} must be an integer, got {v!r}")


def _allow(allow, n: int) -> list:
    """`allow` as the service reads it (ids, booleans, or one id list per
    query), checked as Index.search checks it."""
    form, a = allow_form(allow, n)
    if form == "lists":
        return [x.tolist() for x in a]
    if form == "masks":
        return [np.flatnonzero(row).tolist() for row in a]
    return a.tolist()
