"""`irli serve` and its client: a saved index over HTTP.

  protocol   request bodies (msgspec models), decoding, answer encoding
  service    what a request does to the index: checks, search, add, remove
  batcher    concurrent searches as one batch, on a worker thread
  app        the ASGI application (routing, token, limits, errors as JSON)
  server     the app in uvicorn on one machine (the default)
  on_ray     the same app on Ray Serve (--ray: replicas, sharded indexes)
  client     irli.Client
  processes  the processes under a process (a private Ray cluster's, ended with it)
  options    ServeOptions, the settings shared by all of them

Nothing here imports Ray unless `on_ray` is imported.
"""

from .client import BadRequestError, Client, ServiceError
from .options import ServeOptions

__all__ = ["BadRequestError", "Client", "ServiceError", "ServeOptions"]
