"""Progress reports from long-running library calls.

The library never prints. Long steps call `callback(Progress(...))` if the user
gave one, and log at DEBUG level; the CLI turns the reports into progress bars.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

log = logging.getLogger("irli")


@dataclass(frozen=True)
class Progress:
    """One report: `done` of `total` units of `stage`, with details in `info`.

    Stages, in the order a fit or build reaches them: "sample" (out-of-core
    build: rows gathered), "kmeans" (iterations), "ground-truth" (training
    queries searched exactly), "train" (units: epochs; info has round, loss,
    val_loss or val_p1), "repartition" (rounds; info has moved), "spill",
    "assign" (out-of-core build: items placed), "lists", "codes", "budget"
    (learned_probes: the probe budget fitted), "write";
    then "add" (items added) and "embed" (texts embedded, irli.io.datasets).
    """

    stage: str
    done: int
    total: int
    info: dict[str, Any] = field(default_factory=dict)


Callback = Optional[Callable[[Progress], None]]


def report(callback: Callback, stage: str, done: int, total: int, **info: Any) -> None:
    """Send one report to `callback` (if any) and to the "irli" logger."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s %d/%d %s", stage, done, total, info or "")
    if callback is not None:
        callback(Progress(stage, done, total, info))
