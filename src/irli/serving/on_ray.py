"""`irli serve --ray`: the same app (irli.serving.app) on Ray Serve, for
replicas and sharded indexes on a cluster.

Each replica loads the index (memory-mapped; a sharded index opens one Ray
actor per part, owned by the replica) and runs the app: the same
endpoints, limits, token and batching as on one machine. Serve restarts a
replica that dies or fails its health check. Two ways in:
  * one replica (the default): the replica serves host:port itself, with
    the server of irli.serving.server (uvicorn) in a thread of its actor;
    Serve runs no HTTP proxy (its path costs about 3.5 ms per request here);
  * more replicas: Serve's HTTP proxy listens on host:port and spreads the
    requests over them (the app behind `@serve.ingress`).
Writes need one replica and an unsharded index.

Without `ray_address`, a private Ray cluster is started for this process
(never one another service runs), with Serve's Python proxy (not the
HAProxy ingress, which listens on fixed ports shared by every service on
the host).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time

from ray import serve

from ..distributed.executor import RayExecutor
from ..errors import IrliError
from . import processes
from .app import App
from .options import ServeOptions
from .server import ServeError, Server, bind, open_index, warm
from .service import Service

APP = "irli"
# Ray Serve's own limits, raised so that a busy machine still starts it
_RAY_ENV = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "30",
            "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0",
            "RAY_SERVE_SHUTDOWN_TIER_TIMEOUT_S": "10"}


def _sharded(path: str, options: ServeOptions):
    """The sharded index at `path` with its parts on Ray actors, or None
    for an index of one directory."""
    from ..distributed.layout import remote
    from ..io.storage import read_manifest

    if remote(path) is not None or read_manifest(path).get("task") == "sharded":
        from ..distributed.sharded import ShardedIndex

        return ShardedIndex.open(path, executor=RayExecutor(address="auto"), timeout_s=options.part_timeout_s)
    return None


@serve.ingress()
class IndexServer:
    """The Ray Serve deployment: one replica of the app."""

    def __init__(self, path: str, options: ServeOptions) -> None:
        index = _sharded(path, options) or open_index(path)
        writable = options.replicas == 1
        service = Service(index, options, path=path if writable and not hasattr(index, "layout") else None,
                          writable=writable)
        warm(service)
        self._app = App(service, options)

    def __serve_build_asgi_app__(self) -> App:
        return self._app

    def check_health(self) -> None:
        """Serve's health check: a sharded index's parts must answer."""
        if self._app.service.sharded:
            self._app.service.health()


class DirectServer:
    """The Ray Serve deployment of one replica that listens itself: the
    server of irli.serving.server in a thread of the replica's actor."""

    def __init__(self, path: str, options: ServeOptions) -> None:
        self._server = Server(_sharded(path, options) or path, options)
        self._server.start()

    def check_health(self) -> None:
        """Serve's health check: the HTTP server runs, a sharded index's parts answer."""
        if not self._server.running:
            raise ServeError("the replica's HTTP server stopped")
        if self._server.app.service.sharded:
            self._server.app.service.health()

    def __del__(self) -> None:  # Serve stops a replica: drain and let go of the port and the index
        self._server.stop()


def application(path: str | os.PathLike, options: ServeOptions | None = None):
    """The Ray Serve application serving the index at `path`."""
    options = options or ServeOptions()
    deployment = serve.deployment(
        DirectServer if options.replicas == 1 else IndexServer, name="IndexServer", num_replicas=options.replicas,
        ray_actor_options={"num_cpus": options.replica_cpus},
        max_ongoing_requests=max(64, 4 * options.max_batch), health_check_period_s=10,
        health_check_timeout_s=max(30.0, 2 * options.part_timeout_s))
    return deployment.bind(os.fspath(path), options)


def start(path: str | os.PathLike, options: ServeOptions | None = None, ray_address: str | None = None) -> str:
    """Serve the index at `path` on Ray Serve at options.host:port (a
    private local Ray cluster, or the one at `ray_address`); returns the
    URL once the replicas answer."""
    import ray

    options = options or ServeOptions()
    if options.port == 0:  # any free port: found here, since the replica listens in another process
        sock = bind(options.host, 0)
        options = dataclasses.replace(options, port=sock.getsockname()[1])
        sock.close()
    elif not ray.is_initialized():  # (a Serve running in this process's cluster may hold the port itself)
        bind(options.host, options.port).close()  # a busy port is an error now, not a Ray traceback later
    if ray_address is None:
        for key, value in _RAY_ENV.items():
            os.environ.setdefault(key, value)
    RayExecutor(address=ray_address or "local", quiet=True).ray()
    for name in ("ray", "ray.serve"):  # irli serve says what matters itself, in one line
        logging.getLogger(name).setLevel(logging.WARNING)
    direct = options.replicas == 1
    if direct:
        serve.start(proxy_location="Disabled")
    else:
        serve.start(http_options={"host": options.host, "port": options.port,
                                  "request_timeout_s": options.request_timeout_s + 5,
                                  "keep_alive_timeout_s": options.keep_alive_s})
    try:
        serve.run(application(path, options), name=APP, route_prefix=None if direct else "/", blocking=False)
    except Exception as e:  # Ray wraps the replica's error in pages of traceback: say the cause
        raise ServeError(f"the service did not start: {_cause(e)}") from None
    url = f"http://{options.host}:{options.port}"
    _wait_listening(url, 30.0)
    return url


def _wait_listening(url: str, timeout_s: float) -> None:
    """Wait until `url`/health answers: Serve keeps the HTTP options it was
    first started with in a cluster, so a second start may listen elsewhere."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServeError(f"nothing answers at {url} (is Serve already running in this Ray cluster with "
                             "other HTTP options?)")
        time.sleep(0.2)


def _cause(e: BaseException) -> str:
    """The innermost irli error (or the last line) of a Ray failure."""
    seen = e
    while seen is not None:
        if isinstance(seen, IrliError):
            return " ".join(str(seen).split())
        seen = getattr(seen, "cause", None) or seen.__cause__
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(e).__name__


def stop(timeout_s: float = 60.0) -> None:
    """Stop the service (Serve in this Ray cluster; the cluster stays) and
    wait until its controller is gone, so a new start begins afresh."""
    import ray

    serve.shutdown()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
        if not any("SERVE_CONTROLLER" in n or "SERVE_PROXY" in n for n in names):
            return
        time.sleep(0.2)


def run(path: str | os.PathLike, options: ServeOptions | None = None, ray_address: str | None = None,
        ready=None) -> None:
    """`start`, call `ready(url)`, serve until SIGTERM or SIGINT, then stop
    (and end the private Ray cluster)."""
    import ray

    stopping: list[int] = []  # a flag the signal handler sets (an Event would deadlock in its wait)

    def catch() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, _: stopping.append(signum))

    catch()
    try:
        url = start(path, options, ray_address)
        catch()  # again: starting Ray installs handlers of its own
        if ready is not None:
            ready(url)
        while not stopping:
            time.sleep(0.2)
    finally:
        cluster = processes.tree(os.getpid()) if ray_address is None else {}
        try:
            stop()
        finally:
            if ray_address is None:
                ray.shutdown()
                processes.end(cluster)  # the raylet's agents notice its end only tens of seconds later
