"""irli.Client: search an `irli serve` service with the signature of
Index.search (standard library only: no Ray, no HTTP package)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np

from .errors import IrliError
from .result import SearchResult


class ServiceError(IrliError):
    """The service refused a request (status 4xx: a bad request) or could
    not answer it (5xx, connection refused or timed out, after retries)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"{status or 'no answer'}: {message}")
        self.status = status


# statuses worth another try for a request that may be repeated: the proxy
# lost the replica (500, 502), none ready (503), or it timed out (504, 408)
_RETRY = (408, 500, 502, 503, 504)


class Client:
    """A client of the service at `url` ("http://host:port").

    timeout_s bounds each HTTP request; searches, /health and /info (which
    change nothing) are retried up to `retries` times on a connection error
    or a 5xx answer, `backoff_s` apart (doubling); /add and /remove are not
    retried. Errors raise ServiceError with the service's one-line message.
    """

    def __init__(self, url: str, timeout_s: float = 30.0, retries: int = 3, backoff_s: float = 0.2) -> None:
        self.url, self.timeout_s, self.retries, self.backoff_s = url.rstrip("/"), timeout_s, retries, backoff_s

    def _call(self, method: str, path: str, doc: dict | None = None, retry: bool = True) -> dict:
        data = None if doc is None else json.dumps(doc).encode()
        wait = self.backoff_s
        for attempt in range(self.retries + 1 if retry else 1):
            req = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                body = e.read()
                try:
                    message = json.loads(body).get("error") or body.decode(errors="replace")
                except (ValueError, AttributeError):
                    message = body.decode(errors="replace")
                error = ServiceError(e.code, " ".join(str(message).split())[:500])
                if e.code not in _RETRY:
                    raise error from None
            except (urllib.error.URLError, OSError) as e:  # refused, reset, timed out
                reason = getattr(e, "reason", e)
                error = ServiceError(None, f"{self.url}{path}: {reason}")
            if attempt < (self.retries if retry else 0):
                time.sleep(wait)
                wait *= 2
        raise error

    def search(self, queries, k: int = 10, probes: int | None = None, allow=None) -> SearchResult:
        """Like Index.search: queries float (n, d) or (d,); allow: ids (one
        filter for every query). Returns SearchResult(ids int64 (n, k),
        scores float32 (n, k)) with .candidates."""
        q = np.asarray(queries, dtype=np.float32)
        num = (lambda v: int(v) if isinstance(v, np.integer) else v)
        doc = {"vectors": q.tolist(), "k": num(k), "probes": num(probes)}
        if allow is not None:
            doc["allow"] = np.asarray(allow, dtype=np.int64).ravel().tolist()
        ans = self._call("POST", "/search", doc)
        ids = np.asarray(ans["ids"], dtype=np.int64).reshape(-1, k)
        scores = np.array([[np.nan if s is None else s for s in row] for row in ans["scores"]],
                          dtype=np.float32).reshape(ids.shape)
        pad = ids < 0
        if pad.any():
            scores[pad] = np.inf if self.info_cached().get("metric") == "l2" else -np.inf
        return SearchResult(ids, scores, np.asarray(ans["candidates"], dtype=np.int64))

    def add(self, vectors, ids=None, replace: bool = False) -> np.ndarray:
        """Add items (unsharded index, one replica); returns their ids, int64."""
        doc = {"vectors": np.asarray(vectors, dtype=np.float32).tolist(), "replace": replace}
        if ids is not None:
            doc["ids"] = np.asarray(ids, dtype=np.int64).ravel().tolist()
        return np.asarray(self._call("POST", "/add", doc, retry=False)["ids"], dtype=np.int64)

    def remove(self, ids) -> int:
        """Remove items by id; returns how many were removed."""
        doc = {"ids": np.asarray(ids, dtype=np.int64).ravel().tolist()}
        return int(self._call("POST", "/remove", doc, retry=False)["removed"])

    def health(self) -> dict:
        return self._call("GET", "/health")

    def info(self) -> dict:
        return self._call("GET", "/info")

    def info_cached(self) -> dict:
        if not hasattr(self, "_info"):
            self._info = self.info()
        return self._info
