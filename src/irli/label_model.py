"""A trained label index's weights and its prediction path (numpy + numba).

Shapes (R repetitions, B buckets, L labels, F features, h hidden units,
D = R * h):
  w1 float32 (F, D), b1 (D,)       the R routers' input layers side by side,
                                   applied to sparse X as one CSR product
  w2 float32 (R, h, B), b2 (R, B)  the routers' output layers
  assign int32 (R, L)              each label's bucket in each repetition
  offsets int64 (R, B+1), members int32 (R, L)  the labels of every bucket
  v float32 (L, D), c (L,)         the optional per-label re-rank scorer

Prediction: hidden = relu(X w1 + b1); per repetition, bucket probabilities
(sigmoid or softmax of hidden_r w2_r + b2_r) and the top `probes` buckets;
the candidate labels are those in any probed bucket, seen in at least
`min_votes` repetitions; each is scored by its mean bucket probability over
all R repetitions, or with the scorer by sigmoid(hidden . v_l + c_l) blended
with that mean; the top k come back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .search import _dot, _push, _sift_down, _top_m


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
        self.offsets, self.members = bucket_lists(self.assign, self.n_buckets)

    @property
    def n_reps(self) -> int:
        return self.w2.shape[0]

    @property
    def n_buckets(self) -> int:
        return self.w2.shape[2]

    @property
    def n_labels(self) -> int:
        return self.assign.shape[1]

    @property
    def n_features(self) -> int:
        return self.w1.shape[0]

    def hidden(self, x) -> np.ndarray:
        """relu(x w1 + b1) for CSR float32 x (n, F): float32 (n, D)."""
        h = np.empty((x.shape[0], self.w1.shape[1]), dtype=np.float32)
        _sparse_hidden(x.indptr, x.indices, np.asarray(x.data, dtype=np.float32), self.w1, self.b1, h)
        return h

    def bucket_probs(self, h: np.ndarray) -> np.ndarray:
        """Bucket probabilities float32 (R, n, B) from hidden (n, D)."""
        reps, hid, _ = self.w2.shape
        out = np.empty((reps, h.shape[0], self.n_buckets), dtype=np.float32)
        for r in range(reps):
            s = h[:, r * hid:(r + 1) * hid] @ self.w2[r]
            s += self.b2[r]
            if self.loss == "sigmoid":
                np.negative(s, out=s)
                np.exp(s, out=s)
                s += 1
                np.reciprocal(s, out=s)
            else:
                s -= s.max(axis=1, keepdims=True)
                np.exp(s, out=s)
                s /= s.sum(axis=1, keepdims=True)
            out[r] = s
        return out

    def predict(self, x, k: int, probes: int, min_votes: int = 1, rerank: bool = True,
                blend: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k labels for CSR x (n, F): (ids int64 (n, k), scores float32
        (n, k), candidates int64 (n,)); -1 / -inf pad rows with fewer than k
        candidates."""
        h = self.hidden(x)
        probs = self.bucket_probs(h)
        reps, n, _ = probs.shape
        top = np.empty((reps, n, probes), dtype=np.int32)
        val = np.empty((reps, n, probes), dtype=np.float32)
        for r in range(reps):
            _top_m(probs[r], top[r], val[r])
        use = rerank and self.v is not None
        v = self.v if use else np.zeros((1, 1), np.float32)
        c = self.c if use else np.zeros(1, np.float32)
        hh = h if use else np.zeros((1, 1), np.float32)
        chunks = max(1, min(n, numba.get_num_threads()))
        ids = np.full((n, k), -1, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        ncand = np.zeros(n, dtype=np.int64)
        _label_scan(probs, top, self.offsets, self.members, self.assign, hh, v, c, use, np.float32(blend),
                    k, min_votes, np.full((chunks, self.n_labels), -1, np.int64),
                    np.zeros((chunks, self.n_labels), np.int32), np.empty((chunks, self.n_labels), np.int32),
                    np.empty((chunks, k), np.float32), np.empty((chunks, k), np.int64), ids, scores, ncand)
        return ids, scores, ncand

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2, "assign": self.assign}
        if self.v is not None:
            out["v"], out["c"] = self.v, self.c
        return out


def bucket_lists(assign: np.ndarray, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverted lists of labels: offsets int64 (R, B+1), members int32 (R, L)."""
    reps, n_labels = assign.shape
    offsets = np.zeros((reps, n_buckets + 1), dtype=np.int64)
    members = np.empty((reps, n_labels), dtype=np.int32)
    for r in range(reps):
        offsets[r, 1:] = np.cumsum(np.bincount(assign[r], minlength=n_buckets))
        members[r] = np.argsort(assign[r], kind="stable")
    return offsets, members


@numba.njit(cache=True, fastmath=True, parallel=True)
def _sparse_hidden(indptr, indices, data, w, b, out):
    # out[i] = relu(b + sum_t data[t] * w[indices[t]]), rows in parallel
    for i in numba.prange(out.shape[0]):
        o = out[i]
        o[:] = b
        for t in range(indptr[i], indptr[i + 1]):
            v = data[t]
            row = w[indices[t]]
            for j in range(o.shape[0]):
                o[j] += v * row[j]
        for j in range(o.shape[0]):
            if o[j] < 0:
                o[j] = 0


@numba.njit(cache=True, fastmath=True, parallel=True)
def _label_scan(probs, top, offsets, members, assign, h, v, c, use_scorer, blend, k, min_votes,
                marks, votes, cand, heap_s, heap_i, out_ids, out_scores, out_ncand):
    # scratch rows come from the caller, one per chunk (see search._scan)
    reps, n, m = top.shape
    n_chunks = marks.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    for ch in numba.prange(n_chunks):
        mark = marks[ch]
        vote = votes[ch]
        cd = cand[ch]
        hs = heap_s[ch]
        hi = heap_i[ch]
        for qi in range(ch * chunk, min(n, (ch + 1) * chunk)):
            nc = 0
            hq = h[qi] if use_scorer else h[0]
            for r in range(reps):
                for j in range(m):
                    b = top[r, qi, j]
                    for t in range(offsets[r, b], offsets[r, b + 1]):
                        lab = members[r, t]
                        if mark[lab] != qi:
                            mark[lab] = qi
                            vote[lab] = 1
                            cd[nc] = lab
                            nc += 1
                        else:
                            vote[lab] += 1
            keep = 0
            size = 0
            for t in range(nc):
                lab = cd[t]
                if vote[lab] < min_votes:
                    continue
                s = np.float32(0.0)
                for r in range(reps):
                    s += probs[r, qi, assign[r, lab]]
                s /= reps
                if use_scorer:
                    z = c[lab] + _dot(hq, v[lab])
                    s = (1 - blend) / (1 + np.exp(-z)) + blend * s
                keep += 1
                size = _push(hs, hi, size, k, s, lab)
            out_ncand[qi] = keep
            # pop the heap (smallest first) into the row from the back
            for t in range(size - 1, -1, -1):
                out_ids[qi, t] = hi[0]
                out_scores[qi, t] = hs[0]
                last = size - 1
                hs[0] = hs[last]
                hi[0] = hi[last]
                size = last
                _sift_down(hs, hi, size)
