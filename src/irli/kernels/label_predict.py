"""The compiled prediction of a label index (see irli.model.labels for
the arrays): one call per block of CSR rows, from the hidden layer to the
top-k labels."""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .gather import gather_votes
from .scoring import FAST, affine, dot
from .topk import pop_best_first, push, top_row

_ROWS = 4  # points that share each pass over a router's output layer


class LabelModelArgs(NamedTuple):
    """The model's arguments of `predict_block`, in its order (the one place
    it is written; tests/test_kernel_args.py checks it against the kernel's
    signature). Built by keyword (LabelModel) and passed as `*args`."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    sigmoid: bool
    offsets: np.ndarray
    members: np.ndarray
    assign: np.ndarray
    v: np.ndarray
    c: np.ndarray
    widest: int


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
    return _predict_rows(indptr, indices, data, lo, hi, m, k, min_votes, normalize, use_scorer, blend, mark, slot,
                         stamp0, w1, b1, w2, b2, sigmoid, offsets, members, assign, v, c, hh, logits, probs, top, val,
                         buf_v, buf_i, cand, votes, no_probs, no_keep, no_sums, no_ids, hs, hi_, out_ids, out_scores,
                         out_ncand)


@numba.njit(cache=True, nogil=True, fastmath=FAST, _nrt=False)  # allocates nothing: no atomic reference counts
def _predict_rows(indptr, indices, data, lo, hi, m, k, min_votes, normalize, use_scorer, blend, mark, slot, stamp0,
                  w1, b1, w2, b2, sigmoid, offsets, members, assign, v, c, hh, logits, probs, top, val, buf_v, buf_i,
                  cand, votes, no_probs, no_keep, no_sums, no_ids, hs, hi_, out_ids, out_scores, out_ncand):
    """predict_block's work, with the scratch it allocates."""
    n_features, dh = w1.shape
    reps, hid, width = w2.shape
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
