"""Extreme-classification data: the Extreme Classification Repository text
formats, and label sets in the shapes users hand us.

Combined format (one file):
    N F L                      header: points, features, labels
    l1,l2,... f:v f:v ...      one point per line; 0-based ids; a point
                               without labels starts with a space

Split format (two files, each a sparse matrix):
    N C                        header: rows, columns
    c:v c:v ...                one row per line (features, or labels with v = 1)

Features come back as scipy CSR float32 (N, F) and labels as CSR float32
(N, L) of 0/1, column ids sorted within rows, duplicates summed (features) or
collapsed (labels). Errors name the file and line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError


def _csr(indptr, indices, data, shape):
    import scipy.sparse as sp

    m = sp.csr_matrix((np.asarray(data, dtype=np.float32), np.asarray(indices, dtype=np.int32),
                       np.asarray(indptr, dtype=np.int64)), shape=shape)
    m.sum_duplicates()  # also sorts the column ids
    return m


def _header(path: Path, line: str, n_fields: int, names: str) -> list[int]:
    parts = line.split()
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) != n_fields or any(v < 0 for v in vals):
        raise InvalidInputError(f"{path}:1: header must be {n_fields} non-negative integers ({names}), got {line.strip()!r}")
    return vals


def _pairs(path: Path, lineno: int, tokens: list[str], n_cols: int, what: str,
           indices: list[int], data: list[float]) -> None:
    for tok in tokens:
        col, sep, val = tok.partition(":")
        try:
            c = int(col)
            v = float(val)
        except ValueError:
            c, v = -1, float("nan")
        if not sep or c < 0 or not np.isfinite(v):
            raise InvalidInputError(f"{path}:{lineno}: malformed {what} pair {tok!r} (expected id:value)")
        if c >= n_cols:
            raise InvalidInputError(f"{path}:{lineno}: {what} id {c} out of range (the header says {n_cols} {what}s)")
        indices.append(c)
        data.append(v)


def _lines(path: str | os.PathLike) -> tuple[Path, list[str]]:
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"{p}: no such file")
    try:
        with open(p, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"{p}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or not lines[0].strip():
        raise InvalidInputError(f"{p}: empty file (expected a header line)")
    return p, lines


def _check_count(p: Path, rows: list[str], n: int) -> None:
    if len(rows) != n:
        raise InvalidInputError(f"{p}: the header says {n} rows but the file has {len(rows)}")


def read_xc(path: str | os.PathLike):
    """Read a combined-format file: (X CSR float32 (N, F), Y CSR float32 (N, L))."""
    p, lines = _lines(path)
    n, n_feat, n_lab = _header(p, lines[0], 3, "points features labels")
    rows = lines[1:]
    _check_count(p, rows, n)
    xp, xi, xv = [0], [], []
    yp, yi = [0], []
    for lineno, line in enumerate(rows, start=2):
        tokens = line.split(" ")
        head = tokens[0] if tokens else ""
        if ":" in head:  # no label field at all (some writers drop the space)
            head, feats = "", tokens
        else:
            feats = tokens[1:]
        if head:
            for lab in head.split(","):
                try:
                    li = int(lab)
                except ValueError:
                    raise InvalidInputError(f"{p}:{lineno}: malformed label id {lab!r}") from None
                if not 0 <= li < n_lab:
                    raise InvalidInputError(f"{p}:{lineno}: label id {li} out of range (the header says {n_lab} labels)")
                yi.append(li)
        yp.append(len(yi))
        _pairs(p, lineno, [t for t in feats if t], n_feat, "feature", xi, xv)
        xp.append(len(xi))
    x = _csr(xp, xi, xv, (n, n_feat))
    y = _csr(yp, yi, np.ones(len(yi)), (n, n_lab))
    y.data[:] = 1.0  # a label listed twice is still one label
    return x, y


def read_sparse(path: str | os.PathLike):
    """Read one split-format sparse matrix file: CSR float32 (N, C)."""
    p, lines = _lines(path)
    n, n_cols = _header(p, lines[0], 2, "rows columns")
    rows = lines[1:]
    _check_count(p, rows, n)
    ip, ii, iv = [0], [], []
    for lineno, line in enumerate(rows, start=2):
        _pairs(p, lineno, line.split(), n_cols, "column", ii, iv)
        ip.append(len(ii))
    return _csr(ip, ii, iv, (n, n_cols))


def read_xc_split(x_path: str | os.PathLike, y_path: str | os.PathLike):
    """Read the split variant (features file, labels file): (X, Y) as `read_xc`."""
    x, y = read_sparse(x_path), read_sparse(y_path)
    if x.shape[0] != y.shape[0]:
        raise InvalidInputError(f"{x_path} has {x.shape[0]} rows but {y_path} has {y.shape[0]}")
    y.data[:] = 1.0
    return x, y


def _fmt_row(m, i: int) -> str:
    s, e = m.indptr[i], m.indptr[i + 1]
    return " ".join(f"{c}:{v:.6g}" for c, v in zip(m.indices[s:e].tolist(), m.data[s:e].tolist()))


def _atomic_write(path: str | os.PathLike, text_lines) -> Path:
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for line in text_lines:
                fh.write(line)
                fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def write_xc(path: str | os.PathLike, x, y) -> Path:
    """Write features `x` (N, F) and labels `y` (N, L) (anything `as_csr` /
    `label_matrix` take) in the combined format, atomically."""
    x = as_csr(x)
    y = label_matrix(y, n_rows=x.shape[0])

    def lines():
        yield f"{x.shape[0]} {x.shape[1]} {y.shape[1]}"
        for i in range(x.shape[0]):
            labs = ",".join(map(str, y.indices[y.indptr[i]:y.indptr[i + 1]].tolist()))
            yield f"{labs} {_fmt_row(x, i)}".rstrip(" ") if labs else f" {_fmt_row(x, i)}"

    return _atomic_write(path, lines())


def write_sparse(path: str | os.PathLike, m) -> Path:
    """Write one sparse matrix in the split format, atomically."""
    m = as_csr(m)
    return _atomic_write(path, [f"{m.shape[0]} {m.shape[1]}"] + [_fmt_row(m, i) for i in range(m.shape[0])])


# -- conversions -----------------------------------------------------------------
def as_csr(x, name: str = "X"):
    """Features as CSR float32 (n, F): a scipy sparse matrix or a 2-D array.
    Rejects NaN/inf, negative shapes and non-numeric dtypes."""
    import scipy.sparse as sp

    if sp.issparse(x):
        m = _sparse(x, name)
    else:
        a = np.asarray(x)
        if a.ndim != 2:
            raise InvalidInputError(f"{name} must be 2-D (n, features), got shape {a.shape}")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise InvalidInputError(f"{name} must be numeric, got dtype {a.dtype}")
        m = sp.csr_matrix(a.astype(np.float32))
    if not np.isfinite(m.data).all():
        raise InvalidInputError(f"{name} contains NaN or infinite values")
    m.sum_duplicates()
    return m


def _sparse(x, name: str):
    """A scipy sparse matrix as CSR float32, its structure checked first
    (scipy itself raises deep inside, or reads out of bounds, on column
    indices past the shape or a broken row pointer)."""
    import scipy.sparse as sp

    if x.format in ("csr", "csc"):
        inner = x.shape[1] if x.format == "csr" else x.shape[0]
        ptr, idx = np.asarray(x.indptr), np.asarray(x.indices)
        if ptr.shape != (x.shape[0 if x.format == "csr" else 1] + 1,) or ptr[0] != 0 or (np.diff(ptr) < 0).any() \
                or ptr[-1] > idx.size or ptr[-1] > np.asarray(x.data).size:
            raise InvalidInputError(f"{name}: a malformed {x.format.upper()} matrix (its indptr does not fit "
                                    "its indices)")
        used = idx[: ptr[-1]]
        if used.size and (used.min() < 0 or used.max() >= inner):
            bad = int(used.max()) if used.max() >= inner else int(used.min())
            raise InvalidInputError(f"{name}: {'column' if x.format == 'csr' else 'row'} index {bad} is out of "
                                    f"range for shape {x.shape}")
    try:
        return sp.csr_matrix(x, dtype=np.float32)
    except (ValueError, TypeError) as e:
        raise InvalidInputError(f"{name}: not a usable sparse matrix ({' '.join(str(e).split())})") from None


# label ids above this are refused when the labels in use are few (16 x fewer
# than the columns they would make): the model allocates per label column
MAX_SPARSE_LABELS = 1 << 20


def _check_label_space(n_cols: int, used: np.ndarray) -> None:
    """Refuse `n_cols` label columns when the label ids `used` are far fewer."""
    if n_cols > MAX_SPARSE_LABELS:
        distinct = np.unique(used).size
        if n_cols > 16 * distinct:
            raise InvalidInputError(f"label id {n_cols - 1} makes {n_cols} label columns for {distinct} "
                                    "distinct labels; number the labels 0 .. L-1")


def label_matrix(y, n_rows: int | None = None, n_labels: int | None = None):
    """Label sets as CSR float32 (n, L) of 0/1.

    `y` is a sparse or dense 0/1 matrix, or a list of label-id lists (n_labels
    defaults to the largest id + 1). Rejects negative or out-of-range ids and
    values other than 0/1.
    """
    import scipy.sparse as sp

    if sp.issparse(y) or (isinstance(y, np.ndarray) and y.ndim == 2):
        m = _sparse(y, "Y") if sp.issparse(y) else sp.csr_matrix(y, dtype=np.float32)
        m.sum_duplicates()
        m.eliminate_zeros()
        if m.nnz and not np.all(m.data == 1):
            raise InvalidInputError("Y must hold only 0 and 1")
        if n_labels is not None and m.shape[1] != n_labels:
            raise InvalidInputError(f"Y has {m.shape[1]} label columns, expected {n_labels}")
        if n_labels is None:
            _check_label_space(m.shape[1], m.indices)
    else:
        try:
            raw = [np.asarray(list(r)).ravel() for r in y]
        except (TypeError, ValueError):
            raise InvalidInputError("Y must be a 0/1 matrix or a list of label-id lists of integers") from None
        rows = []
        for i, r in enumerate(raw):
            if r.size and r.dtype.kind not in "iu":
                if r.dtype.kind != "f" or not np.isfinite(r).all() or (r != np.round(r)).any():
                    raise InvalidInputError(f"Y row {i}: label ids must be integers, got {r.tolist()[:5]!r}")
                if np.abs(r).max() >= 2.0 ** 31:
                    raise InvalidInputError(f"Y row {i}: label id {r[np.argmax(np.abs(r))]:g} is too large")
            if r.dtype.kind == "u" and r.size and r.max() >= 2 ** 31:
                raise InvalidInputError(f"Y row {i}: label id {int(r.max())} is too large")
            rows.append(r.astype(np.int64))
        flat = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        if flat.size and flat.min() < 0:
            raise InvalidInputError(f"negative label id {int(flat.min())} in Y")
        top = int(flat.max()) + 1 if flat.size else 0
        if n_labels is None:
            _check_label_space(top, flat)
        n_labels = top if n_labels is None else n_labels
        if top > n_labels:
            raise InvalidInputError(f"label id {top - 1} out of range for {n_labels} labels")
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(r) for r in rows])
        m = _csr(indptr, flat, np.ones(flat.size), (len(rows), n_labels))
        m.data[:] = 1.0
    if n_rows is not None and m.shape[0] != n_rows:
        raise InvalidInputError(f"Y has {m.shape[0]} rows but X has {n_rows}")
    return m


def looks_like_xc(path: str | os.PathLike) -> bool:
    """Whether `path` is a text file whose first line is an `N F L` header."""
    p = Path(path)
    if p.suffix.lower() in (".npy", ".fvecs", ".ivecs", ".bvecs", ".hdf5", ".h5") or not p.is_file():
        return False
    try:
        with open(p, "rb") as fh:
            first = fh.readline(256).decode("ascii").split()
    except (OSError, UnicodeDecodeError):
        return False
    return len(first) == 3 and all(t.isdigit() for t in first)
