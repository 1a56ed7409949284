"""`irli serve` on one machine: the app (irli.serving.app) in uvicorn, in
this process, with no Ray.

The port is bound before the index loads (a busy port is an error at
once) and listens once the index is loaded and its kernels are warm, so
the first request is answered as fast as the rest. Slow clients are
dropped: a request's line and headers must arrive within
header_timeout_s and 64 KiB (408 / 431, then the connection closes),
its body within body_timeout_s (the app), and an idle kept-alive
connection closes after keep_alive_s; beyond max_connections open
connections, new ones get a 503. SIGTERM and Ctrl-C stop accepting,
let requests in flight finish for up to drain_s, and return.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import resource
import signal
import socket
import threading
from pathlib import Path

import numpy as np
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..errors import IrliError
from .app import App, error_body
from .options import ServeOptions
from .protocol import JSON
from .service import Service

log = logging.getLogger("irli.serve")
MAX_HEAD = 64 << 10  # bytes of request line and headers


class ServeError(IrliError):
    """The service could not start: a busy port, an index it cannot serve."""


def _reply(transport, status: int, reason: str, message: str) -> None:
    """Write a one-line JSON error and close the connection."""
    if transport.is_closing():
        return
    body = error_body(message)
    transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                    % (status, reason.encode(), JSON.encode(), len(body), body))
    transport.close()


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with bounds on what one client may hold:
    the request line and headers within `header_timeout_s` and MAX_HEAD
    bytes, the body within `body_timeout_s` after them, at most
    `max_connections` connections, and JSON for the errors uvicorn writes
    itself."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0
    max_connections = 16384

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_timer = None
        self._head_bytes = 0
        self._in_body = False
        if len(self.connections) > self.max_connections:
            _reply(transport, 503, "Service Unavailable",
                   f"over {self.max_connections} open connections; try again later")
            return
        self._start_head()

    def _start_head(self) -> None:
        self._head_bytes = 0
        self._in_body = False
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_late)

    def _stop_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self._in_body:
            _reply(self.transport, 408, "Request Timeout",
                   f"the request body did not arrive within {self.body_timeout_s:g} s")
        else:
            _reply(self.transport, 408, "Request Timeout",
                   f"the request line and headers did not arrive within {self.header_timeout_s:g} s")

    def data_received(self, data: bytes) -> None:
        in_head = self._head_timer is not None and not self._in_body
        super().data_received(data)
        if in_head and self._head_timer is not None and not self._in_body:  # the headers are still not complete
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._stop_head()
                _reply(self.transport, 431, "Request Header Fields Too Large",
                       f"the request line and headers exceed {MAX_HEAD} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a new request on a kept-alive connection
            self._start_head()

    def on_headers_complete(self) -> None:
        self._stop_head()  # the body's own clock starts
        self._in_body = True
        self._head_timer = self.loop.call_later(self.body_timeout_s, self._head_late)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_head()
        super().on_message_complete()

    def connection_lost(self, exc) -> None:
        self._stop_head()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        _reply(self.transport, 400, "Bad Request", msg)


class _Uvicorn(uvicorn.Server):
    """uvicorn.Server that handles SIGTERM and SIGINT by draining and
    returning (uvicorn re-raises the signal after its shutdown)."""

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        before = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound (not yet listening) to host:port; ServeError
    naming the address when it is taken or not local."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ServeError(f"cannot listen on {host!r}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not SO_REUSEPORT: one service per port
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ServeError(f"{host}:{port} is in use (another service?); pick another --port, or 0 for any "
                             "free one") from None
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def open_index(path: str | os.PathLike):
    """The vector index at `path` for serving (memory-mapped), or
    ServeError for what cannot be served: a label index, a sharded one
    without Ray (irli serve --ray)."""
    from ..distributed.layout import remote
    from ..io.storage import read_manifest
    from ..loader import load

    if remote(path) is not None or read_manifest(path).get("task") == "sharded":
        raise ServeError(f"{path}: a sharded index; serve it with --ray (its parts run as Ray actors)")
    from ..labels.index import LabelIndex

    index = load(path)
    if isinstance(index, LabelIndex):
        raise ServeError(f"{path}: a label index; irli serve serves vector indexes")
    return index


def warm(service: Service) -> None:
    """Compile every path a request can take before the first request:
    one query, a batch, a filtered search and, where the service writes,
    an add and a remove and the searches after them (on a miniature of the
    index with the same array types: the index itself is not changed)."""
    index = service.index
    if service.sharded or not len(index):
        return
    q = index.get_vectors(index.ids[:1])
    trials = [index]
    if service.writable:
        trial = _miniature(index)
        trial.add(q, threads=service.options.threads)
        trial.remove(trial.ids[-1:])
        trials.append(trial)
    for ix in trials:
        ix.search(q[0], k=10, threads=service.options.threads)
        ix.search(q.repeat(32, axis=0), k=10, threads=service.options.threads)
        ix.search(q, k=10, allow=ix.ids[:1])


def _miniature(index, n: int = 256):
    """An index of the first `n` stored items of `index`, with its config,
    routers, centroids and codebooks and arrays of the same types: changing
    it compiles what changing `index` will run, at no memory cost."""
    from ..index.index import Index
    from ..model.partition import InvertedLists

    n = min(n, index.vectors_.shape[0])
    assign = index.assign_[:, :, :n]
    lists = InvertedLists.from_assignments(np.ascontiguousarray(assign), index.n_buckets)
    codes = None if index.codes_ is None else index.codes_.extended(index.codes_.codes[:, :, :n], lists, assign)
    live = index.live_[:n]
    return Index.from_arrays(index.config, index.preset, index.vectors_[:n], index.ids_[:n], assign, index.centroids_,
                             lists, index.routers_, codes, dict(index.history_), live=None if live.all() else live,
                             sqnorms=index.sqnorms_[:n] if index.config.metric_type.l2 else None,
                             budget=index.budget_)


def _trim() -> None:
    """Hand the heap that loading and warming up freed back to the system
    (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def raise_fd_limit(want: int) -> None:
    """Let this process hold `want` open files if the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    goal = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < goal:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (goal, hard))


class Server:
    """One index over HTTP in this process.

    index: a path (loaded memory-mapped; changes are saved there, under
    its WriterLock) or an `Index` in memory (changes stay in memory).

    >>> server = Server("glove.index", ServeOptions(port=0))
    >>> server.run()                       # until SIGTERM / Ctrl-C; or:
    >>> url = server.start(); ...; server.stop()   # in a thread
    """

    def __init__(self, index, options: ServeOptions | None = None) -> None:
        self.options = options or ServeOptions()
        self.sock = bind(self.options.host, self.options.port)
        try:
            path = None
            if isinstance(index, (str, os.PathLike)):
                path = Path(index)
                index = open_index(path)
            if hasattr(index, "check_fitted"):
                index.check_fitted()
            service = Service(index, self.options, path=path)
            warm(service)
            _trim()
            self.app = App(service, self.options)
        except BaseException:
            self.sock.close()
            raise
        self.sock.listen(4096)  # connections queue from here on; uvicorn accepts them once it runs
        raise_fd_limit(self.options.max_connections + 256)
        protocol = type("Protocol", (GuardedProtocol,), {"header_timeout_s": self.options.header_timeout_s,
                                                          "body_timeout_s": self.options.body_timeout_s,
                                                          "max_connections": self.options.max_connections})
        self.app.times_bodies = False  # the protocol does
        config = uvicorn.Config(self.app, http=protocol, lifespan="on", log_level="warning", access_log=False,
                                timeout_keep_alive=self.options.keep_alive_s,
                                timeout_graceful_shutdown=self.options.drain_s, server_header=False,
                                date_header=False, backlog=4096)
        self._uvicorn = _Uvicorn(config)
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether it serves (started and not stopped)."""
        return self._uvicorn.started and not self._uvicorn.should_exit

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT (or `stop()` from another thread),
        then drain and return."""
        self._uvicorn.run(sockets=[self.sock])

    def start(self, timeout_s: float = 30.0) -> str:
        """Serve in a background thread; returns the URL once it listens."""
        self._thread = threading.Thread(target=self.run, name="irli-serve", daemon=True)
        self._thread.start()
        waited = threading.Event()
        for _ in range(int(timeout_s / 0.01)):
            if self._uvicorn.started or not self._thread.is_alive():
                break
            waited.wait(0.01)
        if not self._uvicorn.started:
            raise ServeError(f"the server did not start within {timeout_s:g} s")
        return self.url

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop a server started with `start()` (requests in flight finish)."""
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
