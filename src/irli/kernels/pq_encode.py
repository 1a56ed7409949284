"""Score-aware (anisotropic) 4-bit PQ encoding and codebook updates, the
compiled side of irli.index.codes (see its docstring for the loss):
`ah_encode` finds each item's codes by coordinate descent on
|e|^2 + (eta - 1) (e . xdir)^2, `ah_update` refits the centroids for fixed
codes."""

from __future__ import annotations

import numba
import numpy as np


def ah_encode(r, xdir, book, eta, passes, out):
    """Anisotropic codes of targets r float32 (n, d) (x, or x - its bucket
    centre) for items of unit direction xdir float32 (n, d), into out uint8
    (n, M): the nearest code per sub-quantiser, then `passes` rounds of
    coordinate descent on |e|^2 + (eta - 1) (e . xdir)^2. One dimension per
    sub-quantiser (d / M = 1, GloVe's d = 50) has its own kernel."""
    if book.shape[2] == 1:
        order = np.argsort(book[:, :, 0], axis=1, kind="stable").astype(np.uint8)
        values = np.ascontiguousarray(np.take_along_axis(book[:, :, 0], order, axis=1), dtype=np.float32)
        rank = np.argsort(order, axis=1).astype(np.uint8)
        _ah_encode_1d(r, xdir, values, order, rank, eta, passes, out)
    else:
        _ah_encode_any(r, xdir, book, eta, passes, out)


@numba.njit(inline="always")
def _nearest_sorted(values, j, y):
    """The rank in values[j] (float32 (16,), increasing) of the value nearest y."""
    kc = values.shape[1]
    lo = 0
    for c in range(kc):  # how many are below y: compares without branches
        lo += values[j, c] < y
    if lo == kc:
        return lo - 1
    if lo > 0 and y - values[j, lo - 1] <= values[j, lo] - y:
        return lo - 1
    return lo


@numba.njit(parallel=True, nogil=True, cache=True)
def _ah_encode_1d(r, xdir, values, order, rank, eta, passes, out):
    """ah_encode for d / M = 1: values float32 (M, 16) each sub-quantiser's
    centroids in increasing order, order uint8 (M, 16) their codes, rank
    uint8 (M, 16) each code's place in values. With one
    dimension the loss of sub-quantiser j's code, the others fixed, is a
    parabola in its error v = r_j - b: (1 + (eta - 1) x_j^2) v^2 +
    2 (eta - 1) s' x_j v + const (s' the rest of e . x), so the best code is
    the centroid nearest r_j - v*, v* = -(eta - 1) s' x_j / (1 + (eta - 1) x_j^2):
    a binary search instead of trying all 16."""
    n, d = r.shape
    k1 = eta - 1.0
    for i in numba.prange(n):
        s = 0.0
        ee = 0.0
        for j in range(d):
            k = _nearest_sorted(values, j, r[i, j])
            out[i, j] = order[j, k]
            v = r[i, j] - values[j, k]
            s += v * xdir[i, j]
            ee += v * v
        for _ in range(passes):
            changed = 0
            for j in range(d):
                xj = xdir[i, j]
                kc = np.int64(rank[j, out[i, j]])
                vc = r[i, j] - values[j, kc]
                rest_s = s - vc * xj
                rest_e = ee - vc * vc
                vstar = -k1 * rest_s * xj / (1.0 + k1 * xj * xj)
                k = _nearest_sorted(values, j, np.float32(r[i, j] - vstar))
                if k == kc:
                    continue
                v = r[i, j] - values[j, k]
                loss = rest_e + v * v + k1 * (rest_s + v * xj) * (rest_s + v * xj)
                if loss < ee + k1 * s * s:
                    changed += 1
                    out[i, j] = order[j, k]
                    s = rest_s + v * xj
                    ee = rest_e + v * v
            if changed == 0:
                break


@numba.njit(parallel=True, nogil=True, cache=True)
def _ah_encode_any(r, xdir, book, eta, passes, out):
    """ah_encode for any d / M: each sub-quantiser's 16 candidates tried in
    turn."""
    n, d = r.shape
    m, kc, ds = book.shape
    for i in numba.prange(n):
        e = np.empty(d, dtype=np.float32)
        s = 0.0
        ee = 0.0
        for j in range(m):
            best = np.inf
            bc = 0
            for c in range(kc):
                dist = 0.0
                for t in range(ds):
                    v = r[i, j * ds + t] - book[j, c, t]
                    dist += v * v
                if dist < best:
                    best = dist
                    bc = c
            out[i, j] = bc
            for t in range(ds):
                v = r[i, j * ds + t] - book[j, bc, t]
                e[j * ds + t] = v
                s += v * xdir[i, j * ds + t]
                ee += v * v
        for _ in range(passes):
            changed = 0
            for j in range(m):
                sj = 0.0
                ej = 0.0
                for t in range(ds):
                    sj += e[j * ds + t] * xdir[i, j * ds + t]
                    ej += e[j * ds + t] * e[j * ds + t]
                rest_s = s - sj
                rest_e = ee - ej
                cur = out[i, j]
                best = ee + (eta - 1.0) * s * s
                bc = cur
                bs = sj
                be = ej
                for c in range(kc):
                    if c == cur:
                        continue
                    s2 = 0.0
                    e2 = 0.0
                    for t in range(ds):
                        v = r[i, j * ds + t] - book[j, c, t]
                        s2 += v * xdir[i, j * ds + t]
                        e2 += v * v
                    loss = rest_e + e2 + (eta - 1.0) * (rest_s + s2) * (rest_s + s2)
                    if loss < best:
                        best = loss
                        bc = c
                        bs = s2
                        be = e2
                if bc != cur:
                    changed += 1
                    out[i, j] = bc
                    for t in range(ds):
                        e[j * ds + t] = r[i, j * ds + t] - book[j, bc, t]
                    s = rest_s + bs
                    ee = rest_e + be
            if changed == 0:
                break


@numba.njit(nogil=True, cache=True)
def ah_update(r, xdir, codes, book, eta):
    """One round of codebook updates for fixed codes (uint8 (n, M)): each
    sub-quantiser's centroids in turn minimise the anisotropic loss, the
    others held fixed (a ds x ds solve per centroid). Updates book in place."""
    n, d = r.shape
    m, kc, ds = book.shape
    e = np.empty((n, d), dtype=np.float32)
    s = np.zeros(n, dtype=np.float64)
    for i in range(n):
        for j in range(m):
            c = codes[i, j]
            for t in range(ds):
                v = r[i, j * ds + t] - book[j, c, t]
                e[i, j * ds + t] = v
                s[i] += v * xdir[i, j * ds + t]
    for j in range(m):
        a = np.zeros((kc, ds, ds))
        b = np.zeros((kc, ds))
        cnt = np.zeros(kc)
        for i in range(n):
            c = codes[i, j]
            sj = 0.0
            xr = 0.0
            for t in range(ds):
                sj += e[i, j * ds + t] * xdir[i, j * ds + t]
                xr += xdir[i, j * ds + t] * r[i, j * ds + t]
            rest = s[i] - sj
            cnt[c] += 1
            for t in range(ds):
                b[c, t] += r[i, j * ds + t] + (eta - 1.0) * xdir[i, j * ds + t] * (rest + xr)
                for u in range(ds):
                    a[c, t, u] += (eta - 1.0) * xdir[i, j * ds + t] * xdir[i, j * ds + u]
        for c in range(kc):
            if cnt[c] == 0:
                continue
            for t in range(ds):
                a[c, t, t] += cnt[c]
            w = np.linalg.solve(a[c], b[c])
            for t in range(ds):
                book[j, c, t] = w[t]
        for i in range(n):  # the new centroids change these items' errors
            c = codes[i, j]
            for t in range(ds):
                new = r[i, j * ds + t] - book[j, c, t]
                s[i] += (new - e[i, j * ds + t]) * xdir[i, j * ds + t]
                e[i, j * ds + t] = new
