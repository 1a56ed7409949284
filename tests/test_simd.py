"""The AVX2 and AVX-512 table lookups against the plain loop they replace:
on x86 CI the fallback never runs in a search, so it is checked here, number
for number; the routing layer's fused multiply-add tiles against float64
matrix products (and alone against in groups), and the 16-lane maximum."""

import numba
import numpy as np
import pytest

from irli.kernels.simd import (HAVE_AVX2, HAVE_AVX512, ctz32, dot8x8, dot8x8_plain, dot8x64, fma16x1, fma16x8, fma64x1,
                               lut16_avx2, lut16_avx512,
                               lut16_scalar, ge16, max16, min16, popc32)


@numba.njit
def _scalar(codes, at, npairs, lut, out, thr):
    return lut16_scalar(codes, at, npairs, lut, out, thr)


@numba.njit
def _avx2(codes, at, npairs, lut, out, thr):
    return lut16_avx2(codes, at, npairs, lut, out, thr)


@numba.njit
def _avx512(codes, at, npairs, lut, out, thr):
    return lut16_avx512(codes, at, npairs, lut, out, thr)


@numba.njit
def _ctz(x):
    return ctz32(x)


def _case(rng, npairs):
    codes = rng.integers(0, 256, 64 + 32 * npairs + 32, dtype=np.uint8)
    lut = rng.integers(0, 256, 32 * npairs, dtype=np.uint8)
    return codes, lut


@pytest.mark.parametrize("npairs", [1, 2, 5, 25])
def test_scalar_sums_the_tables_as_written(npairs):
    rng = np.random.default_rng(npairs)
    codes, lut = _case(rng, npairs)
    at = 32
    out = np.zeros(32, np.uint16)
    thr = 255 * npairs  # about half the items above it
    mask = _scalar(codes, at, npairs, lut, out, thr)
    c, tab = codes.astype(int), lut.astype(int)
    for t in range(32):  # the block layout of irli.kernels.simd, by hand
        lane, shift = t % 16, 4 * (t // 16)
        want = sum(tab[32 * p + ((c[at + 32 * p + lane] >> shift) & 15)]
                   + tab[32 * p + 16 + ((c[at + 32 * p + 16 + lane] >> shift) & 15)]
                   for p in range(npairs))
        assert out[t] == want
        assert bool(mask >> t & 1) == (want > thr)


_WIDE = [pytest.param(_avx2, marks=pytest.mark.skipif(not HAVE_AVX2, reason="this CPU has no AVX2"), id="avx2"),
         pytest.param(_avx512, marks=pytest.mark.skipif(not HAVE_AVX512, reason="this CPU has no AVX-512BW"),
                      id="avx512")]


@pytest.mark.parametrize("wide", _WIDE)
@pytest.mark.parametrize("npairs", [1, 2, 3, 5, 25, 32, 96, 127, 128])
def test_simd_equals_the_scalar_loop(wide, npairs):
    rng = np.random.default_rng(100 + npairs)
    for trial in range(50):
        codes, lut = _case(rng, npairs)
        at = int(rng.integers(0, 64))
        a, b = np.zeros(32, np.uint16), np.zeros(32, np.uint16)
        thr = int(rng.integers(0, 255 * 2 * npairs + 1))
        ma, mb = wide(codes, at, npairs, lut, a, thr), _scalar(codes, at, npairs, lut, b, thr)
        np.testing.assert_array_equal(a, b)
        assert ma == mb, (trial, thr)


def test_ctz32():
    for x in (1, 2, 3, 8, 1 << 31, 0b1011000):
        assert _ctz(np.uint32(x)) == (x & -x).bit_length() - 1


@numba.njit
def _tiles(x, n, w, b, out):
    """out[:n] = b + x[:n] w, 16 columns and 8 rows per call (w's columns a multiple of 16)."""
    h, width = w.shape
    for c0 in range(0, width, 16):
        for s in range(0, n, 8):
            fma16x8(x, s * h, h, h, w, c0, width, b, c0, out, s * width + c0, width, min(8, n - s))


@numba.njit
def _tiles_one(x, i, w, b, out):
    """The same for row i alone: 64 columns per call, then 16."""
    h, width = w.shape
    for c0 in range(0, width - width % 64, 64):
        fma64x1(x, i * h, h, h, w, c0, width, b, c0, out, c0, width, 1)
    for c0 in range(width - width % 64, width, 16):
        fma16x1(x, i * h, h, h, w, c0, width, b, c0, out, c0, width, 1)


@pytest.mark.parametrize("n", [1, 3, 8, 13])
def test_fma_tiles_compute_the_affine_layer_alike_alone_and_in_groups(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(16, 37)).astype(np.float32)  # 16 rows allocated, n used: rows past n are never written
    w = rng.normal(size=(37, 80)).astype(np.float32)
    b = rng.normal(size=80).astype(np.float32)
    out = np.full((16, 80), 7.0, np.float32)
    _tiles(x, n, w, b, out)
    want = x[:n].astype(np.float64) @ w + b
    np.testing.assert_allclose(out[:n], want, rtol=1e-5, atol=1e-4)
    assert (out[n:] == 7.0).all()
    for i in range(n):  # one row alone: the same numbers, bit for bit
        one = np.zeros((1, 80), np.float32)
        _tiles_one(x, i, w, b, one)
        np.testing.assert_array_equal(one[0], out[i])


@numba.njit
def _max16(a, lo, count):
    return max16(a, lo, count)


@numba.njit
def _min16(a, lo, count):
    return min16(a, lo, count)


@pytest.mark.parametrize("extreme,sign", [(_max16, 1.0), (_min16, -1.0)])
def test_max16_and_min16_read_their_span_and_nothing_outside_it(extreme, sign):
    rng = np.random.default_rng(5)
    a = rng.normal(size=100).astype(np.float32)
    for lo, count in [(0, 1), (3, 2), (20, 5), (0, 6)]:
        span = a[lo:lo + 16 * count]
        assert extreme(a, lo, count) == (span.max() if sign > 0 else span.min())
        b = a.copy()
        b[lo + 16 * count - 1] = sign * 99.0  # the last lane of the last vector counts
        assert extreme(b, lo, count) == sign * 99.0
        if lo + 16 * count < a.shape[0]:
            b[lo + 16 * count] = sign * 500.0  # past the span: ignored
        if lo > 0:
            b[lo - 1] = sign * 600.0  # before it: ignored
        assert extreme(b, lo, count) == sign * 99.0


@numba.njit
def _ge16(a, lo, thr):
    return ge16(a, lo, thr)


def test_ge16_marks_the_lanes_at_or_above_the_threshold():
    rng = np.random.default_rng(6)
    a = rng.normal(size=70).astype(np.float32)
    a[30] = np.nan  # never at or above anything
    for lo in (0, 5, 20, 54):
        for thr in (np.float32(-np.inf), np.float32(0.0), a[lo + 3], np.float32(10.0)):
            want = sum(1 << t for t in range(16) if a[lo + t] >= thr)
            assert _ge16(a, lo, thr) == want


@numba.njit
def _popc(v):
    out = np.empty(v.shape[0], np.int64)
    for i in range(v.shape[0]):
        out[i] = popc32(v[i])
    return out


def test_popc32_counts_the_set_bits():
    v = np.random.default_rng(8).integers(0, 2**32, size=500, dtype=np.uint64).astype(np.uint32)
    v[:3] = [0, 0xFFFFFFFF, 1 << 31]
    assert _popc(v).tolist() == [bin(int(a)).count("1") for a in v]


@numba.njit
def _dot8_group(x, n, w, sc, b, xs, out, plain):
    """out[:n] for 16 lanes from 8-bit rows x (·, 4 ng) and tiles w (ng, 64), 8 rows per call."""
    h4, ng = x.shape[1], w.shape[0]
    for s in range(0, n, 8):
        if plain:
            dot8x8_plain(x, s * h4, h4, ng, w, 0, 64, sc, b, 0, xs[s:], out, s * 16, 16, min(8, n - s))
        else:
            dot8x8(x, s * h4, h4, ng, w, 0, 64, sc, b, 0, xs[s:], out, s * 16, 16, min(8, n - s))


@numba.njit
def _dot8_one(x, i, w, sc, b, xs, out):
    """Row i alone, 64 lanes."""
    h4, ng = x.shape[1], w.shape[0]
    dot8x64(x, i * h4, h4, ng, w, 0, 256, sc, b, 0, xs[i:], out, 0, 64, 1)


@pytest.mark.parametrize("n", [1, 5, 8, 13])
def test_dot8_tiles_sum_bytes_exactly_alike_alone_in_groups_and_without_vnni(n):
    """The 8-bit tiles: b + (xs_t sc_c) (x_t . w_c) from exact integer sums
    (the extremes of both byte ranges included), the same numbers bit for
    bit for one row of 64 lanes, a group of 8 and the plain vector code."""
    rng = np.random.default_rng(n)
    ng = 9
    x = rng.integers(0, 256, size=(16, 4 * ng)).astype(np.uint8)
    x[0] = 255
    w64 = rng.integers(-128, 128, size=(ng, 64, 4)).astype(np.int8)
    w64[:, 0] = -128
    sc = rng.random(64).astype(np.float32)
    b = rng.normal(size=64).astype(np.float32)
    xs = rng.random(16).astype(np.float32)
    w = np.ascontiguousarray(w64[:, :16]).reshape(ng, 64)  # the first 16 lanes as a 16-lane tile
    sums = np.einsum("tgu,gcu->tc", x.reshape(16, ng, 4).astype(np.int64), w64.astype(np.int64))
    want = b + (xs[:, None] * sc) * sums.astype(np.float32)
    for plain in (False, True):
        out = np.full((16, 16), 7.0, np.float32)
        _dot8_group(x, n, w, sc, b, xs, out, plain)
        np.testing.assert_array_equal(out[:n], want[:n, :16])
        assert (out[n:] == 7.0).all()
    for i in range(n):
        one = np.zeros((1, 64), np.float32)
        _dot8_one(x, i, w64.reshape(ng, 256), sc, b, xs, one)
        np.testing.assert_array_equal(one[0], want[i])
