"""Compiled routing: every repetition's router, as stacked affine layers
(one or two, see irli.model.routers.Routing), applied to a block of
queries, and the top-m buckets of each (with their softmax probabilities or
raw scores)."""

from __future__ import annotations

import numba
import numpy as np

from .scoring import FAST, dot
from .simd import FMA_ROWS, ROWS_AHEAD, as_float, dot8x8, dot8x64, fma16x1, fma16x8, fma64x1, prefetch_row
from .topk import at_least, top_row

# _BLOCK queries pass over each 16-bucket slice of a layer's weights (8 KB at 128 inputs, kept in
# L1) eight at a time (simd.fma16x8, the sums in registers), instead of the whole layer streaming
# from L3 (2 MB for 4 repetitions of 128 x 1,024) for a few queries.
_BLOCK = 64


# Rounding slack of a float32 dot product of length d, per unit of |q| (|a_b| + |b_b|): the
# standard bound (d + 2) 2^-24 for each of the two orders summed (approximate and exact), doubled.
_ROUNDING = 4.0 * 2.0 ** -24


#: buckets per tile of a layer's weights as the kernels read them (see tile_layer)
TILE = 64


def tile_layer(a: np.ndarray) -> np.ndarray:
    """A stack of layers a (R, i, B) (float32, or uint16 half-precision
    bits) tile-major, as `_layer` reads it: (R, T, i, TILE), T = ceil(B /
    TILE), the columns c0 .. c0 + TILE - 1 of every input row contiguous
    (zero-padded past B). Read in (i, B) order, a tile's 64 columns sit
    4 KB apart per input at B = 1,024: every row of a tile lands in the
    same L1 set, and one query's pass ran 3x slower (issue 24)."""
    reps, i, b = a.shape
    t = -(-b // TILE)
    out = np.zeros((reps, t, i, TILE), dtype=a.dtype)
    for s in range(t):
        c0 = s * TILE
        out[:, s, :, : min(TILE, b - c0)] = a[:, :, c0 : c0 + TILE]
    return out


@numba.njit(inline="always")
def _layer(x, lo, n, w, b, out):
    """out[t, c] = b[c] + x[lo + t] a[:, c] for t < n, c < B = b.shape[0],
    the weights a (i, B) tile-major in w (T, i, TILE) (tile_layer; float32
    or uint16 half-precision bits), out (G, B): 16 buckets at a time for
    every row of the block (simd.fma16x8), 64 for one row alone, each sum
    in the same order alone and in a group."""
    h = x.shape[1]
    width = b.shape[0]
    wide = width - width % 16
    full = width - width % TILE
    tile = h * TILE
    if n == 1:
        for c0 in range(0, full, TILE):
            fma64x1(x, lo * h, h, h, w, (c0 // TILE) * tile, TILE, b, c0, out, c0, width, 1)
        for c0 in range(full, wide, 16):
            fma16x1(x, lo * h, h, h, w, (c0 // TILE) * tile + c0 % TILE, TILE, b, c0, out, c0, width, 1)
    else:
        for c0 in range(0, wide, 16):
            at = (c0 // TILE) * tile + c0 % TILE
            for s in range(0, n, FMA_ROWS):
                fma16x8(x, (lo + s) * h, h, h, w, at, TILE, b, c0, out, s * width + c0, width,
                        min(FMA_ROWS, n - s))
    for c in range(wide, width):
        for t in range(n):
            acc = b[c]
            for j in range(h):
                acc += x[lo + t, j] * as_float(w[c // TILE, j, c % TILE])
            out[t, c] = acc


def tile_layer8(a: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stack of last layers a float32 (R, H, B) with biases (R, B) in 8
    bits, as `_layer8` reads them: int8 (R, T, G, 4 TILE) with G = ceil(H /
    4), and float32 (R, 2, T TILE): per bucket c a scale s_c = max_j
    |a[j, c]| / 127 (row 0) and the bias (row 1), its weights
    round(a[j, c] / s_c); tile t, group g holds, for each of its TILE
    buckets, the 4 weights of inputs 4 g .. 4 g + 3 (zero-padded past H and
    B)."""
    reps, h, b = a.shape
    scale, w8 = _bytes8(a)
    g = -(-h // 4)
    q = np.zeros((reps, 4 * g, b), dtype=np.int8)
    q[:, :h, :] = w8
    t = -(-b // TILE)
    out = np.zeros((reps, t, g, TILE, 4), dtype=np.int8)
    grouped = q.reshape(reps, g, 4, b).transpose(0, 1, 3, 2)  # (R, G, B, 4)
    for s in range(t):
        c0 = s * TILE
        out[:, s, :, : min(TILE, b - c0), :] = grouped[:, :, c0 : c0 + TILE, :]
    sb = np.zeros((reps, 2, t * TILE), dtype=np.float32)
    sb[:, 0, :b] = scale
    sb[:, 1, :b] = bias
    return out.reshape(reps, t, g, 4 * TILE), sb


def _bytes8(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a float32 (R, H, B) as signed bytes per column: (scale float32 (R,
    B) = max_j |a[j, c]| / 127, or 1 for an all-zero column; w8 int8 (R, H,
    B) = round(a / scale))."""
    scale = np.abs(a).max(axis=1) / np.float32(127.0)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    return scale, np.clip(np.rint(a / scale[:, None, :]), -127, 127).astype(np.int8)


def tile_rows8(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-layer routers' weights a float32 (R, d, B) in 8 bits for a query
    routed alone (`_quantize_query`): (tiles8, scale8) as tile_layer8 lays
    them out, with row 1 of scale8 the offset term s_c 128 sum_j w8[j, c]
    of each bucket (the query's bytes carry +128: vpdpbusd multiplies
    unsigned by signed bytes) in place of a bias, and err float32 (R,): the
    largest |a[:, c] - s_c w8[:, c]| over the buckets, for the exact
    re-score's bound."""
    scale, w8 = _bytes8(a)
    offset = (scale.astype(np.float64) * 128.0 * w8.sum(axis=1, dtype=np.int64)).astype(np.float32)
    tiles8, scale8 = tile_layer8(a, offset)
    err = np.linalg.norm(a.astype(np.float64) - scale[:, None, :] * w8, axis=1).max(axis=1) * (1 + 1e-6)
    return tiles8, scale8, err.astype(np.float32)


@numba.njit(inline="always")
def _quantize_query(qv, hq, hsc):
    """Query qv float32 (d,) as bytes hq[0] (uint8, round(qv / s) + 128,
    zero-padded) with its scale s = max |qv| / 127 in hsc[0]; returns |qv -
    s round(qv / s)|, the rounding's norm (for the re-score's bound)."""
    d = qv.shape[0]
    mx = np.float32(0.0)
    for k in range(d):
        mx = max(mx, abs(qv[k]))
    s = mx / np.float32(127.0)
    inv = np.float32(127.0) / mx if mx > 0 else np.float32(0.0)
    err = np.float32(0.0)
    for k in range(d):
        u = min(max(np.rint(qv[k] * inv), np.float32(-127.0)), np.float32(127.0))
        hq[0, k] = np.uint8(u + np.float32(128.0))
        e = qv[k] - s * u
        err += e * e
    for k in range(d, hq.shape[1]):
        hq[0, k] = 0
    hsc[0] = s
    return np.sqrt(err) * np.float32(1.0 + 1e-5)


@numba.njit(inline="always")
def _quantize(h, n, hq, hsc):
    """Rows t < n of h float32 (G, H) (non-negative: after the ReLU) as
    unsigned bytes hq uint8 (G, 4 ceil(H / 4)) (zero-padded) with one
    scale each, hsc float32 (G,): h[t] ~ hsc[t] hq[t]."""
    width = h.shape[1]
    for t in range(n):
        mx = np.float32(0.0)
        for j in range(width):
            mx = max(mx, h[t, j])
        inv = np.float32(255.0) / mx if mx > 0 else np.float32(0.0)
        hsc[t] = mx / np.float32(255.0)
        for j in range(width):
            hq[t, j] = np.uint8(h[t, j] * inv + np.float32(0.5))
        for j in range(width, hq.shape[1]):
            hq[t, j] = 0


@numba.njit(inline="always")
def _layer8(hq, n, w8, sc, hsc, b, out):
    """out[t, c] ~ b[c] + h[t] . a[:, c] for t < n, c < B from the 8-bit
    rows hq uint8 (G, 4 ng) with scales hsc (G,) (`_quantize`) and the
    layer's 8-bit tiles w8 int8 (T, ng, 4 TILE) with scales sc float32
    (T TILE,) and biases b float32 (T TILE,) (both zero-padded past B),
    out float32 (G, T TILE). Integer sums (simd.dot8x8, dot8x64 for one
    row), so a row gets the same numbers alone and in a group."""
    ng = w8.shape[1]
    h4 = hq.shape[1]
    width = out.shape[1]
    tile = ng * 4 * TILE
    if n == 1:
        for c0 in range(0, width, TILE):
            dot8x64(hq, 0, h4, ng, w8, (c0 // TILE) * tile, 4 * TILE, sc, b, c0, hsc, out, c0, width, 1)
        return
    for c0 in range(0, width, 16):
        at = (c0 // TILE) * tile + 4 * (c0 % TILE)
        for s in range(0, n, FMA_ROWS):
            dot8x8(hq, s * h4, h4, ng, w8, at, 4 * TILE, sc, b, c0, hsc[s:], out, s * width + c0, width,
                   min(FMA_ROWS, n - s))


@numba.njit(inline="always")
def _fix_top(qv, row, m, slack_q, rows, b, bv, bi, cv, ci, out_idx, out_val):
    """The exact top m of a one-layer router, from approximate scores row
    (B,) that are within slack_q of the exact ones: every bucket that could
    be among the m best is re-scored exactly against rows float32 (B, d),
    in one fixed way, so the buckets and scores (into out_idx / out_val,
    best first, ties to the lower bucket) are the same whichever way `row`
    was computed. The approximate best m are scored first: the worst of
    their exact scores is a floor the true m-th best reaches, and only
    buckets whose approximate score comes within slack_q of it can be
    among the m best (MiniLM-384, m = 16: 52 -> 30 buckets re-scored, where
    the floor was the approximate m-th best less twice the slack)."""
    top_row(row, m, bv, bi, out_idx, out_val)
    for j in range(min(ROWS_AHEAD, m)):
        prefetch_row(rows, out_idx[j])
    floor = np.float32(np.inf)
    for j in range(m):
        if j + ROWS_AHEAD < m:
            prefetch_row(rows, out_idx[j + ROWS_AHEAD])
        c = out_idx[j]
        out_val[j] = dot(qv, rows[c]) + b[c]
        floor = min(floor, out_val[j])
    for c in range(bi.shape[0]):
        bi[c] = 0
    for j in range(m):
        bi[out_idx[j]] = j + 1  # scored already
    cnt = at_least(row, floor - slack_q, cv, ci)  # the approximate best m among them
    for t in range(min(ROWS_AHEAD, cnt)):
        prefetch_row(rows, ci[t])
    for t in range(cnt):
        if t + ROWS_AHEAD < cnt:
            prefetch_row(rows, ci[t + ROWS_AHEAD])
        c = ci[t]
        cv[t] = out_val[bi[c] - 1] if bi[c] > 0 else dot(qv, rows[c]) + b[c]
    top_row(cv[:cnt], m, bv, bi, out_idx, out_val)
    for j in range(m):
        out_idx[j] = ci[out_idx[j]]


@numba.njit(inline="always")
def route_kinds(b1, b2, half, tiles8):
    """What a Routing's arrays hold (see route_rows): (two layers, the
    buckets B, a last layer in 8 bits, one-layer rows in 8 bits for a query
    alone, approximate rows for a query alone whose best buckets are
    re-scored exactly)."""
    two = b2.shape[1] > 0
    q8 = tiles8.shape[1] > 0
    rows8 = q8 and not two
    return two, b2.shape[1] if two else b1.shape[1], q8, rows8, half.shape[1] > 0 or rows8


@numba.njit(inline="always")
def route_rows(q, lo, hi, a1, b1, tiles, b2, rows, half, slack, tiles8, scale8, probed, probs, plo, raw):
    """Route rows lo .. hi - 1 of q into rows plo .. of probed / probs
    (probs: softmax probabilities of the probed buckets, or with `raw` their
    router scores; not written when probs has no columns).

    The layers (irli.model.routers.Routing), tile-major (tile_layer):
    a1 float32 (R, T1, d, TILE) the first layer's weights and b1 (R, H)
    its biases, tiles (R, T, ·, TILE) the last layer's weights (the same
    array as a1 for one-layer routers) and b2 (R, B) its biases ((R, 0)
    for one-layer routers).
    One-layer routers carry rows float32 (R, B, d) (a1 transposed), half
    uint16 (R, T, d, TILE) (a1 in half precision, tiled, or (R, 0, 0, 0)) and slack
    float32 (R, 2) (the largest |row - half| and |a_b| + |b_b| over the
    buckets), or a1 in 8 bits instead of half precision (tiles8, scale8
    from tile_rows8, slack[:, 0] their largest error). With half-precision
    or 8-bit rows, one query alone scores them (a half or a quarter of the
    bytes; in 8 bits the query too, `_quantize_query`) and a group in
    float32, then the buckets that could be among the best m are re-scored
    exactly (`_fix_top`), so a query is routed the same alone and in a
    batch; without them, `_layer` sums every score in the same order alone
    and in a group, and nothing is re-scored. Two-layer
    routers pass rows (R, 0, 0), and may carry their last layer in 8 bits,
    tiles8 int8 (R, T, G, 4 TILE) and scale8 float32 (R, 2, T TILE), scales
    and biases (tile_layer8; (R, 0, 0, 0) and (R, 0, 0) without): the hidden rows are
    then rounded to bytes and scored by integer dot products (`_layer8`)."""
    two, width, q8, rows8, fix = route_kinds(b1, b2, half, tiles8)
    n_rows = min(_BLOCK, hi - lo)
    hidden = np.empty((n_rows, b1.shape[1]), dtype=np.float32)
    logits = np.empty((n_rows, scale8.shape[2] if q8 else width), dtype=np.float32) if two else hidden
    hq = np.empty((n_rows if q8 else 0, 4 * tiles8.shape[2]), dtype=np.uint8)
    route_into(q, lo, hi, a1, b1, tiles, b2, rows, half, slack, tiles8, scale8, probed, probs, plo, raw, hidden,
                logits, hq, np.empty(n_rows, dtype=np.float32),
                np.empty(probed.shape[2], dtype=np.float32), np.empty(width, dtype=np.float32),
                np.empty(width, dtype=np.int32), np.empty(width if fix else 0, dtype=np.float32),
                np.empty(width if fix else 0, dtype=np.int32),
                np.empty(scale8.shape[2] if rows8 else 0, dtype=np.float32),
                np.empty((1 if rows8 else 0, scale8.shape[2]), dtype=np.float32))


@numba.njit(nogil=True, fastmath=FAST, cache=True, _nrt=False)  # allocates nothing: no reference counts
def route_into(q, lo, hi, a1, b1, tiles, b2, rows, half, slack, tiles8, scale8, probed, probs, plo, raw, hidden,
                logits, hq, hsc, val, buf_v, buf_i, cv, ci, bq, one8):
    """route_rows with its scratch: hidden (G, H) and logits (G, width),
    (G, T TILE) in 8 bits (the same array as hidden for one-layer
    routers), hq (G, 4 ceil(H / 4)) or (0, ·) and hsc (G,) the hidden rows
    (or one query) in 8 bits, val (m,), buf_v / buf_i
    (width,), cv / ci (width,) or (0,) without the exact re-score, bq (T
    TILE,) and one8 (1, T TILE), or empty: the biases a query's 8-bit rows
    are scored with, and its scores."""
    reps = a1.shape[0]
    two, width, q8, rows8, fix = route_kinds(b1, b2, half, tiles8)
    d = q.shape[1]
    m = probed.shape[2]
    with_probs = probs.shape[1] > 0
    alone = fix and hi - lo == 1 and not (with_probs and not raw)
    group = hidden.shape[0]
    qerr = np.float32(0.0)
    for r in range(reps):
        for g in range(lo, hi, group):
            n = min(group, hi - g)
            if alone and rows8:  # approximate: re-scored exactly below
                qerr = _quantize_query(q[g], hq, hsc)
                for c in range(bq.shape[0]):  # the bias less the bytes' +128 offset
                    bq[c] = (b1[r, c] if c < width else np.float32(0.0)) - hsc[0] * scale8[r, 1, c]
                _layer8(hq, 1, tiles8[r], scale8[r, 0], hsc, bq, one8)
            elif alone:
                _layer(q, g, 1, half[r], b1[r], hidden)  # approximate: re-scored exactly below
            elif two:
                _layer(q, g, n, a1[r], b1[r], hidden)
                for t in range(n):
                    for c in range(hidden.shape[1]):
                        hidden[t, c] = max(hidden[t, c], np.float32(0.0))
                if q8:
                    _quantize(hidden, n, hq, hsc)
                    _layer8(hq, n, tiles8[r], scale8[r, 0], hsc, scale8[r, 1], logits)
                else:
                    _layer(hidden, 0, n, tiles[r], b2[r], logits)
            else:
                _layer(q, g, n, tiles[r], b1[r], logits)
            for t in range(n):
                row = one8[0, :width] if alone and rows8 else logits[t, :width]
                at = plo + g - lo + t
                if fix:
                    qv = q[g + t]
                    qn = np.sqrt(dot(qv, qv))
                    slack_q = np.float32(_ROUNDING * (d + 2)) * max(qn, np.float32(1.0)) * slack[r, 1]
                    if alone and rows8:  # |q . (a - s w8)| + |(q - s_q u) . s w8|, |s w8| <= |a| + err
                        slack_q += qn * slack[r, 0] + qerr * (slack[r, 1] + slack[r, 0])
                    elif alone:
                        slack_q += qn * slack[r, 0]
                    _fix_top(qv, row, m, slack_q, rows[r], b1[r], buf_v, buf_i, cv, ci, probed[r, at], val)
                else:
                    top_row(row, m, buf_v, buf_i, probed[r, at], val)
                if with_probs and raw:
                    for j in range(m):
                        probs[r, at, j] = val[j]
                elif with_probs:
                    mx = val[0]
                    z = np.float32(0.0)
                    for c in range(width):
                        z += np.exp(row[c] - mx)
                    for j in range(m):
                        probs[r, at, j] = np.exp(val[j] - mx) / z


@numba.njit(nogil=True, fastmath=FAST, cache=True)
def route_kernel(q, lo, hi, a1, b1, tiles, b2, rows, half, slack, tiles8, scale8, probed, probs, raw):
    route_rows(q, lo, hi, a1, b1, tiles, b2, rows, half, slack, tiles8, scale8, probed, probs, lo, raw)
