"""Arithmetic the compiled kernels share: the fast-math flags, dot
products, affine layers, exact scores, and the query preparation every
search does first (finite check, unit length for cosine)."""

from __future__ import annotations

import numba
import numpy as np

from ..errors import InvalidInputError
from ..validation import MAX_NORM

# fast-math for the search kernels, without "ninf": top-m and the heaps use
# infinities as sentinels. Inputs are checked finite before any of it runs.
FAST = {"nnan", "nsz", "reassoc", "contract", "arcp"}


# -- queries -------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def prepare_rows(q, lo, hi, cosine, out):
    """Copy rows lo .. hi - 1 of q float32 (n, d) into out (hi - lo, d),
    scaled to unit length for cosine (norms summed in float64, so huge
    values do not overflow). Returns -1, or the first row holding NaN or inf
    (checked on the bits, which no fast-math can fold away) or, for l2 and
    ip, a norm above MAX_NORM (see query_error)."""
    d = q.shape[1]
    for r in range(lo, hi):
        bits = q[r].view(np.int32)
        bad = False
        for j in range(d):
            bad |= (bits[j] & 0x7F800000) == 0x7F800000
        if bad:
            return r
        s = 0.0
        for j in range(d):
            v = np.float64(q[r, j])
            s += v * v
        if cosine:
            norm = np.sqrt(s) if s > 0 else 1.0
            for j in range(d):
                out[r - lo, j] = np.float32(q[r, j] / norm)
        elif s > MAX_NORM * MAX_NORM:
            return r
        else:
            for j in range(d):  # element by element: a row assignment allocates (callers without counts)
                out[r - lo, j] = q[r, j]
    return -1


def query_error(q: np.ndarray, row: int) -> InvalidInputError:
    """The error for row `row` of the raw queries q, which a kernel refused."""
    v = np.asarray(q[row], dtype=np.float64)
    if not np.isfinite(v).all():
        return InvalidInputError(f"queries hold NaN or inf (first in row {row})")
    return InvalidInputError(f"queries row {row} has norm {np.sqrt(v @ v):.3g}, too large: "
                             f"l2 and ip distances need norms <= {MAX_NORM:g}")


def prepare(q: np.ndarray, cosine: bool) -> tuple[np.ndarray, int]:
    """(q checked and, for cosine, normalised as every search does it; the
    first row holding NaN or inf, or -1). q float32 (n, d) C-contiguous."""
    out = np.empty_like(q)
    bad = prepare_rows(q, 0, q.shape[0], cosine, out)
    return out, bad



# -- dense arithmetic ------------------------------------------------------------------
@numba.njit(inline="always")
def dot(a, b):
    s = np.float32(0.0)
    for j in range(a.shape[0]):
        s += a[j] * b[j]
    return s



@numba.njit(inline="always")
def affine(x, lo, n, a, b, out, relu):
    """out[t] = b + x[lo + t] a for t < n (x (·, i), a (i, o)), optionally relu."""
    width = a.shape[1]
    for t in range(n):
        for c in range(width):
            out[t, c] = b[c]
    for j in range(a.shape[0]):
        for t in range(n):
            v = x[lo + t, j]
            for c in range(width):
                out[t, c] += v * a[j, c]
    if relu:
        for t in range(n):
            for c in range(width):
                out[t, c] = max(out[t, c], np.float32(0.0))



@numba.njit(inline="always")
def score(q, qn, x, sqn, i, l2):
    s = dot(q, x[i])
    if l2:
        return -(qn - 2 * s + sqn[i])
    return s

