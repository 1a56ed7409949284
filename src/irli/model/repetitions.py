"""Repetitions: the one model of a vector index, R x (partition + router).

Each of the R repetitions partitions the N stored positions into B buckets
(an item's home bucket and its spill buckets: `assign` int32 (R, c, N),
the same as inverted lists `lists`) and routes a query to buckets with its
router; `centres` float32 (R, B, d) are the buckets' centroids (spilling,
residual codes, placing new items, the sharded layout). Held by `Index`
and by the sharded layout alike; this module is the one place that turns it
into the arrays and router tensors of an index directory and back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import IndexFormatError
from .partition import InvertedLists
from .routers import Router, Routing, route


@dataclass(frozen=True)
class Repetitions:
    """R repetitions over N positions (see the module docstring). Frozen:
    a change makes a new one (`changed`), so a search holding the old one
    never sees a half-made change."""

    routers: tuple[Router, ...]
    assign: np.ndarray  # int32 (R, c, N)
    lists: InvertedLists  # offsets int64 (R, B + 1), lists (R, c N)
    centres: np.ndarray  # float32 (R, B, d)
    routing: Routing = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "routers", tuple(self.routers))
        object.__setattr__(self, "routing", Routing.from_routers(list(self.routers)))

    def changed(self, **parts) -> "Repetitions":
        """A copy with some of routers, assign, lists, centres replaced."""
        return replace(self, **parts)

    @property
    def n_reps(self) -> int:
        return len(self.routers)

    @property
    def n_buckets(self) -> int:
        return self.lists.n_buckets

    @property
    def copies(self) -> int:
        """Buckets per item and repetition (1 + spill)."""
        return int(self.assign.shape[1])

    @property
    def kind(self) -> str:
        """The routers' kind ("centroid", "linear", "mlp")."""
        return self.routers[0].kind

    def route(self, q: np.ndarray, probes: int, with_probs: bool = False, threads: int | None = None):
        """The `probes` best buckets of each prepared query (float32 (n, d))
        in every repetition: int32 (R, n, probes) (and their softmax
        probabilities with `with_probs`); see irli.model.routers.route."""
        return route(self.routing, q, probes, with_probs=with_probs, threads=threads)

    # -- on disk ---------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """What an index directory holds of the partitions: offsets, lists,
        assign, centres (by file name)."""
        return {"offsets": self.lists.offsets, "lists": self.lists.lists, "assign": self.assign,
                "centres": self.centres}

    def router_tensors(self) -> dict[str, np.ndarray]:
        """The routers' weights as routers.safetensors holds them, "<rep>.<name>"."""
        return {f"{r}.{k}": v for r, rt in enumerate(self.routers) for k, v in rt.state().items()}

    @staticmethod
    def read_routers(path, tensors: dict[str, np.ndarray], kind: str | None, n_reps: int, metric: str,
                     n_buckets: int, dim: int) -> list[Router]:
        """The `n_reps` routers of kind `kind` from router tensors
        "<rep>.<name>", each checked to map `dim` -> `n_buckets`
        (IndexFormatError naming `path` otherwise)."""
        states: list[dict[str, np.ndarray]] = [{} for _ in range(n_reps)]
        for key, v in tensors.items():
            rep, _, name = key.partition(".")
            if rep.isdigit() and int(rep) < n_reps:
                states[int(rep)][name] = v
        routers = []
        for r, state in enumerate(states):
            try:
                rt = Router.from_state(kind, state, metric)
            except Exception as e:  # unknown kind, missing or malformed weights
                raise IndexFormatError(f"{path}: router {r} is unreadable ({e})") from None
            if rt.n_buckets != n_buckets or rt.dim != dim:
                raise IndexFormatError(f"{path}: router {r} maps {rt.dim} -> {rt.n_buckets}, index has d={dim}, "
                                       f"B={n_buckets}")
            routers.append(rt)
        return routers

    @classmethod
    def from_arrays(cls, path, arrays: dict[str, np.ndarray], tensors: dict[str, np.ndarray], kind: str | None,
                    n_reps: int, metric: str) -> "Repetitions":
        """The repetitions an index directory holds (arrays already checked
        for shape and range by irli.io.checks)."""
        centres = np.asarray(arrays["centres"])
        routers = cls.read_routers(path, tensors, kind, n_reps, metric, centres.shape[1], centres.shape[2])
        return cls(routers, arrays["assign"], InvertedLists(np.asarray(arrays["offsets"]), arrays["lists"]),
                   centres)
