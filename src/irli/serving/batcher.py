"""Searches of concurrent requests as one batch, off the event loop.

One worker thread runs one batch at a time (the search kernels release the
GIL, so the event loop keeps reading and writing sockets meanwhile). A
request that arrives while the worker is idle starts at once: nothing ever
waits for a batch to fill. Requests that arrive while it is busy queue up
and go together as the next batch, up to `max_rows` query rows, so the
batch size follows the load.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable


class Batcher:
    """run: list of requests -> list of answers (one per request, in order;
    an exception object in place of an answer is raised to its caller);
    runs on the worker thread. rows: a request -> its query rows. A request
    not answered within `timeout_s` gets the exception `expired()` (checked
    once a second, not timed one by one)."""

    def __init__(self, run: Callable[[list], list], rows: Callable[[Any], int], max_rows: int = 256,
                 timeout_s: float = 30.0, expired: Callable[[], BaseException] = TimeoutError) -> None:
        self._run, self._rows, self.max_rows = run, rows, max_rows
        self.timeout_s, self._expired = timeout_s, expired
        self._queue: deque = deque()
        self._pending: deque = deque()  # (deadline, future) in arrival order
        self._busy = False
        self._watchdog: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="irli-search")

    @property
    def idle(self) -> bool:
        """No batch running and none queued."""
        return not self._busy and not self._queue

    async def submit(self, request) -> Any:
        """The answer to `request`, searched alone or with the others queued."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append((request, fut))
        self._pending.append((loop.time() + self.timeout_s, fut))
        if self._watchdog is None:
            self._watchdog = loop.create_task(self._watch())
        if not self._busy:
            self._start(loop)
        return await fut

    async def _watch(self) -> None:
        """Fail the requests that waited longer than timeout_s."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self.timeout_s))
            now = loop.time()
            while self._pending and (self._pending[0][1].done() or self._pending[0][0] <= now):
                _, fut = self._pending.popleft()
                if not fut.done():
                    fut.set_exception(self._expired())

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, rows = [], 0
        while self._queue:
            req, fut = self._queue[0]
            if fut.done():  # its client went away
                self._queue.popleft()
                continue
            n = self._rows(req)
            if batch and rows + n > self.max_rows:
                break
            self._queue.popleft()
            batch.append((req, fut))
            rows += n
        if not batch:
            self._busy = False
            return
        self._busy = True
        done = loop.run_in_executor(self._pool, self._run, [r for r, _ in batch])
        done.add_done_callback(lambda f: self._finish(loop, batch, f))

    def _finish(self, loop, batch, f: asyncio.Future) -> None:
        try:
            answers = f.result()
        except BaseException as e:  # a bug in run: every caller of the batch gets it
            answers = [e] * len(batch)
        for (_, fut), ans in zip(batch, answers):
            if fut.done():
                continue
            if isinstance(ans, BaseException):
                fut.set_exception(ans)
            else:
                fut.set_result(ans)
        self._start(loop)

    def close(self) -> None:
        """Stop the worker after the batch in progress."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
