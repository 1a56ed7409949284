"""The ASGI application of `irli serve`: one app, run by uvicorn on one
machine (irli.serving.server) or by Ray Serve on a cluster
(irli.serving.on_ray).

Endpoints (bodies and answers: irli.serving.protocol):
  POST /search   queries -> ids, scores, candidates (concurrent requests are
                 searched as one batch, see irli.serving.batcher)
  POST /add      items -> {"ids": [int], "n_items": int}   (saved first)
  POST /remove   ids -> {"removed": int, "n_items": int}   (saved first)
  GET  /health   {"status": "ok"} (no token needed)
  GET  /info     the index's kind, size, dimension, metric, settings, limits

Every answer is JSON unless the request was binary, errors included:
{"error": "<one line>"} with 400 (bad body, dimension, NaN, k, ...), 401
(no or wrong token), 403 (writes switched off), 404, 405, 408 (the body
came too slowly), 409 (the index cannot change here), 413 (over a limit),
415 (Content-Type), 500 (a bug, logged), 503 (a change not saved, nothing
applied; a part of a sharded index down) or 504 (no answer in time).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from concurrent.futures import ThreadPoolExecutor

from .batcher import Batcher
from .options import ServeOptions
from .protocol import (
    JSON,
    AddBody,
    RemoveBody,
    RequestError,
    SearchBody,
    body_format,
    content_type,
    decode,
    encode,
)
from .service import Service

log = logging.getLogger("irli.serve")
ROUTES = {"/search": "POST", "/add": "POST", "/remove": "POST", "/health": "GET", "/info": "GET"}
# bodies larger than this are decoded off the event loop
_BIG = 1 << 18


class _Close(RequestError):
    """A refusal after which the connection is closed (the rest of the body unread)."""


def error_body(message: str) -> bytes:
    return encode({"error": " ".join(str(message).split())})


class App:
    """The service as an ASGI 3 application (HTTP and lifespan scopes)."""

    def __init__(self, service: Service, options: ServeOptions | None = None) -> None:
        self.service = service
        self.options = options or service.options
        timeout = self.options.request_timeout_s
        self.batcher = Batcher(service.search, lambda r: r.queries.shape[0], self.options.max_batch, timeout,
                               lambda: RequestError(504, f"no answer within {timeout:g} s"))
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="irli-write")  # changes run one at a time
        token = self.options.token
        self._auth = None if token is None else b"Bearer " + token.encode()
        # whether the app times the reading of bodies itself (the server on one
        # machine does it in its protocol, for less work per request)
        self.times_bodies = True

    def close(self) -> None:
        """Stop the worker threads and let go of the index's writer lock."""
        self.batcher.close()
        self._writer.shutdown(wait=True)
        self.service.close()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await asyncio.get_running_loop().run_in_executor(None, self.close)
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope, receive, send) -> None:
        extra = []
        try:
            status, body, ctype = await self._respond(scope, receive)
        except RequestError as e:
            status, body, ctype = e.status, error_body(e.message), JSON
            if isinstance(e, _Close):
                extra.append((b"connection", b"close"))
            elif e.status == 401:
                extra.append((b"www-authenticate", b'Bearer realm="irli"'))
            elif e.status == 405:
                extra.append((b"allow", ROUTES[scope["path"].rstrip("/")].encode()))
        except Exception as e:  # a bug, not a bad request: logged, and answered in one line
            log.exception("irli serve: %s %s failed", scope.get("method"), scope.get("path"))
            status, ctype = 500, JSON
            body = error_body(f"internal error: {type(e).__name__}: {str(e)[:300]}")
        headers = [(b"content-type", ctype.encode()), (b"content-length", b"%d" % len(body)), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _header(self, scope, name: bytes) -> bytes | None:
        for key, value in scope["headers"]:
            if key == name:
                return value
        return None

    async def _respond(self, scope, receive) -> tuple[int, bytes, str]:
        path = scope["path"].rstrip("/") or "/"
        method = ROUTES.get(path)
        if method is None:
            raise RequestError(404, f"no endpoint {path} (endpoints: {', '.join(ROUTES)})")
        if scope["method"] != method:
            raise RequestError(405, f"{path} takes {method}, not {scope['method']}")
        if path == "/health":
            return 200, encode(self.service.health()), JSON
        if self._auth is not None:
            given = self._header(scope, b"authorization") or b""
            if not hmac.compare_digest(given, self._auth):
                raise RequestError(401, "missing or wrong token: send the header 'Authorization: Bearer <token>'")
        if path == "/info":
            return 200, encode(self.service.info()), JSON
        fmt = body_format((self._header(scope, b"content-type") or b"").decode("latin-1"))
        raw = await self._read(scope, receive)
        qs = scope.get("query_string", b"")
        if path == "/search":
            if len(raw) > _BIG:
                req = await asyncio.to_thread(self._search_request, raw, fmt, qs)
            else:
                req = self._search_request(raw, fmt, qs)
            if req.allow is None and req.queries.shape[0] <= self.options.inline_rows and self.batcher.idle:
                answer = self.service.answer(req)  # see ServeOptions.inline_rows
            else:
                answer = await self.batcher.submit(req)
            if isinstance(answer, RequestError):
                raise answer
            return 200, answer, content_type(fmt, True)
        change = self._add if path == "/add" else self._remove
        loop = asyncio.get_running_loop()
        return 200, await loop.run_in_executor(self._writer, change, raw, fmt, qs), content_type(fmt, False)

    def _search_request(self, raw: bytes, fmt: str, qs: bytes):
        return self.service.search_request(decode(raw, fmt, SearchBody, qs), fmt)

    def _add(self, raw: bytes, fmt: str, qs: bytes) -> bytes:
        return encode(self.service.add(decode(raw, fmt, AddBody, qs)), content_type(fmt, False))

    def _remove(self, raw: bytes, fmt: str, qs: bytes) -> bytes:
        return encode(self.service.remove(decode(raw, fmt, RemoveBody, qs)), content_type(fmt, False))

    async def _read(self, scope, receive) -> bytes:
        """The request body, within max_body bytes and body_timeout_s. A
        body over the limit by up to 4x is read to its end (the client then
        reads a clean 413); a larger one is refused at once and the
        connection closed."""
        limit = self.options.max_body
        declared = self._header(scope, b"content-length")
        size = int(declared) if declared and declared.isdigit() else None
        over = f"request body of {{}} bytes is over the limit of {limit}"
        if size is not None and size > 4 * limit:
            raise _Close(413, over.format(size))
        chunks, got = [], 0
        if not self.times_bodies:  # the server does
            got = await self._chunks(receive, chunks, limit, over)
        else:
            try:
                async with asyncio.timeout(self.options.body_timeout_s):
                    got = await self._chunks(receive, chunks, limit, over)
            except TimeoutError:
                raise _Close(408, f"the request body did not arrive within {self.options.body_timeout_s:g} s") \
                    from None
        if got > limit:
            raise RequestError(413, over.format(got))
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    async def _chunks(receive, chunks: list, limit: int, over: str) -> int:
        """Read the body's messages into `chunks` (up to `limit` bytes);
        returns the bytes sent."""
        got = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Close(400, "the client went away")
            chunk = message.get("body", b"")
            got += len(chunk)
            if got <= limit:
                chunks.append(chunk)
            elif got > 4 * limit:
                raise _Close(413, over.format(f"more than {got}"))
            if not message.get("more_body", False):
                return got
