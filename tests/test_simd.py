"""The AVX2 and AVX-512 table lookups against the plain loop they replace:
on x86 CI the fallback never runs in a search, so it is checked here, number
for number."""

import numba
import numpy as np
import pytest

from irli.kernels.simd import HAVE_AVX2, HAVE_AVX512, ctz32, lut16_avx2, lut16_avx512, lut16_scalar


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
