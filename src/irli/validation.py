"""Checks on user arrays and arguments, each failing with a one-line message."""

from __future__ import annotations

import numbers

import numpy as np

from .errors import InvalidInputError


def as_matrix(
    x, name: str = "vectors", dim: int | None = None, allow_1d: bool = False,
    finite: bool = True,
) -> np.ndarray:
    """`x` as a C-contiguous float32 (n, d) array, checked.

    Integer and float64 input is converted; booleans, complex, strings and
    objects are refused, as are empty arrays, NaN/inf (unless `finite` is
    False: the caller checks) and a width other than `dim`. With `allow_1d`,
    a (d,) vector becomes (1, d). A float32 C-contiguous array (a memory map
    included) is returned without a copy.
    """
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as e:
            raise InvalidInputError(f"{name} could not be read as an array: {e}") from None
    kind = x.dtype.kind
    if kind not in "fiu":
        raise InvalidInputError(
            f"{name} must hold numbers (float or int), got dtype {x.dtype}"
        )
    if x.ndim == 1 and allow_1d:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        want = "a (n, d) matrix or a (d,) vector" if allow_1d else "a (n, d) matrix"
        raise InvalidInputError(f"{name} must be {want}, got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidInputError(f"{name} is empty (shape {x.shape})")
    if dim is not None and x.shape[1] != dim:
        raise InvalidInputError(
            f"{name} have dimension {x.shape[1]}, the index has dimension {dim}"
        )
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        if kind == "f" and np.abs(x).max(initial=0) > np.finfo(np.float32).max:
            raise InvalidInputError(f"{name} hold values too large for float32")
        x = np.ascontiguousarray(x, dtype=np.float32)
    if finite:
        check_finite(x, name)
    return x


def check_finite(x: np.ndarray, name: str, chunk: int = 1 << 16) -> None:
    """Raise if `x` (float, (n, d)) holds NaN or inf; scans in row chunks."""
    for s in range(0, x.shape[0], chunk):
        part = x[s : s + chunk]
        if not np.isfinite(part).all():
            bad = s + int(np.nonzero(~np.isfinite(part).all(axis=1))[0][0])
            raise InvalidInputError(f"{name} hold NaN or inf (first in row {bad})")


# the largest vector norm l2 and ip indexes accept: squared norms and dot
# products of such vectors stay far inside float32's range (3.4e38)
MAX_NORM = 1e18


def check_norms(x: np.ndarray, name: str, chunk: int = 1 << 16) -> None:
    """Raise if a row of `x` (float32 (n, d), finite) has a norm above
    MAX_NORM, where l2 distances and inner products would overflow."""
    for s in range(0, x.shape[0], chunk):
        part = x[s : s + chunk].astype(np.float64)
        sq = np.einsum("ij,ij->i", part, part)
        if (sq > MAX_NORM**2).any():
            bad = s + int(np.argmax(sq > MAX_NORM**2))
            raise InvalidInputError(f"{name} row {bad} has norm {np.sqrt(sq[bad - s]):.3g}, too large: "
                                    f"l2 and ip distances need norms <= {MAX_NORM:g}")


def positive_int(v, name: str) -> int:
    """`v` as a positive Python int, or a clear error."""
    if type(v) is int and v > 0:  # the common case, first
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise InvalidInputError(f"{name} must be a positive integer, got {v!r}")
    if v <= 0:
        raise InvalidInputError(f"{name} must be a positive integer, got {v}")
    return int(v)


def normalize_rows(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Rows of `x` (float32 (n, d)) scaled to unit length; zero rows stay
    zero. Norms are taken in float64, so rows of huge values do not overflow."""
    if out is None:
        out = np.empty_like(x)
    for s in range(0, x.shape[0], 1 << 16):
        part = x[s : s + (1 << 16)].astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", part, part))[:, None]
        norms[norms == 0] = 1.0
        np.divide(part, norms, out=part)
        out[s : s + part.shape[0]] = part
    return out


def as_ids(ids, n: int | None = None, name: str = "ids") -> np.ndarray:
    """`ids` as int64 (n,), checked: integers, 1-D, length `n` when given,
    >= 0 (-1 marks a missing result)."""
    a = np.asarray(ids)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise InvalidInputError(f"{name} must be a 1-D array, got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        if a.dtype.kind != "f" or not np.isfinite(a).all() or (a != np.round(a)).any():
            bad = f"dtype {a.dtype}" if a.dtype.kind != "f" else f"{float(a[~(np.isfinite(a) & (a == np.round(a)))][0])!r}"
            raise InvalidInputError(f"{name} must be integers, got {bad}")
        if np.abs(a).max() >= 2.0 ** 63:
            raise InvalidInputError(f"{name} must fit in int64, got {a[np.argmax(np.abs(a))]:g}")
        a = a.astype(np.int64)
    if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
        raise InvalidInputError(f"{name} must fit in int64")
    a = a.astype(np.int64, copy=False)
    if n is not None and a.shape[0] != n:
        raise InvalidInputError(f"{name} has {a.shape[0]} entries for {n} vectors")
    if a.size and a.min() < 0:
        raise InvalidInputError(f"{name} must be >= 0 (-1 marks a missing result), got {int(a.min())}")
    return a


def first_duplicate(ids: np.ndarray) -> int | None:
    """An id that occurs twice in `ids` int64 (n,), or None."""
    if ids.size < 2:
        return None
    s = np.sort(ids)
    dup = np.flatnonzero(s[1:] == s[:-1])
    return int(s[dup[0]]) if dup.size else None
