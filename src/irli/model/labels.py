"""A trained label index's model: R repetitions of label -> bucket
assignments with their sparse-input routers, and its prediction path (the
compiled kernel is irli.kernels.label_predict).

Shapes (R repetitions, B buckets, L labels, F features, h hidden units,
D = R * h):
  w1 float32 (F, D), b1 (D,)       the R routers' input layers side by side,
                                   applied to sparse X as one CSR product
  w2 float32 (R, h, B), b2 (R, B)  the routers' output layers
  assign int32 (R, L)              each label's bucket in each repetition
  offsets int64 (R, B+1), members int32 (R, L_live)  the live labels of every bucket
  v float32 (L, D), c (L,)         the optional per-label re-rank scorer
  live bool (L,)                   the labels predictions may return (None:
                                   all); removed and never-seen ids are False
  background float32 (S, D)        the hidden layer of S sampled training
                                   points (negatives when labels are added)

Prediction (`predict_block`, one compiled call per block of points): hidden
= relu(X w1 + b1); per repetition, bucket probabilities (sigmoid or softmax
of hidden_r w2_r + b2_r) and the top `probes` buckets; the candidate labels
are those in any probed bucket, seen in at least `min_votes` repetitions;
each is scored by its mean bucket probability over all R repetitions, or
with the scorer by sigmoid(hidden . v_l + c_l) blended with that mean; the
top k come back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import InvalidInputError
from ..kernels.label_predict import LabelModelArgs, predict_block
from ..threads import run_blocks, stamps
from .partition import InvertedLists


@dataclass
class LabelModel:
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    assign: np.ndarray
    loss: str = "sigmoid"
    v: np.ndarray | None = None
    c: np.ndarray | None = None
    live: np.ndarray | None = None
    background: np.ndarray | None = None

    def __post_init__(self) -> None:
        # sizes: R repetitions, B buckets, L labels, F features
        self.n_reps, _, self.n_buckets = self.w2.shape
        self.n_labels = self.assign.shape[1]
        self.n_features = self.w1.shape[0]
        if self.live is None:
            lists = InvertedLists.from_assignments(self.assign, self.n_buckets)
            self.offsets, self.members = lists.offsets, lists.lists
            self.n_live = self.n_labels
        else:  # the buckets hold the live labels only: the others are never gathered
            keep = np.flatnonzero(self.live).astype(np.int32)
            lists = InvertedLists.from_assignments(np.ascontiguousarray(self.assign[:, keep]), self.n_buckets)
            self.offsets, self.members = lists.offsets, np.ascontiguousarray(keep[lists.lists])
            self.n_live = int(keep.size)

    def changed(self, **fields) -> LabelModel:
        """A new model with `fields` replaced (this one is never modified:
        a prediction may be reading it)."""
        return replace(self, **fields)

    def hidden(self, x) -> np.ndarray:
        """The routers' hidden layer, float32 (n, D), for CSR x (n, F) whose
        rows are already scaled as the model expects."""
        h = np.asarray(x @ self.w1, dtype=np.float32) + self.b1
        return np.maximum(h, 0, out=h)

    def bucket_probs(self, h: np.ndarray, r: int) -> np.ndarray:
        """Repetition r's bucket probabilities, float32 (n, B), from hidden
        h float32 (n, D) (sigmoid or softmax, as the model predicts)."""
        hid = self.w2.shape[1]
        z = h[:, r * hid:(r + 1) * hid] @ self.w2[r] + self.b2[r]
        if self.loss == "sigmoid":
            return (0.5 + 0.5 * np.tanh(0.5 * z)).astype(np.float32)  # no overflow
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, x, k: int, probes: int, min_votes: int = 1, rerank: bool = True,
                blend: float = 0.0, normalize: bool = False,
                threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k labels for CSR x (n, F): (ids int64 (n, k), scores float32
        (n, k), candidates int64 (n,)); -1 / -inf pad rows with fewer than k
        candidates. With `normalize`, rows are scaled to unit length first.
        One compiled call per block of rows (`predict_block`), the same for
        one point as inside a batch; blocks run on `threads`."""
        n = x.shape[0]
        use = rerank and self.v is not None
        ids = np.empty((n, k), dtype=np.int64)
        scores = np.empty((n, k), dtype=np.float32)
        ncand = np.empty(n, dtype=np.int64)
        args = self._kernel_args(use)
        data = np.asarray(x.data, dtype=np.float32)
        bad = []

        def block(lo, hi):
            (mark, slot), stamp0 = stamps().take(("label-mark", "label-slot"), self.n_labels, hi - lo)
            row = predict_block(x.indptr, x.indices, data, lo, hi, probes, k, min_votes, normalize, use,
                                np.float32(blend), mark, slot, stamp0, *args, ids, scores, ncand)
            if row >= 0:
                bad.append(row)

        if n <= 16:
            block(0, n)
        else:
            run_blocks(block, n, threads, min_block=16, max_block=1024)
        if bad:
            r = min(bad)
            raise InvalidInputError(f"X row {r}: a feature index outside [0, {self.n_features}) "
                                    "or a NaN / infinite value")
        return ids, scores, ncand

    def _kernel_args(self, use_scorer: bool) -> LabelModelArgs:
        """The model's arguments of predict_block (cached)."""
        key = f"_args_{use_scorer}"
        args = self.__dict__.get(key)
        if args is None:
            v = self.v if use_scorer else np.zeros((1, 1), np.float32)
            c = self.c if use_scorer else np.zeros(1, np.float32)
            widest = int(np.diff(self.offsets, axis=1).max())
            args = LabelModelArgs(w1=self.w1, b1=self.b1, w2=self.w2, b2=self.b2, sigmoid=self.loss == "sigmoid",
                                  offsets=self.offsets, members=self.members, assign=self.assign, v=v, c=c,
                                  widest=widest)
            self.__dict__[key] = args
        return args

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2, "assign": self.assign}
        if self.v is not None:
            out["v"], out["c"] = self.v, self.c
        if self.live is not None:
            out["live"] = self.live
        if self.background is not None:
            out["background"] = self.background
        return out
