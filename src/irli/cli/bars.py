"""Progress for the command line: a `Progress` callback that draws one tqdm
bar per stage on stderr when it is a terminal, and otherwise (a pipe, a log
file, CI) writes a line when a stage starts, every `every` seconds while it
runs, and when it ends. The command line and the demo use it; the library
itself only reports (irli.progress)."""

from __future__ import annotations

import sys
import time
from typing import Any


class Bars:
    """A progress callback on stderr: tqdm bars on a terminal, lines
    elsewhere (`lines`: None decides by whether stderr is a terminal)."""

    LABELS = {"kmeans": "k-means", "ground-truth": "ground truth", "train": "training",
              "repartition": "re-partition", "lists": "inverted lists", "search": "search"}

    def __init__(self, enabled: bool = True, lines: bool | None = None, every: float = 10.0) -> None:
        self.enabled = enabled
        self.lines = (not _is_terminal(sys.stderr)) if lines is None else lines
        self.every = every
        self.bars: dict[str, Any] = {}
        self.started: dict[str, float] = {}
        self.last = time.monotonic()
        self.t0 = self.last

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        if self.lines:
            self._line(p)
            return
        from tqdm import tqdm

        bar = self.bars.get(p.stage)
        if bar is None or bar.total != p.total or p.done < bar.n:
            if bar is not None:
                bar.close()
            bar = tqdm(total=p.total, desc=self.LABELS.get(p.stage, p.stage), unit="",
                       file=sys.stderr, leave=False, dynamic_ncols=True, disable=None)
            self.bars[p.stage] = bar
        bar.update(p.done - bar.n)
        shown = {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in p.info.items() if v is not None}
        if shown:
            bar.set_postfix(shown, refresh=False)
        if p.done >= p.total:
            bar.close()
            del self.bars[p.stage]

    def _line(self, p) -> None:
        now = time.monotonic()
        label = self.LABELS.get(p.stage, p.stage)
        first = p.stage not in self.started
        if first:
            self.started[p.stage] = now
        if p.done >= p.total:
            took = now - self.started.pop(p.stage)
            self.say(f"{label}: done" + (f" in {took:.1f} s" if took >= 0.1 else ""))
        elif first:
            self.say(f"{label}: started")
        elif now - self.last >= self.every:
            self.say(f"{label}: {p.done:,} of {p.total:,}")

    def say(self, text: str) -> None:
        """One line on stderr, stamped with the seconds since this object began."""
        self.last = time.monotonic()
        print(f"[{self.last - self.t0:6.0f} s] {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
        self.started.clear()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Heartbeat:
    """A line on stdout every `every` seconds while a step that reports
    nothing runs (the first search compiling the kernels, which numba
    cannot report on), so a log never falls silent for long:

        with Heartbeat("compiling the search kernels"):
            first_search()
    """

    def __init__(self, what: str, every: float = 10.0) -> None:
        import threading

        self.what, self.every = what, every
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        t0 = time.monotonic()
        while not self._done.wait(self.every):
            print(f"  ... {self.what} ({time.monotonic() - t0:.0f} s)", flush=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
