"""Routers: functions from queries to bucket scores, one per repetition.

Every router answers `logits(Q)`: float32 (n, d) -> float32 (n, B), higher is
better, and round-trips through `state()` / `from_state()` (a dict of named
float32 arrays, saved with safetensors). `layers()` gives the same function as
affine layers for the compiled routing of all repetitions at once
(`Routing`, below). This is the inference side, numpy and numba only; the
training side is a torch twin per kind (irli.learn.loop.TWINS) that writes
the weights back. A new router kind is a subclass here and a twin there.

A label index's routers read sparse feature rows (`SparseMLPRouter`): their
input layer is a sparse product, not a dense layer, so they are stacked for
the compiled label kernel as `SparseRouting` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import IndexFormatError
from ..kernels.route import route_kernel, tile_layer, tile_layer8, tile_rows8
from ..kernels.simd import HAVE_VNNI
from ..threads import run_blocks


class Router:
    """Interface: `logits(Q)` and a state dict of float32 arrays."""

    kind: ClassVar[str]
    _params: ClassVar[tuple[str, ...]]
    dense: ClassVar[bool] = True  # reads dense query vectors (has `layers()`)

    def __init__(self, **params: np.ndarray | None) -> None:
        for name in self._params:
            v = params.get(name)
            setattr(self, name, None if v is None else np.ascontiguousarray(v, dtype=np.float32))

    def logits(self, q: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def n_buckets(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def dim(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def layers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The router as affine layers for the compiled search path: (A1
        float32 (d, H), b1 (H,), A2 (H, B) or None, b2 (B,) or None); logits
        = b1 + q A1, or b2 + relu(b1 + q A1) A2 with a second layer."""
        raise NotImplementedError  # pragma: no cover - interface

    def state(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self._params if getattr(self, k) is not None}

    @classmethod
    def from_state(cls, kind: str, state: dict[str, np.ndarray], metric: str) -> "Router":
        """Rebuild a router of `kind` from its `state()` for an index of `metric`."""
        sub = ROUTER_KINDS.get(kind)
        if sub is None:
            raise IndexFormatError(f"unknown router kind {kind!r} in index")
        missing = [p for p in sub._required if p not in state]
        if missing:
            raise IndexFormatError(f"router weights lack {missing[0]!r}")
        return sub.build(state, metric)

    @classmethod
    def build(cls, state: dict[str, np.ndarray], metric: str) -> "Router":
        """This kind of router from a checked state dict."""
        return cls(**{k: state.get(k) for k in cls._params})


class CentroidRouter(Router):
    """Similarity to bucket centroids `centroids` float32 (B, d): inner product
    for ip/cosine; for l2, 2 q.c - |c|^2 (the negative squared distance up to
    a per-query constant, so the ranking and softmax are those of -|q - c|^2)."""

    kind = "centroid"
    _params = ("centroids",)
    _required = ("centroids",)

    def __init__(self, centroids: np.ndarray, l2: bool = False) -> None:
        super().__init__(centroids=centroids)
        self.l2 = l2
        self._sq = (self.centroids**2).sum(1) if l2 else None

    @classmethod
    def build(cls, state: dict[str, np.ndarray], metric: str) -> "CentroidRouter":
        return cls(state["centroids"], l2=metric == "l2")

    @property
    def n_buckets(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    def layers(self):
        c = self.centroids
        if self.l2:
            return 2 * c.T, -self._sq, None, None
        return c.T, np.zeros(c.shape[0], dtype=np.float32), None, None

    def logits(self, q: np.ndarray) -> np.ndarray:
        s = q @ self.centroids.T
        if self.l2:
            s *= 2
            s -= self._sq
        return s


class LinearRouter(Router):
    """Scores W q (+ b): `weight` float32 (B, d), optional `bias` (B,)."""

    kind = "linear"
    _params = ("weight", "bias")
    _required = ("weight",)

    @property
    def n_buckets(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def layers(self):
        b = self.bias if self.bias is not None else np.zeros(self.weight.shape[0], dtype=np.float32)
        return self.weight.T, b, None, None

    def logits(self, q: np.ndarray) -> np.ndarray:
        s = q @ self.weight.T
        if self.bias is not None:
            s += self.bias
        return s


class MLPRouter(Router):
    """relu(q W1 + b1) W2 + b2 with `w1` (d, h), `b1` (h,), `w2` (h, B), `b2` (B,)."""

    kind = "mlp"
    _params = ("w1", "b1", "w2", "b2")
    _required = _params

    @property
    def n_buckets(self) -> int:
        return self.w2.shape[1]

    @property
    def dim(self) -> int:
        return self.w1.shape[0]

    def layers(self):
        return self.w1, self.b1, self.w2, self.b2

    def logits(self, q: np.ndarray) -> np.ndarray:
        h = q @ self.w1
        h += self.b1
        np.maximum(h, 0, out=h)
        s = h @ self.w2
        s += self.b2
        return s


class SparseMLPRouter(Router):
    """One repetition of a label index: relu(x W1 + b1) W2 + b2 for sparse
    feature rows x (CSR (n, F)), with `w1` (F, h), `b1` (h,), `w2` (h, B),
    `b2` (B,). The weights may be views into the stacked `SparseRouting`
    (they are not copied)."""

    kind = "sparse-mlp"
    _params = ("w1", "b1", "w2", "b2")
    _required = _params
    dense = False

    def __init__(self, **params: np.ndarray) -> None:
        for name in self._params:
            setattr(self, name, np.asarray(params[name], dtype=np.float32))

    @property
    def n_buckets(self) -> int:
        return self.w2.shape[1]

    @property
    def dim(self) -> int:
        """F: the number of input features."""
        return self.w1.shape[0]

    def layers(self):
        raise TypeError("a sparse-input router has no dense layers; it runs stacked as SparseRouting")

    def logits(self, x) -> np.ndarray:
        """float32 (n, B) for CSR (or dense) feature rows x (n, F)."""
        h = np.asarray(x @ self.w1, dtype=np.float32) + self.b1
        np.maximum(h, 0, out=h)
        return h @ self.w2 + self.b2


ROUTER_KINDS: dict[str, type[Router]] = {
    c.kind: c for c in (CentroidRouter, LinearRouter, MLPRouter, SparseMLPRouter)
}


# -- compiled inference over all repetitions ------------------------------------------
HALF_ROWS_FROM = 1 << 16  # B x d from which one query alone scans half-precision rows (256 KB in float32)
INT8_FROM = 1 << 16  # H x B from which a two-layer router's last layer is scored in 8 bits, where the CPU has VNNI


@dataclass
class Routing:
    """The R routers as stacked affine layers (see Router.layers): a1
    float32 (R, d, H), b1 (R, H), a2 (R, H, B) and b2 (R, B) for two-layer (MLP)
    routers, else empty (R, 0, 0) / (R, 0). tiles: the last layer (a2, or
    a1) tile-major, as the kernels read it (irli.kernels.route.tile_layer);
    first_tiles: a1 tile-major (the same array as tiles for one layer).

    One-layer routers also hold what routing one query alone reads (see
    irli.kernels.route.route_rows): rows float32 (R, B, d), a1 bucket-major
    for the exact re-score of the best buckets; from HALF_ROWS_FROM
    weights, a1 in 8 bits (tiles8, scale8, irli.kernels.route.tile_rows8)
    with `int8` True, or None where the CPU has AVX-512 VNNI, else half
    uint16 (R, T, d, TILE), a1 in half precision (bits) and tiled (empty
    when a weight does not fit a half), scanned by a query routed alone;
    slack float32 (R, 2), per repetition the largest |row - half| (or the
    8-bit rows' error) and |row| + |b1| over the buckets. MiniLM-384's
    1,024 x 384 centroids: one query routed in 8.3-8.8 us instead of
    17.3-17.8 (BENCHMARKS.md, issue 24). Two-layer routers hold rows and
    half empty.

    Two-layer routers may score their last layer in 8 bits (tiles8 int8
    (R, T, G, 4 TILE), scale8 float32 (R, 2, T TILE) scales and biases,
    irli.kernels.route.tile_layer8; empty (R, 0, 0, 0) / (R, 0, 0)
    otherwise): with `int8` True, or None (the default) where the CPU has
    AVX-512 VNNI and H x B >= INT8_FROM. Each score is then within the
    rounding of its bytes of the float32 one, and a query is routed the
    same alone and in a batch (tests/test_routing.py); GloVe's `irli`
    preset (4 x 128 x 1,024) routes a batch in 8.3 us a query instead of
    14.9, at the same recall (BENCHMARKS.md, issue 24)."""

    a1: np.ndarray
    b1: np.ndarray
    a2: np.ndarray
    b2: np.ndarray
    tiles: np.ndarray = field(init=False, repr=False, compare=False)
    first_tiles: np.ndarray = field(init=False, repr=False, compare=False)
    rows: np.ndarray = field(init=False, repr=False, compare=False)
    half: np.ndarray = field(init=False, repr=False, compare=False)
    slack: np.ndarray = field(init=False, repr=False, compare=False)
    int8: bool | None = field(default=None, compare=False)
    tiles8: np.ndarray = field(init=False, repr=False, compare=False)
    scale8: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        reps = self.a1.shape[0]
        self.slack = np.zeros((reps, 2), np.float32)
        two = self.a2.shape[1] > 0
        self.tiles = tile_layer(self.a2 if two else self.a1)
        self.first_tiles = tile_layer(self.a1) if two else self.tiles
        vnni = HAVE_VNNI if self.int8 is None else self.int8  # 8-bit tables where asked or the CPU has VNNI
        self.tiles8, self.scale8 = np.zeros((reps, 0, 0, 0), np.int8), np.zeros((reps, 0, 0), np.float32)
        if two and vnni and (self.int8 or self.a2.shape[1] * self.a2.shape[2] >= INT8_FROM):
            self.tiles8, self.scale8 = tile_layer8(self.a2, self.b2)
        if two:
            self.rows = np.zeros((reps, 0, 0), np.float32)
            self.half = np.zeros((reps, 0, 0, 0), np.uint16)
            return
        rows = np.ascontiguousarray(self.a1.transpose(0, 2, 1), dtype=np.float32)
        self.rows = rows
        norms = np.linalg.norm(rows.astype(np.float64), axis=2) + np.abs(self.b1.astype(np.float64))
        self.slack[:, 1] = norms.max(axis=1) * (1 + 1e-6)
        self.half = np.zeros((reps, 0, 0, 0), np.uint16)
        if rows.shape[1] * rows.shape[2] < HALF_ROWS_FROM:
            return  # a small table is read as fast in float32
        if vnni:  # a quarter of the bytes, 64 products an instruction
            self.tiles8, self.scale8, self.slack[:, 0] = tile_rows8(self.a1)
            return
        if not np.abs(rows).max(initial=0.0) < 6.0e4:
            return  # half precision reaches 65,504
        half = rows.astype(np.float16)
        err = np.linalg.norm(rows.astype(np.float64) - half.astype(np.float64), axis=2)
        self.slack[:, 0] = err.max(axis=1) * (1 + 1e-6)
        self.half = tile_layer(np.ascontiguousarray(half.transpose(0, 2, 1)).view(np.uint16))

    @classmethod
    def from_routers(cls, routers: list[Router], int8: bool | None = None) -> "Routing":
        layers = [rt.layers() for rt in routers]
        a1 = np.ascontiguousarray(np.stack([lay[0] for lay in layers]), dtype=np.float32)
        b1 = np.ascontiguousarray(np.stack([lay[1] for lay in layers]), dtype=np.float32)
        reps = len(layers)
        if layers[0][2] is None:
            a2, b2 = np.zeros((reps, 0, 0), np.float32), np.zeros((reps, 0), np.float32)
        else:
            a2 = np.ascontiguousarray(np.stack([lay[2] for lay in layers]), dtype=np.float32)
            b2 = np.ascontiguousarray(np.stack([lay[3] for lay in layers]), dtype=np.float32)
        return cls(a1, b1, a2, b2, int8)

    @property
    def n_reps(self) -> int:
        return self.a1.shape[0]

    @property
    def n_buckets(self) -> int:
        return self.a2.shape[2] if self.a2.shape[1] else self.a1.shape[2]

    def block(self, q: np.ndarray, lo: int, hi: int, probed: np.ndarray, probs: np.ndarray,
              raw: bool = False) -> None:
        """Route prepared queries lo .. hi - 1 of q (float32 (n, d)) into
        rows lo .. hi - 1 of probed int32 (R, n, m) and, when probs is (R, n,
        m) rather than (R, 0, 0), their softmax probabilities (with `raw`,
        their router scores)."""
        route_kernel(q, lo, hi, self.first_tiles, self.b1, self.tiles, self.b2, self.rows, self.half, self.slack,
                     self.tiles8, self.scale8, probed, probs, raw)


def route(routers: list[Router] | Routing, q: np.ndarray, probes: int, with_probs: bool = False,
          threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-`probes` buckets of every repetition for prepared queries `q`
    (float32 (n, d), normalised for cosine).

    Returns (buckets int32 (R, n, m), probs float32 (R, n, m)), buckets best
    first (ties to the lower bucket); probs are the router's softmax
    probabilities of those buckets when `with_probs`, else an empty (R, 0, 0)
    array. `probes` must be <= B.
    """
    routing = routers if isinstance(routers, Routing) else Routing.from_routers(routers)
    n = q.shape[0]
    reps = routing.n_reps
    buckets = np.empty((reps, n, probes), dtype=np.int32)
    probs = np.empty((reps, n, probes) if with_probs else (reps, 0, 0), dtype=np.float32)
    run_blocks(lambda lo, hi: routing.block(q, lo, hi, buckets, probs), n, threads)
    return buckets, probs


@dataclass
class SparseRouting:
    """R sparse-input routers (SparseMLPRouter) stacked for the compiled
    label kernel: w1 float32 (F, R h), the input layers side by side so one
    CSR product computes every repetition's hidden layer; b1 (R h,); w2
    (R, h, B); b2 (R, B)."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    @classmethod
    def from_routers(cls, routers: list[Router]) -> "SparseRouting":
        return cls(np.ascontiguousarray(np.concatenate([rt.w1 for rt in routers], axis=1)),
                   np.concatenate([rt.b1 for rt in routers]), np.stack([rt.w2 for rt in routers]),
                   np.stack([rt.b2 for rt in routers]))

    def routers(self) -> list[SparseMLPRouter]:
        """The R routers, each a view of its slice of the stack."""
        h = self.hidden_size
        return [SparseMLPRouter(w1=self.w1[:, r * h:(r + 1) * h], b1=self.b1[r * h:(r + 1) * h], w2=self.w2[r],
                                b2=self.b2[r]) for r in range(self.n_reps)]

    @property
    def n_reps(self) -> int:
        return self.w2.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.w2.shape[1]

    @property
    def n_buckets(self) -> int:
        return self.w2.shape[2]

    @property
    def n_features(self) -> int:
        return self.w1.shape[0]

    def hidden(self, x) -> np.ndarray:
        """Every repetition's hidden layer, float32 (n, R h), for CSR x (n, F)."""
        h = np.asarray(x @ self.w1, dtype=np.float32) + self.b1
        return np.maximum(h, 0, out=h)

    def logits(self, h: np.ndarray, r: int) -> np.ndarray:
        """Repetition r's bucket scores, float32 (n, B), from hidden h (n, R h)."""
        hid = self.hidden_size
        return h[:, r * hid:(r + 1) * hid] @ self.w2[r] + self.b2[r]
