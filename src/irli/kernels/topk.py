"""Top-k and top-m selection for the compiled kernels.

`push` / `sift` keep a min-heap of the best k (score, position) pairs;
`push_lex` / `sift_lex` order ties by position too (lower first), so the
best k are the same set in any arrival order. `emit`, `emit_ids` and
`pop_best_first` write a heap out as a result row, best first.
`top_row` / `top_m` pick the m largest of a row of bucket scores.
"""

from __future__ import annotations

import numba
import numpy as np

from .scoring import FAST
from .simd import ctz32, ge16, max16, popc32


@numba.njit(inline="always")
def _insert_best(v, i, m, size, out_idx, out_val):
    """Insert (v, i) into out_val / out_idx (size entries, best first, at
    most m kept; a strict > keeps ties in arrival order). Returns the new size."""
    if size == m and v <= out_val[m - 1]:
        return size
    j = size if size < m else m - 1
    while j > 0 and out_val[j - 1] < v:
        out_val[j] = out_val[j - 1]
        out_idx[j] = out_idx[j - 1]
        j -= 1
    out_val[j] = v
    out_idx[j] = i
    return size + 1 if size < m else size


@numba.njit(inline="always")
def nth_best(v, n, r):
    """The value of rank r (0: the largest) among v[:n] (float32, no NaN),
    by selection in place (v[:n] is reordered)."""
    lo, hi = 0, n - 1
    while lo < hi:
        mid = (lo + hi) // 2  # median of three as the pivot
        a, b, c = v[lo], v[mid], v[hi]
        pivot = max(min(a, b), min(max(a, b), c))
        i, j = lo, hi
        while i <= j:  # descending: larger values to the left
            while v[i] > pivot:
                i += 1
            while v[j] < pivot:
                j -= 1
            if i <= j:
                v[i], v[j] = v[j], v[i]
                i += 1
                j -= 1
        if r <= j:
            hi = j
        elif r >= i:
            lo = i
        else:
            return v[r]
    return v[r]


@numba.njit(inline="always")
def mth_by_counts(v, n, m):
    """The m-th largest of v[:n] (float32, no NaN; v holds at least n
    rounded up to 16 entries, those past n overwritten with -inf): the
    largest value that at least m values reach, each value's count taken
    16 compares at a time (simd.ge16). Without branches on the data: the
    selection it replaces (nth_best) mispredicted its way to 0.8 us over
    64 group maxima (issue 24)."""
    n16 = n + (-n) % 16
    for i in range(n, n16):
        v[i] = -np.inf
    thr = np.float32(-np.inf)
    for i in range(n):
        thr = max(thr, v[i] if count_at_least(v, n16, v[i]) >= m else np.float32(-np.inf))
    return thr


@numba.njit(inline="always")
def count_at_least(v, n, t):
    """How many of v[:n] (float32, n a multiple of 16) are >= t, 16
    compares and a popcount at a time."""
    c = np.uint32(0)
    for s in range(0, n, 16):
        c += popc32(ge16(v, s, t))
    return c


@numba.njit(inline="always")
def at_least(row, thr, vals, idx):
    """The scores of row float32 (B,) at or above thr, and their positions,
    in order into vals / idx (scratch (B,)), 16 compares at a time
    (simd.ge16). Returns how many."""
    width = row.shape[0]
    full = width - width % 16
    cnt = 0
    for c0 in range(0, full, 16):
        mask = ge16(row, c0, thr)
        while mask != 0:
            b = c0 + ctz32(mask)
            mask &= mask - np.uint32(1)
            vals[cnt] = row[b]
            idx[cnt] = b
            cnt += 1
    for b in range(full, width):
        if row[b] >= thr:
            vals[cnt] = row[b]
            idx[cnt] = b
            cnt += 1
    return cnt


# Up to this many candidates are placed by their counted rank (cnt^2 / 16 compares, without
# data-dependent branches); more go through insertion. GloVe's top 20 of 1,024 routing scores by insertion took 1.6 us a query,
# mispredicting on every candidate's place (issue 24).
_RANKED = 128


@numba.njit(inline="always")
def _place_by_rank(v, idx, cnt, m, out_idx, out_val):
    """The m best of v[:cnt] (float32, no NaN; v holds at least cnt + 16
    entries, those past cnt overwritten) by (value, then lower position in
    v) into out_idx / out_val, best first: each one's rank is the count of
    the values above it (and of the equal ones before it), 16 compares at a
    time."""
    n16 = cnt + (-cnt) % 16
    for i in range(cnt, n16):
        v[i] = -np.inf
    for i in range(cnt):
        x = v[i]
        gt = count_at_least(v, n16, np.nextafter(x, np.float32(np.inf)))
        ge = count_at_least(v, n16, x)
        r = np.int64(gt)
        if ge > gt + np.uint32(1):  # ties (or -inf, which the padding equals): the earlier ones first
            for j in range(i):
                if v[j] == x:
                    r += 1
        if r < m:
            out_idx[r] = idx[i]
            out_val[r] = x


@numba.njit(inline="always")
def top_row(row, m, bv, bi, out_idx, out_val):
    """The m largest of row float32 (B,), best first, ties to the lower
    bucket, into out_idx / out_val (bv, bi: scratch (B,)). The m-th best of
    the maxima of 16-bucket groups is a threshold that at least m scores
    reach (one per group), and few more: the groups' scores that reach it
    are placed by their counted rank (the m-th best of m group maxima let
    3x as many through, and cost 2.5 us a row at m = 20, issue 24)."""
    width = row.shape[0]
    if m > 64:  # insertion costs O(m^2): a heap of the best m by (score, -bucket) in bv / bi, emptied worst first
        size = 0
        for b in range(width):
            size = push_lex(bv, bi, size, m, row[b], b)
        for t in range(size - 1, -1, -1):
            out_idx[t] = bi[0]
            out_val[t] = bv[0]
            size = drop_root(bv, bi, size, True)
        return
    full = width // 16
    groups = full + (width > 16 * full)
    thr = np.float32(-np.inf)
    if groups >= m:  # enough groups: the m-th best of their maxima (held in bv for now)
        for g in range(full):
            bv[g] = max16(row, 16 * g, 1)
        if groups > full:
            mx = row[16 * full]
            for b in range(16 * full + 1, width):
                mx = max(mx, row[b])
            bv[full] = mx
        if groups <= 256 and groups + (-groups) % 16 <= bv.shape[0]:  # O(groups^2 / 16) compares
            thr = mth_by_counts(bv, groups, m)
        else:
            thr = nth_best(bv, groups, m - 1)
    cnt = at_least(row, thr, bv, bi)
    if cnt <= _RANKED and cnt + 16 <= bv.shape[0]:
        _place_by_rank(bv, bi, cnt, m, out_idx, out_val)
        return
    size = 0
    for t in range(cnt):  # in bucket order: ties stay in it
        size = _insert_best(bv[t], bi[t], m, size, out_idx, out_val)


@numba.njit(cache=True, nogil=True, fastmath=FAST)
def _top_m_rows(s, out_idx, out_val):
    width = s.shape[1]
    bv = np.empty(width, np.float32)
    bi = np.empty(width, np.int32)
    for i in range(s.shape[0]):
        top_row(s[i], out_idx.shape[1], bv, bi, out_idx[i], out_val[i])


def top_m(s: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The m largest of each row of s float32 (n, B), best first, ties to the
    lower column: (columns int32 (n, m), values float32 (n, m)). The
    selection routing uses."""
    s = np.ascontiguousarray(s, dtype=np.float32)
    idx = np.empty((s.shape[0], m), dtype=np.int32)
    val = np.empty((s.shape[0], m), dtype=np.float32)
    _top_m_rows(s, idx, val)
    return idx, val



# -- heaps ---------------------------------------------------------------------------
@numba.njit(inline="always")
def push(hs, hi, size, k, s, i):
    """Offer (score s, id i) to a min-heap of the best k; returns the new size."""
    if size < k:
        j = size
        hs[j] = s
        hi[j] = i
        while j > 0:
            p = (j - 1) // 2
            if hs[p] <= hs[j]:
                break
            hs[p], hs[j] = hs[j], hs[p]
            hi[p], hi[j] = hi[j], hi[p]
            j = p
        return size + 1
    if s <= hs[0]:
        return size
    hs[0] = s
    hi[0] = i
    sift_down(hs, hi, size)
    return size


@numba.njit(inline="always")
def sift_down(hs, hi, size):
    """Restore the min-heap of `size` entries after its root changed."""
    sift(hs, hi, size, 0)


@numba.njit(inline="always")
def sift(hs, hi, size, j):
    """Restore the min-heap of `size` entries after entry j grew."""
    while True:
        a = 2 * j + 1
        if a >= size:
            break
        b = a + 1
        c = b if b < size and hs[b] < hs[a] else a
        if hs[j] <= hs[c]:
            break
        hs[c], hs[j] = hs[j], hs[c]
        hi[c], hi[j] = hi[j], hi[c]
        j = c


@numba.njit(inline="always")
def emit(hs, hid, size, out_pos, out_score, qi):
    """Write a query's heap of `size` (scores hs, positions hid) into row qi
    of the outputs, best first (ties keep heap order)."""
    order = np.argsort(-hs[:size], kind="mergesort")
    for s in range(size):
        out_pos[qi, s] = hid[order[s]]
        out_score[qi, s] = hs[order[s]]


@numba.njit(inline="always")
def emit_ids(hs, hid, size, ids, l2, out_ids, out_score, qi):
    """Like emit, with positions mapped to ids and, for l2, scores turned
    back into squared distances (lower is better); fills the padding too
    (ids -1, scores -inf, or +inf for l2)."""
    order = np.argsort(-hs[:size], kind="mergesort")
    for s in range(size):
        out_ids[qi, s] = ids[hid[order[s]]]
        out_score[qi, s] = -hs[order[s]] if l2 else hs[order[s]]
    for s in range(size, out_ids.shape[1]):
        out_ids[qi, s] = -1
        out_score[qi, s] = np.inf if l2 else -np.inf


# -- heaps that break ties by position ---------------------------------------------------
@numba.njit(inline="always")
def beats(s, i, hs0, hi0):
    """(s, i) ranks above (hs0, hi0): a higher score, or the same score and a
    lower position."""
    return s > hs0 or (s == hs0 and i < hi0)


@numba.njit(inline="always")
def sift_lex(hs, hi, size, j):
    """Restore the min-heap on (score, -position) of `size` entries after
    entry j went up."""
    while True:
        a = 2 * j + 1
        if a >= size:
            break
        c = a
        b = a + 1
        if b < size and beats(hs[a], hi[a], hs[b], hi[b]):
            c = b
        if not beats(hs[j], hi[j], hs[c], hi[c]):
            break
        hs[c], hs[j] = hs[j], hs[c]
        hi[c], hi[j] = hi[j], hi[c]
        j = c


@numba.njit(inline="always")
def push_lex(hs, hi, size, k, s, i):
    """Offer (s, i) to the min-heap of the best k by (score, -position);
    returns the new size."""
    if size < k:
        j = size
        hs[j] = s
        hi[j] = i
        while j > 0:
            p = (j - 1) // 2
            if not beats(hs[p], hi[p], hs[j], hi[j]):
                break
            hs[p], hs[j] = hs[j], hs[p]
            hi[p], hi[j] = hi[j], hi[p]
            j = p
        return size + 1
    if not beats(s, i, hs[0], hi[0]):
        return size
    hs[0] = s
    hi[0] = i
    sift_lex(hs, hi, size, 0)
    return size


@numba.njit(inline="always")
def pop_best_first(hs, hid, size, lex, ids, neg, out_ids, out_score, qi):
    """Empty a min-heap of `size` entries (by score, or by (score,
    -position) when `lex`) into row qi of the outputs, best first: positions
    mapped through `ids` (when not empty), scores negated when `neg` (l2
    distances). Entries from `size` on are left as they are."""
    mapped = ids.shape[0] > 0
    for t in range(size - 1, -1, -1):  # pop the worst first, into the row from the back
        p = hid[0]
        out_ids[qi, t] = ids[p] if mapped else p
        out_score[qi, t] = -hs[0] if neg else hs[0]
        size = drop_root(hs, hid, size, lex)


@numba.njit(inline="always")
def drop_root(hs, hid, size, lex):
    """Remove the root (the worst entry) of a min-heap of `size` entries
    (ordered by score, or by (score, -position) when `lex`); returns the new
    size."""
    last = size - 1
    hs[0] = hs[last]
    hid[0] = hid[last]
    if lex:
        sift_lex(hs, hid, last, 0)
    else:
        sift(hs, hid, last, 0)
    return last
