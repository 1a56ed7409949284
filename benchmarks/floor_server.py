"""The floor of the serving benchmark: a bare aiohttp server that parses the
same /search body as `irli serve` (JSON, with Python's json) and answers a
fixed result of the same shape. What HTTP and JSON cost on this machine.

    python benchmarks/floor_server.py PORT
"""

import json
import sys

from aiohttp import web

ANSWER = json.dumps({"ids": [list(range(10))], "scores": [[0.5] * 10], "candidates": [1000]}).encode()


async def search(request: web.Request) -> web.Response:
    doc = json.loads(await request.read())
    if not isinstance(doc, dict) or "vectors" not in doc:
        return web.json_response({"error": "missing field 'vectors'"}, status=400)
    return web.Response(body=ANSWER, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


if __name__ == "__main__":
    app = web.Application(client_max_size=16 << 20)
    app.router.add_post("/search", search)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
