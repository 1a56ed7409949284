"""A trained label index's weights and its prediction path (numpy + numba).

Shapes (R repetitions, B buckets, L labels, F features, h hidden units,
D = R * h):
  w1 float32 (F, D), b1 (D,)       the R routers' input layers side by side,
                                   applied to sparse X as one CSR product
  w2 float32 (R, h, B), b2 (R, B)  the routers' output layers
  assign int32 (R, L)              each label's bucket in each repetition
  offsets int64 (R, B+1), members int32 (R, L)  the labels of every bucket
  v float32 (L, D), c (L,)         the optional per-label re-rank scorer

Prediction (`predict_block`, one compiled call per block of points): hidden
= relu(X w1 + b1); per repetition, bucket probabilities (sigmoid or softmax
of hidden_r w2_r + b2_r) and the top `probes` buckets; the candidate labels
are those in any probed bucket, seen in at least `min_votes` repetitions;
each is scored by its mean bucket probability over all R repetitions, or
with the scorer by sigmoid(hidden . v_l + c_l) blended with that mean; the
top k come back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..errors import InvalidInputError
from ..kernels.gather import gather_votes
from ..model.partition import InvertedLists
from ..kernels.scoring import FAST, affine, dot
from ..threads import run_blocks, stamps
from ..kernels.topk import pop_best_first, push, top_row


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

    def __post_init__(self) -> None:
        # sizes: R repetitions, B buckets, L labels, F features
        self.n_reps, _, self.n_buckets = self.w2.shape
        self.n_labels = self.assign.shape[1]
        self.n_features = self.w1.shape[0]
        lists = InvertedLists.from_assignments(self.assign, self.n_buckets)
        self.offsets, self.members = lists.offsets, lists.lists

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

    def _kernel_args(self, use_scorer: bool) -> tuple:
        """The model's arguments of predict_block (cached)."""
        key = f"_args_{use_scorer}"
        args = self.__dict__.get(key)
        if args is None:
            v = self.v if use_scorer else np.zeros((1, 1), np.float32)
            c = self.c if use_scorer else np.zeros(1, np.float32)
            widest = int(np.diff(self.offsets, axis=1).max())
            args = (self.w1, self.b1, self.w2, self.b2, self.loss == "sigmoid", self.offsets, self.members,
                    self.assign, v, c, widest)
            self.__dict__[key] = args
        return args

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2, "assign": self.assign}
        if self.v is not None:
            out["v"], out["c"] = self.v, self.c
        return out


_ROWS = 4  # points that share each pass over a router's output layer


@numba.njit(cache=True, nogil=True, fastmath=FAST)
def predict_block(indptr, indices, data, lo, hi, m, k, min_votes, normalize, use_scorer, blend, mark, slot,
                  stamp0, w1, b1, w2, b2, sigmoid, offsets, members, assign, v, c, widest, out_ids, out_scores,
                  out_ncand):
    """Predict rows lo .. hi - 1 of a CSR matrix (indptr, indices, data
    float32): check each row (feature ids in range, values finite), scale
    it to unit length when `normalize`, compute the hidden layer, every
    repetition's bucket probabilities and top m buckets, gather the labels of
    those buckets seen in at least min_votes repetitions, score them (mean
    bucket probability, or the scorer blended with it) and keep the top k,
    into rows lo .. hi - 1 of the outputs. mark / slot int32 (L,) are
    stamped scratch (stamps stamp0 + row - lo). Returns -1, or the first row
    that failed its check (nothing is written for it)."""
    n_features, dh = w1.shape
    reps, hid, width = w2.shape
    hh = np.empty((_ROWS, dh), dtype=np.float32)
    logits = np.empty((_ROWS, width), dtype=np.float32)
    probs = np.empty((reps, _ROWS, width), dtype=np.float32)
    top = np.empty((reps, _ROWS, m), dtype=np.int32)
    val = np.empty(m, dtype=np.float32)
    buf_v = np.empty(width, dtype=np.float32)
    buf_i = np.empty(width, dtype=np.int32)
    cand = np.empty(reps * m * widest, dtype=np.int32)
    votes = np.empty(reps * m * widest, dtype=np.int32)
    no_probs = np.zeros((reps, 0, 0), dtype=np.float32)
    no_keep = np.zeros(0, dtype=np.uint8)
    no_sums = np.zeros(0, dtype=np.float32)  # probability sums: labels are scored after gathering
    no_ids = np.zeros(0, dtype=np.int64)
    hs = np.empty(k, dtype=np.float32)
    hi_ = np.empty(k, dtype=np.int64)
    for g in range(lo, hi, _ROWS):
        n = min(_ROWS, hi - g)
        for t in range(n):
            row = g + t
            scale = np.float32(1.0)
            sq = 0.0
            for p in range(indptr[row], indptr[row + 1]):
                f = indices[p]
                bits = np.int32(data[p:p + 1].view(np.int32)[0])
                if f < 0 or f >= n_features or (bits & 0x7F800000) == 0x7F800000:
                    return row
                sq += np.float64(data[p]) * np.float64(data[p])
            if normalize and sq > 0:
                scale = np.float32(1.0 / np.sqrt(sq))
            for j in range(dh):
                hh[t, j] = b1[j]
            for p in range(indptr[row], indptr[row + 1]):
                a = data[p] * scale
                wr = w1[indices[p]]
                for j in range(dh):
                    hh[t, j] += a * wr[j]
            for j in range(dh):
                hh[t, j] = max(hh[t, j], np.float32(0.0))
        for r in range(reps):
            affine(hh[:, r * hid:(r + 1) * hid], 0, n, w2[r], b2[r], logits, False)
            for t in range(n):
                pr = probs[r, t]
                if sigmoid:
                    for b in range(width):
                        pr[b] = np.float32(1.0) / (np.float32(1.0) + np.exp(-logits[t, b]))
                else:
                    mx = logits[t, 0]
                    for b in range(width):
                        mx = max(mx, logits[t, b])
                    z = np.float32(0.0)
                    for b in range(width):
                        pr[b] = np.exp(logits[t, b] - mx)
                        z += pr[b]
                    for b in range(width):
                        pr[b] /= z
                top_row(pr, m, buf_v, buf_i, top[r, t], val)
        for t in range(n):
            qi = g + t
            stamp = stamp0 + qi - lo
            nc = gather_votes(offsets, members, top, t, no_probs, no_keep, mark, False, stamp, mark, slot, cand,
                              no_sums, votes)
            keep = 0
            size = 0
            for p in range(nc):
                lab = cand[p]
                if votes[p] < min_votes:
                    continue
                s = np.float32(0.0)
                for r in range(reps):
                    s += probs[r, t, assign[r, lab]]
                s /= reps
                if use_scorer:
                    z = c[lab] + dot(hh[t], v[lab])
                    s = (1 - blend) / (1 + np.exp(-z)) + blend * s
                keep += 1
                size = push(hs, hi_, size, k, s, lab)
            out_ncand[qi] = keep
            for p in range(size, k):
                out_ids[qi, p] = -1
                out_scores[qi, p] = -np.inf
            pop_best_first(hs, hi_, size, False, no_ids, False, out_ids, out_scores, qi)
    return -1
