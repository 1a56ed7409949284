"""Routers: functions from queries to bucket scores, one per repetition.

Every router answers `logits(Q)`: float32 (n, d) -> float32 (n, B), higher is
better, and round-trips through `state()` / `from_state()` (a dict of named
float32 arrays, saved with safetensors). `layers()` gives the same function as
affine layers for the compiled search path (irli.search.Routing). Inference is numpy only; training
(training.py) builds torch twins of these and writes the weights back.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .errors import IndexFormatError


class Router:
    """Interface: `logits(Q)` and a state dict of float32 arrays."""

    kind: ClassVar[str]
    _params: ClassVar[tuple[str, ...]]

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
        if sub is CentroidRouter:
            return CentroidRouter(state["centroids"], l2=metric == "l2")
        return sub(**{k: state.get(k) for k in sub._params})


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


ROUTER_KINDS: dict[str, type[Router]] = {
    c.kind: c for c in (CentroidRouter, LinearRouter, MLPRouter)
}
