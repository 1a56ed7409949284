"""IndexConfig: every knob of an index, its presets, and their validation.

One model covers all of irli: R repetitions, each a partition of the items into B
buckets plus a router scoring the buckets for a query. The presets are names for
good defaults in that space, not separate code paths; any field can be overridden.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError

METRICS = ("cosine", "ip", "l2")
STARTS = ("kmeans", "hash")
SCANS = ("exact", "pq4")
ROUTERS = ("centroid", "linear", "mlp")
LOSSES = ("softmax", "sigmoid")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class IndexConfig:
    """Hyper-parameters of an index. Build one with `IndexConfig.from_preset`.

    Partition: `n_reps` repetitions of `n_buckets` buckets (None: a power of two
    near sqrt(N)), started by `start` ("kmeans" or a seeded 2-universal "hash").
    Router: "centroid" (similarity to bucket centroids), "linear" (W q) or "mlp"
    (d -> `hidden` -> ReLU -> B). Learning: `epochs` of router training on
    `n_train` training queries with `loss` against the buckets of each query's
    `target_k` exact neighbours; with `repartition`, every `repartition_every`
    epochs each item moves to the least loaded of its router's top `k_choices`
    buckets (never past `max_load` times the mean bucket size), stopping early
    when fewer than `min_moved` of the items move.
    Spilling: with `spill` = s > 0, every item also sits in s more buckets of
    each repetition, chosen as in SOAR (Sun et al., NeurIPS 2023): near the item,
    with a residual as orthogonal as possible to the residuals it already has
    (weight `spill_lambda`).
    Scanning: "exact" scores every gathered item on its float32 vector; "pq4"
    scans 4-bit product-quantised codes of the probed buckets (`pq_m`
    sub-quantisers, default d up to 64 dimensions, then d / 2; `pq_residual`:
    encode x - bucket centre, or x itself, or None to choose at fit by
    measuring both on a sample; `pq_anisotropic`: ScaNN's threshold T for
    score-aware codes under ip / cosine, None or 0 for plain PQ) and
    re-scores the best `refine` x k distinct items exactly.
    Search defaults: `probes` buckets per repetition, keep candidates seen in at
    least `min_votes` repetitions, optionally only the `top_c` with the highest
    summed router probability ("exact" scan only).
    """

    metric: str = "cosine"
    n_reps: int = 1
    n_buckets: int | None = None
    start: str = "kmeans"
    router: str = "centroid"
    hidden: int = 512
    router_bias: bool | None = None
    loss: str = "softmax"
    target_k: int = 1
    n_train: int = 50_000
    epochs: int = 0
    batch_size: int = 512
    lr: float = 1e-3
    val_fraction: float = 0.1
    patience: int = 3
    repartition: bool = False
    repartition_every: int = 5
    k_choices: int = 2
    max_load: float | None = 2.0
    min_moved: float = 0.01
    kmeans_iters: int = 20
    kmeans_sample: int = 256
    spill: int = 0
    spill_lambda: float = 1.0
    scan: str = "exact"
    refine: int = 4
    pq_m: int | None = None
    pq_residual: bool | None = None
    pq_anisotropic: float | None = None
    probes: int = 16
    min_votes: int = 1
    top_c: int | None = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        _validate(self)

    # -- construction -------------------------------------------------------
    @classmethod
    def from_preset(cls, preset: str = "irli", **overrides: Any) -> "IndexConfig":
        """The preset's defaults with `overrides` applied, validated."""
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ConfigError(
                f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"
            )
        values = dict(PRESETS[preset])
        _check_names(overrides)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "IndexConfig":
        """Inverse of `to_dict`; unknown keys are an error."""
        _check_names(values)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "IndexConfig":
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    # -- derived values -----------------------------------------------------
    def buckets_for(self, n_items: int) -> int:
        """B for a collection of `n_items`: the set value, or the smallest
        power of two >= sqrt(n_items) (at least 2)."""
        if self.n_buckets is not None:
            return self.n_buckets
        return default_buckets(n_items)

    @property
    def spherical(self) -> bool:
        """Whether k-means and centroids live on the unit sphere (ip, cosine)."""
        return self.metric in ("cosine", "ip")

    @property
    def uses_bias(self) -> bool:
        """Whether the linear router has a bias (auto: only for l2)."""
        return self.metric == "l2" if self.router_bias is None else self.router_bias

    @property
    def copies(self) -> int:
        """Buckets each item sits in per repetition (1 + spill)."""
        return 1 + self.spill

    @property
    def learns(self) -> bool:
        """Whether fit trains a router (needs training queries)."""
        return self.router != "centroid" and self.epochs > 0


def default_buckets(n_items: int) -> int:
    """The smallest power of two >= sqrt(n_items), at least 2 (1024 for
    390,000 items). Rounding up rather than to the nearest costs a little
    routing and saves scanning: on GloVe, 1024 buckets reach recall@10 0.90
    with about half the candidates of 512."""
    return max(2, 2 ** math.ceil(math.log2(math.sqrt(max(n_items, 1)))))


PRESETS: dict[str, dict[str, Any]] = {
    # classic IVF: spherical k-means partition, route by centroid similarity
    "ivf": dict(start="kmeans", router="centroid", n_reps=1, epochs=0),
    # Vecchiato et al. SIGIR 2024: k-means partition, learned linear router,
    # softmax cross-entropy against the top-1 neighbour's bucket
    "ivf-ltr": dict(
        start="kmeans", router="linear", n_reps=1, epochs=20, loss="softmax",
        target_k=1, repartition=False,
    ),
    # IRLI / BLISS: R hash-started repetitions, MLP routers, multi-hot targets,
    # power-of-K re-partitioning every 5 epochs
    "irli": dict(
        start="hash", router="mlp", n_reps=4, hidden=512, epochs=20,
        loss="sigmoid", target_k=100, repartition=True, repartition_every=5,
        k_choices=2, probes=16, min_votes=1,
    ),
    # the fastest configuration we measured on GloVe: k-means buckets, each item
    # also spilled to a second (SOAR) bucket, 4-bit PQ fast-scan of the probed
    # buckets (score-aware codes, ScaNN's threshold 0.2), exact re-rank of the
    # best 4 x k distinct items
    "fast": dict(
        start="kmeans", router="centroid", n_reps=1, epochs=0, spill=1, scan="pq4", refine=4,
        probes=24, pq_anisotropic=0.2,
    ),
}


_FIELDS = {f.name: f for f in fields(IndexConfig)}


def _check_names(values: dict[str, Any]) -> None:
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r}; valid options are: {', '.join(_FIELDS)}"
        )


def _int(c: IndexConfig, name: str, lo: int, hi: int | None = None, none: bool = False) -> None:
    v = getattr(c, name)
    if v is None and none:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{name} must be an integer, got {v!r}")
    if v < lo or (hi is not None and v > hi):
        bound = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise ConfigError(f"{name} must be {bound}, got {v}")


def _choice(c: IndexConfig, name: str, options: tuple[str, ...]) -> None:
    v = getattr(c, name)
    if not isinstance(v, str) or v not in options:
        raise ConfigError(f"unknown {name} {v!r}; choose one of {', '.join(options)}")


def _float(c: IndexConfig, name: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> None:
    v = getattr(c, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{name} must be a number, got {v!r}")
    if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
        lb = "(" if lo_open else "["
        hb = ")" if hi_open else "]"
        raise ConfigError(f"{name} must be in {lb}{lo}, {hi}{hb}, got {v}")


def _validate(c: IndexConfig) -> None:
    _choice(c, "metric", METRICS)
    _choice(c, "start", STARTS)
    _choice(c, "router", ROUTERS)
    _choice(c, "loss", LOSSES)
    _choice(c, "device", DEVICES)
    _choice(c, "scan", SCANS)
    _int(c, "n_reps", 1, 64)
    _int(c, "n_buckets", 2, None, none=True)
    _int(c, "hidden", 1)
    _int(c, "target_k", 1, 1024)
    _int(c, "n_train", 1)
    _int(c, "epochs", 0)
    _int(c, "batch_size", 1)
    _int(c, "patience", 1)
    _int(c, "repartition_every", 1)
    _int(c, "k_choices", 1)
    _int(c, "kmeans_iters", 1)
    _int(c, "kmeans_sample", 1)
    _int(c, "probes", 1)
    _int(c, "spill", 0, 3)
    _int(c, "refine", 1, 1000)
    _int(c, "pq_m", 1, None, none=True)
    _int(c, "min_votes", 1, c.n_reps)
    _int(c, "top_c", 1, None, none=True)
    _int(c, "seed", 0)
    _float(c, "lr", 0.0, 10.0, lo_open=True)
    _float(c, "val_fraction", 0.0, 0.9)
    _float(c, "min_moved", 0.0, 1.0)
    _float(c, "spill_lambda", 0.0, 1e6)
    if c.max_load is not None:
        _float(c, "max_load", 1.0, 1e9)
    for name in ("repartition",):
        if not isinstance(getattr(c, name), bool):
            raise ConfigError(f"{name} must be true or false, got {getattr(c, name)!r}")
    if c.pq_anisotropic is not None:
        _float(c, "pq_anisotropic", 0.0, 1.0, hi_open=True)
    if c.pq_residual is not None and not isinstance(c.pq_residual, bool):
        raise ConfigError(f"pq_residual must be true, false or None, got {c.pq_residual!r}")
    if c.router_bias is not None and not isinstance(c.router_bias, bool):
        raise ConfigError(f"router_bias must be true, false or None, got {c.router_bias!r}")
    if c.n_buckets is not None and c.k_choices > c.n_buckets:
        raise ConfigError(f"k_choices={c.k_choices} exceeds n_buckets={c.n_buckets}")
    if c.router == "mlp" and c.epochs == 0:
        raise ConfigError("router='mlp' starts random and needs epochs >= 1")
    if c.scan == "pq4" and (c.min_votes > 1 or c.top_c is not None):
        raise ConfigError("min_votes and top_c filter exact candidates; they need scan='exact'")
    if c.start == "hash" and c.router == "linear" and c.epochs == 0:
        raise ConfigError("router='linear' with start='hash' needs epochs >= 1")
