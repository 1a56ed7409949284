"""An ann-benchmarks adapter: irli as an algorithm of that project's harness.

ann-benchmarks (github.com/erikbern/ann-benchmarks) drives every algorithm
through one small interface (`BaseANN`): `fit(X)`, `set_query_arguments(...)`,
`query(q, n)`, `batch_query(X, n)` + `get_batch_results()`,
`get_memory_usage()` (kB), `done()` and `__str__`. `IrliANN` implements it;
`benchmarks/ann-benchmarks/` holds the config.yml (the build and query
arguments to sweep), module.py and Dockerfile to drop into that project's
`ann_benchmarks/algorithms/irli/`.

    algo = IrliANN("angular", "fast")
    algo.fit(train)
    algo.set_query_arguments(24)
    ids = algo.query(test[0], 10)

When the harness is installed its `BaseANN` is the base class (the harness
checks it); otherwise a plain object is, so this module imports anywhere.
"""

from __future__ import annotations

import os
import resource
from typing import Any

import numpy as np

from ..errors import InvalidInputError

try:  # inside the ann-benchmarks tree
    from ann_benchmarks.algorithms.base.module import BaseANN as _Base
except ImportError:  # pragma: no cover - depends on what is installed
    _Base = object

# ann-benchmarks' distance names -> irli metrics (angular data is cosine)
METRICS = {"angular": "cosine", "euclidean": "l2", "cosine": "cosine", "l2": "l2", "ip": "ip",
           "dot": "ip"}


def _rss_kb() -> float:
    """Resident memory of this process now, in kB (peak where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024
    except (OSError, ValueError, IndexError):
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


class IrliANN(_Base):
    """irli behind ann-benchmarks' algorithm interface.

    Build arguments: metric (an ann-benchmarks distance: "angular" or
    "euclidean"), preset ("fast", "ivf", "ivf-ltr", "irli"), n_buckets (None:
    the preset's rule) and any further IndexConfig options as a dict.
    Query arguments (`set_query_arguments`): probes, then optionally refine
    (pq4 presets) or min_votes (multi-repetition presets).
    """

    def __init__(self, metric: str, preset: str = "fast", n_buckets: int | None = None,
                 options: dict[str, Any] | None = None) -> None:
        if metric not in METRICS:
            raise InvalidInputError(f"irli does not support the {metric!r} distance; "
                                    f"use one of {', '.join(METRICS)}")
        self._metric = METRICS[metric]
        self._preset = preset
        self._build = dict(options or {})
        if n_buckets is not None:
            self._build["n_buckets"] = int(n_buckets)
        self._query: dict[str, int] = {}
        self._index = None
        self._batch = None
        self.name = self._label()

    def _label(self) -> str:
        build = ",".join(f"{k}={v}" for k, v in sorted(self._build.items()))
        query = ",".join(f"{k}={v}" for k, v in self._query.items())
        return f"irli({self._preset}{',' + build if build else ''}{' | ' + query if query else ''})"

    def fit(self, X: np.ndarray) -> None:
        from ..index.index import Index

        self._index = Index(self._preset, metric=self._metric, **self._build).fit(X)

    def set_query_arguments(self, probes: int, extra: int | None = None) -> None:
        self._query = {"probes": int(probes)}
        if extra is not None:
            key = "refine" if self._index is not None and self._index.config.scan == "pq4" else "min_votes"
            self._query[key] = int(extra)
        self.name = self._label()

    def query(self, q: np.ndarray, n: int) -> np.ndarray:
        ids = self._index.search(np.asarray(q, dtype=np.float32), k=n, **self._query).ids[0]
        return ids[ids >= 0]

    def batch_query(self, X: np.ndarray, n: int) -> None:
        self._batch = self._index.search(np.asarray(X, dtype=np.float32), k=n, **self._query).ids

    def get_batch_results(self) -> list[np.ndarray]:
        return [row[row >= 0] for row in self._batch]

    def get_memory_usage(self) -> float:
        return _rss_kb()

    def get_additional(self) -> dict[str, Any]:
        return {"preset": self._preset, **self._query}

    def done(self) -> None:
        self._index = None
        self._batch = None

    def __str__(self) -> str:
        return self.name
