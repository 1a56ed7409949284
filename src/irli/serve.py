"""`irli serve`: a saved index, single or sharded, as an HTTP service on Ray
Serve (the requests and answers are in irli.service).

Each replica loads the index (memory-mapped; a sharded index opens one Ray
actor per part, owned by the replica). Concurrent /search requests with the
same k and probes and no allow filter are batched (`serve.batch`) into one
search of up to `max_batch` vectors, waiting at most `batch_wait_ms` for a
batch to fill. Serve restarts a replica that dies or fails its health
check; the HTTP proxy gives up on a request after `request_timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from ray import serve

from .distributed import RayExecutor
from .service import MAX_BODY, RequestError, Service, parse_json

APP = "irli"
log = logging.getLogger("irli.serve")


@dataclass
class ServeOptions:
    """How the service runs. replicas: copies of the index serving requests;
    replica_cpus: CPUs each replica reserves (and search threads, at least
    1); max_batch: vectors per batched search; batch_wait_ms: how long a
    batch waits to fill; max_body: largest request body, bytes;
    request_timeout_s: the HTTP proxy's limit per request; part_timeout_s:
    a sharded index's limit per call to a part."""

    replicas: int = 1
    replica_cpus: float = 1.0
    max_batch: int = 256
    batch_wait_ms: float = 1.0
    max_body: int = MAX_BODY
    request_timeout_s: float = 30.0
    part_timeout_s: float = 10.0


def _open(path: str, options: ServeOptions):
    """The index at `path` and whether it may change."""
    from .loader import load
    from .shards import remote
    from .storage import read_manifest

    if remote(path) is not None or read_manifest(path).get("task") == "sharded":
        from .sharded import ShardedIndex

        return ShardedIndex.open(path, executor=RayExecutor(address="auto"), timeout_s=options.part_timeout_s)
    index = load(path)
    if not hasattr(index, "search"):
        raise RequestError(400, f"{path}: a label index; irli serve serves vector indexes")
    return index


def _rows(reqs) -> int:
    return sum(r.queries.shape[0] for r in reqs)


class IndexServer:
    """The Ray Serve deployment: one replica of the service."""

    def __init__(self, path: str, options: ServeOptions) -> None:
        self.options = options
        index = _open(path, options)
        writable = options.replicas == 1
        self.service = Service(index, threads=max(1, int(options.replica_cpus)), writable=writable,
                               save_to=path if writable and not hasattr(index, "layout") else None)
        self._batched.set_max_batch_size(options.max_batch)
        self._batched.set_batch_wait_timeout_s(options.batch_wait_ms / 1000)
        self._lock = asyncio.Lock()

    async def __call__(self, request):
        from starlette.responses import JSONResponse

        try:
            return await self._respond(request)
        except Exception as e:  # a bug, not a bad request: logged, and answered in one line
            log.exception("irli serve: request failed")
            return JSONResponse({"error": f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]}"},
                                status_code=500)

    async def _respond(self, request):
        from starlette.responses import JSONResponse

        body, size = [], 0
        async for chunk in request.stream():  # read to the end even when over the limit: a clean 413
            size += len(chunk)
            if size <= self.options.max_body:
                body.append(chunk)
        if size > self.options.max_body:
            return JSONResponse({"error": f"request body of {size} bytes is over the limit of "
                                 f"{self.options.max_body}"}, status_code=413)
        body = b"".join(body)
        path = request.url.path.rstrip("/") or "/"
        if path == "/search" and request.method == "POST":
            try:
                req = self.service.search_request(parse_json(body, self.options.max_body))
                if req.allow is None and req.queries.shape[0] < self.options.max_batch:
                    answer = await self._batched(req)
                    if isinstance(answer, RequestError):
                        raise answer
                else:
                    answer = (await asyncio.to_thread(self.service.search, [req]))[0]
                return JSONResponse(answer)
            except RequestError as e:
                return JSONResponse({"error": e.message}, status_code=e.status)
        if path in ("/add", "/remove"):  # changes run one at a time, each saved before it is answered
            async with self._lock:
                status, answer = await asyncio.to_thread(self.service.handle, request.method, path, body)
        else:
            status, answer = await asyncio.to_thread(self.service.handle, request.method, path, body)
        return JSONResponse(answer, status_code=status)

    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.001, batch_size_fn=_rows)
    async def _batched(self, reqs):
        """serve.batch target: checked searches -> answers, one batched
        search per (k, probes)."""
        groups: dict = {}
        for i, r in enumerate(reqs):
            groups.setdefault(r.key, []).append(i)
        out: list = [None] * len(reqs)
        for rows in groups.values():
            try:
                answers = await asyncio.to_thread(self.service.search, [reqs[i] for i in rows])
            except RequestError:  # what only the search could see: each request alone
                answers = []
                for i in rows:
                    try:
                        answers.append((await asyncio.to_thread(self.service.search, [reqs[i]]))[0])
                    except RequestError as err:
                        answers.append(err)
            for i, a in zip(rows, answers):
                out[i] = a
        return out

    def check_health(self) -> None:
        """Serve's health check: a sharded index's parts must answer."""
        if self.service.sharded:
            self.service.health()


def application(path: str | os.PathLike, options: ServeOptions | None = None):
    """The Ray Serve application serving the index at `path`."""
    options = options or ServeOptions()
    if options.replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {options.replicas}")
    deployment = serve.deployment(
        IndexServer, name="IndexServer", num_replicas=options.replicas,
        ray_actor_options={"num_cpus": options.replica_cpus},
        max_ongoing_requests=max(64, 4 * options.max_batch), health_check_period_s=10,
        health_check_timeout_s=max(30.0, 2 * options.part_timeout_s))
    return deployment.bind(os.fspath(path), options)


def start(path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, options: ServeOptions | None = None,
          ray_address: str | None = None, blocking: bool = False, ingress: str = "haproxy") -> str:
    """Serve the index at `path` on http://host:port (Ray started or joined
    as `ray_address` says, as for RayExecutor); returns the URL. With
    `blocking`, serve until interrupted.

    ingress: "haproxy" (when this call starts Ray: Serve's HAProxy ingress
    sending requests straight to the replicas, about 1 ms per request here
    against about 7 ms through) "proxy", Serve's Python HTTP proxy. Both are
    Ray Serve switches read when Ray starts; a cluster joined with
    `ray_address` keeps what its `ray start` was given (set
    RAY_SERVE_ENABLE_DIRECT_INGRESS=1 and RAY_SERVE_ENABLE_HA_PROXY=1 there)."""
    import ray

    if ingress not in ("haproxy", "proxy"):
        raise ValueError(f"ingress must be 'haproxy' or 'proxy', got {ingress!r}")
    if ingress == "haproxy" and not ray.is_initialized() and ray_address is None:
        for flag in ("RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_ENABLE_HA_PROXY"):
            os.environ.setdefault(flag, "1")
    RayExecutor(address=ray_address).ray()
    options = options or ServeOptions()
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": options.request_timeout_s})
    serve.run(application(path, options), name=APP, route_prefix="/", blocking=blocking)
    return f"http://{host}:{port}"


def stop() -> None:
    """Stop the service (and Serve in this Ray cluster)."""
    serve.shutdown()
