"""How `irli serve` runs: one dataclass of settings shared by the app, the
server on one machine and the Ray Serve deployment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ConfigError

# largest request body, bytes (about 40,000 vectors of 50 floats as JSON text)
MAX_BODY = 16 << 20


@dataclass
class ServeOptions:
    """Settings of the service (CLI flags of `irli serve` in brackets).

    Where it listens: host [--host] (127.0.0.1: this machine only), port
    [--port] (0: any free port).
    Who may do what: token [--token, or IRLI_TOKEN]: a bearer token every
    request but /health must carry (None: no check); read_only
    [--read-only]: /add and /remove answer 403.
    What one request may cost: max_body bytes (413 beyond), max_vectors
    query or item vectors (413), max_results n x k result entries (413).
    Slow clients: header_timeout_s to send a request's headers,
    body_timeout_s to send its body (408 after it), keep_alive_s idle
    between requests; request_timeout_s for an answer (504 after it);
    max_connections open at once (503 beyond).
    Searching: threads per search (None: all cores); max_batch query rows
    searched together when requests queue up (no wait when none do);
    inline_rows [--inline-rows]: a search of at most this many queries
    without `allow` that finds the search thread idle runs on the event
    loop, since the hop to the thread and back costs more than the search
    (0.1 ms against 0.065 ms on GloVe on 2 cores: 1.7x the QPS at 8
    clients); 0 sends every search to the thread, which keeps the loop for
    HTTP alone (better where more cores serve than clients take).
    Stopping: drain_s to finish requests in flight after SIGTERM or Ctrl-C.
    On Ray Serve (--ray): replicas, replica_cpus, part_timeout_s (a sharded
    index's limit per call to a part).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    read_only: bool = False
    max_body: int = MAX_BODY
    max_vectors: int = 4096
    max_results: int = 1 << 20
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 30.0
    request_timeout_s: float = 30.0
    max_connections: int = 16384
    threads: int | None = None
    max_batch: int = 256
    inline_rows: int = 16
    drain_s: float = 5.0
    replicas: int = 1
    replica_cpus: float = 1.0
    part_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.token is None:
            self.token = os.environ.get("IRLI_TOKEN") or None
        for name in ("max_body", "max_vectors", "max_results", "max_connections", "max_batch", "replicas"):
            v = getattr(self, name)
            if type(v) is not int or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s", "request_timeout_s", "drain_s",
                     "replica_cpus", "part_timeout_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                raise ConfigError(f"{name} must be a positive number, got {v!r}")
        if type(self.port) is not int or not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0 .. 65535, got {self.port!r}")
        if type(self.inline_rows) is not int or self.inline_rows < 0:
            raise ConfigError(f"inline_rows must be an integer >= 0, got {self.inline_rows!r}")
        if self.threads is not None and (type(self.threads) is not int or self.threads < 1):
            raise ConfigError(f"threads must be a positive integer or None, got {self.threads!r}")
        if self.token is not None and (not isinstance(self.token, str) or not self.token.isprintable()
                                       or " " in self.token):
            raise ConfigError("token must be printable text without spaces")
