"""`irli serve`: an index over HTTP, in this process or on Ray Serve."""

from __future__ import annotations

import sys
from typing import Annotated

from cyclopts import Parameter

from .options import Address, Flag, Positive, Threads


def serve(index: str, /, *, host: Annotated[str, Parameter(metavar="HOST")] = "127.0.0.1", port: int = 8000,
          token: Annotated[str | None, Parameter(env_var="IRLI_TOKEN", metavar="TOKEN")] = None,
          read_only: Flag = False, threads: Threads = None, max_batch: Positive = 256, inline_rows: int = 16,
          max_body: Positive = 16 << 20, max_vectors: Positive = 4096, max_results: Positive = 1 << 20,
          header_timeout: float = 10.0, body_timeout: float = 30.0, request_timeout: float = 30.0,
          drain: float = 5.0, ray: Flag = False, replicas: Positive = 1, replica_cpus: float = 1.0,
          ray_address: Address = None) -> int:
    """Serve an index over HTTP.

    POST /search, /add, /remove, GET /health, /info (JSON, msgpack or .npy bodies). By default in this process
    (uvicorn), listening on 127.0.0.1 only; with --ray (implied by --replicas, --ray-address or a sharded
    index) on Ray Serve. Changes are saved to INDEX before they are answered. SIGTERM or Ctrl-C finishes the
    requests in flight and exits.

    Parameters
    ----------
    index
        index directory (from irli build or Index.save), or a sharded index
    host
        address to listen on (0.0.0.0: every interface)
    port
        port to listen on (0: any free port)
    token
        bearer token every request but /health must carry
    read_only
        refuse /add and /remove (403)
    threads
        threads per search (default: all cores)
    max_batch
        query rows searched together under load
    inline_rows
        searches of at most this many queries run on the event loop when the search thread is idle (0: all on
        the thread)
    max_body
        largest request body, bytes
    max_vectors
        most vectors in one request
    max_results
        most results (queries x k) per request
    header_timeout
        seconds a client has to send its headers
    body_timeout
        seconds a client has to send its body
    request_timeout
        seconds before a search answers 504
    drain
        seconds to finish requests in flight when stopping
    ray
        run on Ray Serve (a private local cluster unless --ray-address)
    replicas
        copies of the index answering (implies --ray)
    replica_cpus
        CPUs each Ray replica reserves
    ray_address
        join this Ray cluster ('auto': the one `ray start` made; implies --ray)
    """
    from ..serving import ServeOptions

    options = ServeOptions(host=host, port=port, token=token, read_only=read_only, threads=threads,
                           max_batch=max_batch, inline_rows=inline_rows, max_body=max_body, max_vectors=max_vectors,
                           max_results=max_results, header_timeout_s=header_timeout, body_timeout_s=body_timeout,
                           request_timeout_s=request_timeout, drain_s=drain, replicas=replicas,
                           replica_cpus=replica_cpus)
    on_ray = ray or replicas > 1 or ray_address is not None or _sharded(index)
    guard = "token required" if options.token else "no token: anyone who reaches the port may search" + (
        "" if options.read_only else " and change the index")

    def ready(url: str, what: str) -> None:
        print(f"irli: serving {index} ({what}) on {url}; {guard}; Ctrl-C stops", file=sys.stderr, flush=True)

    if on_ray:
        from ..serving.on_ray import run

        run(index, options, ray_address=ray_address,
            ready=lambda url: ready(url, f"Ray Serve, {replicas} replica(s)"))
        return 0
    from ..serving.server import Server

    server = Server(index, options)
    ready(server.url, f"{len(server.app.service.index):,} items")
    server.run()
    print("irli: stopped", file=sys.stderr)
    return 0


def _sharded(path: str) -> bool:
    from ..distributed.layout import remote
    from ..io.storage import read_manifest

    return remote(path) is not None or read_manifest(path).get("task") == "sharded"
