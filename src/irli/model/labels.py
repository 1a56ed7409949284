"""A trained label index's model: its Repetitions (R repetitions of label
-> bucket assignments with their sparse-input routers), an optional
per-label scorer, and its prediction path (the compiled kernel is
irli.kernels.label_predict).

Shapes (R repetitions, B buckets, L labels, F features, h hidden units,
D = R * h):
  reps.routing: w1 float32 (F, D), b1 (D,)  the R routers' input layers side
                by side, applied to sparse X as one CSR product; w2 (R, h, B),
                b2 (R, B) their output layers (irli.model.routers.SparseRouting)
  reps.assign int32 (R, 1, L)      each label's bucket in each repetition
  reps.lists                       the live labels of every bucket (offsets
                                   int64 (R, B+1), members int32 (R, L_live))
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
from .repetitions import Repetitions
from .routers import SparseRouting


@dataclass(frozen=True)
class LabelModel:
    """See the module docstring. Frozen: a change makes a new one
    (`changed`), so a prediction holding the old one never sees it."""

    reps: Repetitions
    loss: str = "sigmoid"
    v: np.ndarray | None = None
    c: np.ndarray | None = None
    live: np.ndarray | None = None
    background: np.ndarray | None = None

    @classmethod
    def build(cls, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray, assign: np.ndarray,
              live: np.ndarray | None = None, **rest) -> LabelModel:
        """From the stacked router weights (see SparseRouting), assign int32
        (R, L) and live bool (L,) or None; `rest`: loss, v, c, background."""
        return cls(Repetitions.of_labels(SparseRouting(w1, b1, w2, b2), assign, live), live=live, **rest)

    def changed(self, **fields) -> LabelModel:
        """A new model with `fields` replaced (assign int32 (R, L), live, v,
        c, background, loss); this one is never modified: a prediction may
        be reading it. A new assign or live rebuilds the bucket lists."""
        if "assign" in fields or "live" in fields:
            assign = fields.pop("assign", self.assign)
            live = fields.get("live", self.live)
            fields["reps"] = Repetitions.of_labels(self.reps.routing, assign, live)
        return replace(self, **fields)

    # sizes: R repetitions, B buckets, L labels, F features
    n_reps = property(lambda self: self.reps.n_reps)
    n_buckets = property(lambda self: self.reps.n_buckets)
    n_labels = property(lambda self: self.reps.assign.shape[2])
    n_features = property(lambda self: self.reps.routing.n_features)
    n_live = property(lambda self: self.reps.lists.lists.shape[1], doc="labels predictions may return")
    assign = property(lambda self: self.reps.assign[:, 0], doc="int32 (R, L) each label's bucket")
    offsets = property(lambda self: self.reps.lists.offsets, doc="int64 (R, B + 1)")
    members = property(lambda self: self.reps.lists.lists, doc="int32 (R, L_live) live labels by bucket")

    def hidden(self, x) -> np.ndarray:
        """The routers' hidden layer, float32 (n, D), for CSR x (n, F) whose
        rows are already scaled as the model expects."""
        return self.reps.routing.hidden(x)

    def bucket_probs(self, h: np.ndarray, r: int) -> np.ndarray:
        """Repetition r's bucket probabilities, float32 (n, B), from hidden
        h float32 (n, D) (sigmoid or softmax, as the model predicts)."""
        z = self.reps.routing.logits(h, r)
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
            rt = self.reps.routing
            args = LabelModelArgs(w1=rt.w1, b1=rt.b1, w2=rt.w2, b2=rt.b2, sigmoid=self.loss == "sigmoid",
                                  offsets=self.offsets, members=self.members, assign=self.assign, v=v, c=c,
                                  widest=widest)
            self.__dict__[key] = args  # a cache beside the frozen fields
        return args

    def arrays(self) -> dict[str, np.ndarray]:
        """What a label index directory holds of the model (by file name)."""
        out = self.reps.label_arrays()
        if self.v is not None:
            out["v"], out["c"] = self.v, self.c
        if self.live is not None:
            out["live"] = self.live
        if self.background is not None:
            out["background"] = self.background
        return out
