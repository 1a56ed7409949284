"""Repetitions: the one model of an index, R x (partition + router).

Each of the R repetitions partitions the N stored items into B buckets
(an item's home bucket and its spill buckets: `assign` int32 (R, c, N),
the same as inverted lists `lists`) and routes a query to buckets with its
router. A vector index's items are vector positions; `centroids` float32
(R, B, d) are the buckets' mean vectors (spilling, residual codes, placing
new items, the sharded layout), and its routers are dense (`Routing`). A
label index's items are labels (c = 1); its routers read sparse feature
rows (`SparseRouting`), its lists hold only the live labels, and it has
no centroids. Held by `Index`, by the sharded layout and by the label
model alike; this module is the one place that turns it into the arrays
and router tensors of an index directory and back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..config import IndexConfig
from ..errors import IndexFormatError
from .partition import InvertedLists, fallback_width, power_of_k, soar_spill
from .routers import Router, Routing, SparseRouting, route


@dataclass(frozen=True)
class Repetitions:
    """R repetitions over N positions (see the module docstring). Frozen:
    a change makes a new one (`changed`), so a search holding the old one
    never sees a half-made change."""

    routers: tuple[Router, ...]
    assign: np.ndarray  # int32 (R, c, N)
    lists: InvertedLists  # offsets int64 (R, B + 1), lists (R, c N)
    centroids: np.ndarray | None  # float32 (R, B, d); None for labels
    routing: Routing | SparseRouting | None = field(default=None, repr=False, compare=False)  # None: stacked

    def __post_init__(self) -> None:
        object.__setattr__(self, "routers", tuple(self.routers))
        if self.routing is None:
            stack = Routing if self.dense else SparseRouting
            object.__setattr__(self, "routing", stack.from_routers(list(self.routers)))

    @classmethod
    def of_labels(cls, routing: SparseRouting, assign: np.ndarray, live: np.ndarray | None = None) -> "Repetitions":
        """A label index's repetitions from its stacked routers, each label's
        bucket `assign` int32 (R, L) and `live` bool (L,) (None: all live).
        Its lists hold the live labels only (label ids, increasing), so a
        removed or never-seen label is never gathered."""
        b = routing.n_buckets
        if live is None:
            lists = InvertedLists.from_assignments(assign, b)
        else:
            keep = np.flatnonzero(live).astype(np.int32)
            part = InvertedLists.from_assignments(np.ascontiguousarray(assign[:, keep]), b)
            lists = InvertedLists(part.offsets, np.ascontiguousarray(keep[part.lists]))
        return cls(routing.routers(), np.asarray(assign)[:, None, :], lists, None, routing=routing)

    @property
    def dense(self) -> bool:
        """Whether the routers read dense vectors (a vector index), not sparse rows."""
        return self.routers[0].dense

    def _need_dense(self, what: str) -> None:
        if not self.dense:
            raise TypeError(f"{what} applies to a vector index's repetitions, not a label index's")

    def changed(self, **parts) -> "Repetitions":
        """A copy with some of routers, assign, lists, centroids replaced (the
        stacked routing is kept unless the routers change)."""
        if "routers" in parts:
            parts.setdefault("routing", None)
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
        """The routers' kind ("centroid", "linear", "mlp"; "sparse-mlp" for labels)."""
        return self.routers[0].kind

    def place(self, x: np.ndarray, cfg: IndexConfig, loads: np.ndarray, seed: int) -> np.ndarray:
        """Buckets int32 (R, c, n) for new items `x` by the rule that built
        the partition (see `place`); `loads` int (R, B) live items per home
        bucket now."""
        self._need_dense("place")
        return place(x, self.routing, cfg, loads, self.centroids, seed)

    def drift(self, x: np.ndarray, rows: np.ndarray, alive: np.ndarray, cfg: IndexConfig
              ) -> tuple[list[float], float, float]:
        """(moved per repetition, imbalance, load cv) of the partition (see
        Drift): `x` float32 (s, d) the vectors at positions `rows`, a sample
        of the live positions `alive` int (n,)."""
        self._need_dense("drift")
        return measure(x, self.assign[:, 0, rows], self.assign[:, 0, alive], self.routing, cfg, self.n_buckets)

    def route(self, q: np.ndarray, probes: int, with_probs: bool = False, threads: int | None = None):
        """The `probes` best buckets of each prepared query (float32 (n, d))
        in every repetition: int32 (R, n, probes) (and their softmax
        probabilities with `with_probs`); see irli.model.routers.route."""
        self._need_dense("route")
        return route(self.routing, q, probes, with_probs=with_probs, threads=threads)

    # -- on disk ---------------------------------------------------------------------
    def label_arrays(self) -> dict[str, np.ndarray]:
        """What a label index directory holds of its repetitions: the stacked
        routers w1, b1, w2, b2 (see SparseRouting) and assign (R, L) (its
        lists are rebuilt from them at load, see `of_labels`)."""
        r = self.routing
        return {"w1": r.w1, "b1": r.b1, "w2": r.w2, "b2": r.b2, "assign": self.assign[:, 0]}

    def arrays(self) -> dict[str, np.ndarray]:
        """What a vector index directory holds of the partitions: offsets,
        lists, assign, centres (the centroids; by file name)."""
        self._need_dense("arrays")
        return {"offsets": self.lists.offsets, "lists": self.lists.lists, "assign": self.assign,
                "centres": self.centroids}

    def router_tensors(self) -> dict[str, np.ndarray]:
        """The routers' weights as routers.safetensors holds them, "<rep>.<name>"."""
        self._need_dense("router_tensors")
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
            if not rt.dense:
                raise IndexFormatError(f"{path}: router kind {kind!r} reads sparse rows; not a vector index's router")
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
        centroids = np.asarray(arrays["centres"])
        routers = cls.read_routers(path, tensors, kind, n_reps, metric, centroids.shape[1], centroids.shape[2])
        return cls(routers, arrays["assign"], InvertedLists(np.asarray(arrays["offsets"]), arrays["lists"]),
                   centroids)


# -- placing new items and measuring drift ------------------------------------------
# New items are placed by the same rule that built the partition: with
# re-partitioning (IRLI, balanced k-means) each goes to the least loaded of
# its router's top `k_choices` buckets, counting the items already there
# against the load cap; otherwise to its router's best bucket (for centroid
# routers, the nearest centroid, as k-means assigned the rest). Spilled
# indexes give new items their SOAR buckets too.
def choices_per_item(cfg: IndexConfig) -> int:
    """K: how many of its router's best buckets an item may be placed in."""
    return cfg.k_choices if cfg.repartition else 1


def place(x: np.ndarray, routers: list[Router] | Routing, cfg: IndexConfig, loads: np.ndarray,
          centroids: np.ndarray, seed: int, batch: int = 1 << 14) -> np.ndarray:
    """Buckets for new items `x` (float32 (n, d), normalised for cosine) in
    every repetition: int32 (R, c, n), [:, 0] the home bucket, [:, 1:] the
    spilled ones. `loads` int (R, B) are the live items per home bucket now;
    `centroids` float32 (R, B, d) the bucket centroids used for spilling."""
    n = x.shape[0]
    reps, b = loads.shape
    k = choices_per_item(cfg)
    width = fallback_width(k, b) if cfg.repartition else 1
    choices = np.empty((reps, n, width), dtype=np.int32)
    for s in range(0, n, batch):
        choices[:, s : s + batch] = route(routers, x[s : s + batch], width)[0]
    out = np.empty((reps, cfg.copies, n), dtype=np.int32)
    for r in range(reps):
        if cfg.repartition:
            out[r, 0] = power_of_k(choices[r], k, b, cfg.max_load, seed + r, loads=loads[r])
        else:
            out[r, 0] = choices[r, :, 0]
        if cfg.spill:
            out[r, 1:] = soar_spill(x, centroids[r], out[r, 0], cfg.spill, cfg.spill_lambda)
    return out


@dataclass
class Drift:
    """How far an index has drifted from what its routers would build now.

    moved: share of live items (a seeded sample of `sample`) whose home bucket
    is not among their router's top K choices (K = `k_choices` with
    re-partitioning, else 1), averaged over repetitions; moved_per_rep per
    repetition. imbalance: the fullest home bucket over the mean, worst
    repetition; load_cv: the coefficient of variation of the bucket loads.
    *_at_fit: the same right after the last fit or refresh (a partition
    balanced under a load cap never scores 0). added / removed: items since
    then. `excess` = moved - moved_at_fit is the part that drift caused.
    """

    moved: float
    moved_per_rep: list[float]
    imbalance: float
    load_cv: float
    moved_at_fit: float
    imbalance_at_fit: float
    added: int
    removed: int
    sample: int

    @property
    def excess(self) -> float:
        return self.moved - self.moved_at_fit


def measure(x: np.ndarray, homes_x: np.ndarray, homes: np.ndarray, routers: list[Router] | Routing,
            cfg: IndexConfig, n_buckets: int) -> tuple[list[float], float, float]:
    """(moved per repetition, imbalance, load cv), see Drift: `x` float32
    (s, d) is a sample of the live items and `homes_x` int (R, s) their home
    buckets; `homes` int (R, n) are the home buckets of all live items."""
    k = min(choices_per_item(cfg), n_buckets)
    top = route(routers, np.ascontiguousarray(x, dtype=np.float32), k)[0]  # (R, s, K)
    moved = [float((top[r] != homes_x[r, :, None]).all(axis=1).mean()) for r in range(top.shape[0])]
    loads = np.stack([np.bincount(h, minlength=n_buckets) for h in homes]).astype(np.float64)
    mean = loads.mean(axis=1)
    imbalance = float((loads.max(axis=1) / np.maximum(mean, 1e-12)).max())
    cv = float((loads.std(axis=1) / np.maximum(mean, 1e-12)).max())
    return moved, imbalance, cv
