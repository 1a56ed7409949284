"""The similarity an index ranks by, and what it means at each step.

"cosine": items and queries are scaled to unit length and ranked by inner
product; "ip": ranked by inner product as given; "l2": ranked by squared
Euclidean distance. The kernels always keep the largest score, so for l2
they score the negative squared distance and `user_scores` turns it back.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .validation import check_norms, normalize_rows

METRICS = ("cosine", "ip", "l2")


@dataclass(frozen=True)
class Metric:
    """One of METRICS, with the decisions that follow from it.

    >>> Metric.named("l2").user_scores(np.float32([-4.0]))   # kernels' score -> squared distance
    array([4.], dtype=float32)
    """

    name: str

    def __post_init__(self) -> None:
        if self.name not in METRICS:
            raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {self.name!r}")

    @staticmethod
    @functools.cache
    def named(name: str) -> "Metric":
        """The Metric called `name` (one shared instance per name)."""
        return Metric(name)

    @property
    def cosine(self) -> bool:
        """Whether items and queries are scaled to unit length."""
        return self.name == "cosine"

    @property
    def l2(self) -> bool:
        """Whether scores are (negative) squared distances."""
        return self.name == "l2"

    @property
    def spherical(self) -> bool:
        """Whether k-means and centroids live on the unit sphere (ip, cosine)."""
        return self.name != "l2"

    @property
    def faiss_metric(self) -> int:
        """FAISS's metric constant for this similarity."""
        import faiss

        return faiss.METRIC_L2 if self.l2 else faiss.METRIC_INNER_PRODUCT

    def prepare_items(self, x: np.ndarray, name: str) -> np.ndarray:
        """Items or training queries as stored and scored: float32 (n, d),
        unit rows for cosine; for ip and l2 the rows are checked for norms
        that would overflow (InvalidInputError naming `name` and the row)."""
        if self.cosine:
            return normalize_rows(x)
        check_norms(x, name)
        return x

    def user_scores(self, raw: np.ndarray) -> np.ndarray:
        """The kernels' scores (larger is closer) as the user sees them:
        squared distances for l2, inner products otherwise."""
        return -raw if self.l2 else raw

    def ranked_scores(self, user: np.ndarray) -> np.ndarray:
        """The inverse of `user_scores`: scores a user sees (or FAISS
        returns) as the kernels rank them, larger is closer."""
        return -user if self.l2 else user

    def sqnorms(self, x: np.ndarray) -> np.ndarray:
        """Squared norms float32 (n,) of the rows of `x` for l2 (the kernels
        add them to inner products); an empty array otherwise."""
        if not self.l2:
            return np.zeros(0, dtype=np.float32)
        return np.einsum("ij,ij->i", x, x).astype(np.float32)
