"""A query's first bucket through the scan's floor (irli.kernels.pq_scan):
with its heap not yet full, a bucket's 8-bit sums are read first, and only
the entries at a floor that n_rerank of them reach are offered. The heap
must end as it would with every entry offered in arrival order (the same
best n_rerank by (score, position)): checked here against the scan with no
room for the floor, on code blocks the test generates, with padding,
removed items, spilled copies already in the heap, and buckets larger than
the floor's scratch."""

import numba
import numpy as np
import pytest

from irli.kernels.pq_scan import _SEEN, _scan_bucket
from irli.kernels.topk import push_lex


@numba.njit
def _heap_after(blocks, block_pos, pos_col, stride, npairs, nblocks, lut, base, scale, keep, n_rerank, fill_blocks,
                pre_s, pre_i):
    sums = np.empty(32, np.uint16)
    hs = np.empty(n_rerank, np.float32)
    hid = np.empty(n_rerank, np.int64)
    seen = np.zeros(_SEEN, np.uint8)
    size = 0
    for j in range(pre_s.shape[0]):
        size = push_lex(hs, hid, size, n_rerank, pre_s[j], pre_i[j])
        seen[pre_i[j] & (_SEEN - 1)] = 1
    fill = np.empty(32 * fill_blocks, np.float32)
    size = _scan_bucket(blocks, block_pos, pos_col, stride, npairs, 0, nblocks, lut, sums, base, scale, keep,
                        keep.shape[0] > 0, hs, hid, size, n_rerank, seen, fill)
    return hs[:size].copy(), hid[:size].copy()


def _bucket(rng, nblocks, npairs, pad, ties):
    """nblocks code blocks of one bucket, flat, with their positions (the
    last `pad` slots -1); `ties`: codes drawn from 2 values, so many sums tie."""
    stride = 32 * npairs + 128
    buf = np.zeros((nblocks, stride), np.uint8)
    buf[:, :32 * npairs] = rng.integers(0, 2 if ties else 256, (nblocks, 32 * npairs), dtype=np.uint8)
    pos = buf.view(np.int32)
    pos_col = 8 * npairs
    items = rng.permutation(50 * nblocks * 32)[:nblocks * 32].astype(np.int32)
    if pad:
        items[-pad:] = -1
    pos[:, pos_col:pos_col + 32] = items.reshape(nblocks, 32)
    return buf.reshape(-1), pos, pos_col, stride, items


def _sums(blocks, stride, npairs, nblocks, lut):
    """Every entry's 8-bit sum, as simd.lut16 lays a block out (item t: lane
    t % 16 of byte rows, low nibble for t < 16, high for the rest)."""
    codes = blocks.reshape(nblocks, stride)[:, :32 * npairs].reshape(nblocks, npairs, 2, 16).astype(np.int64)
    out = np.zeros((nblocks, 32), np.int64)
    for t in range(32):
        nib = (codes[:, :, :, t % 16] >> (4 * (t // 16))) & 15  # (nblocks, npairs, 2)
        rows = 32 * np.arange(npairs)[None, :, None] + 16 * np.arange(2)[None, None, :] + nib
        out[:, t] = lut.astype(np.int64)[rows].sum(axis=(1, 2))
    return out.reshape(-1)


@pytest.mark.parametrize("nblocks,n_rerank,fill_blocks,pad,removed,pre,ties", [
    (8, 20, 64, 0, False, 0, False),
    (8, 30, 64, 13, False, 0, False),
    (10, 40, 3, 5, False, 0, False),  # the floor over the first 3 blocks, the rest as before
    (1, 40, 64, 10, False, 0, False),  # fewer entries than the heap holds
    (6, 20, 64, 7, True, 0, False),
    (6, 20, 64, 0, False, 12, False),  # a heap partly filled by another bucket, spilled copies among them
    (6, 50, 2, 3, True, 30, False),
    (5, 25, 64, 0, False, 0, True),
])
def test_first_bucket_floor_keeps_the_best_n(nblocks, n_rerank, fill_blocks, pad, removed, pre, ties):
    rng = np.random.default_rng([nblocks, n_rerank, fill_blocks, pad, pre])
    span = 50 * nblocks * 32
    for trial in range(5):
        npairs = int(rng.integers(1, 30))
        blocks, pos, pos_col, stride, items = _bucket(rng, nblocks, npairs, pad, ties)
        lut = rng.integers(0, 256, 32 * npairs, dtype=np.uint8)
        keep = np.zeros(0, np.uint8)
        kept = items[items >= 0]
        if removed:
            keep = np.ones(span, np.uint8)
            keep[rng.choice(kept, size=nblocks * 8, replace=False)] = 0
            kept = kept[keep[kept] == 1]
        scale, base = np.float32(rng.uniform(20, 200)), np.float32(rng.normal())
        pre_i = np.concatenate([rng.choice(kept, pre // 2, replace=False),  # copies of this bucket's items
                                span + rng.choice(span, pre - pre // 2, replace=False)]).astype(np.int64)
        pre_s = (base + rng.uniform(0, 60 * npairs, pre) / scale).astype(np.float32)
        args = (blocks, pos, pos_col, stride, npairs, nblocks, lut, base, scale, keep, n_rerank)
        ref_s, ref_i = _heap_after(*args, 0, pre_s, pre_i)  # no scratch: every entry offered in arrival order
        got_s, got_i = _heap_after(*args, fill_blocks, pre_s, pre_i)
        assert sorted(zip(got_s.tolist(), got_i.tolist())) == sorted(zip(ref_s.tolist(), ref_i.tolist()))
        # and against the best n distinct items by their best score, computed here
        best = {}
        sums = _sums(blocks, stride, npairs, nblocks, lut)
        for i, sc in [*zip(pre_i.tolist(), pre_s.tolist()),
                      *((int(i), float(base) + float(v) / float(scale)) for i, v in zip(items, sums)
                        if i >= 0 and (not removed or keep[i]))]:
            best[i] = max(best.get(i, -np.inf), sc)
        want = sorted(best.values(), reverse=True)[:n_rerank]
        assert len(set(got_i.tolist())) == got_i.shape[0] == len(want)
        np.testing.assert_allclose(np.sort(got_s)[::-1], want, rtol=1e-5, atol=1e-5)
        assert all(abs(best[int(i)] - float(sc)) <= 1e-5 * (1 + abs(sc)) for i, sc in zip(got_i, got_s))
