"""Routing one query alone reads half-precision (or 8-bit) rows, then
re-scores exactly every bucket that could be among the best: the buckets
are the ones a batch picks, and the exact ones."""

import numpy as np
import pytest

from irli.model import routers
from irli.kernels.route import TILE, _quantize_query, tile_layer, tile_layer8, tile_rows8
from irli.model.routers import Routing


@pytest.fixture(autouse=True)
def _half_rows_for_small_tables(monkeypatch):
    monkeypatch.setattr(routers, "HALF_ROWS_FROM", 0)  # small tables here: the half rows all the same


def _routing(a1, b1, int8=False):
    reps = a1.shape[0]
    return Routing(a1, b1, np.zeros((reps, 0, 0), np.float32), np.zeros((reps, 0), np.float32), int8)


def _untile8(t):
    """The weights of 8-bit tiles int8 (R, T, G, 4 TILE) back as (R, 4 G, T TILE)."""
    reps, _, g, _ = t.shape
    return t.reshape(reps, -1, g, TILE, 4).transpose(0, 2, 4, 1, 3).reshape(reps, 4 * g, -1)


def _alone_and_batched(rt, q, m, raw=True):
    reps, n = rt.n_reps, q.shape[0]
    batch, alone = np.empty((reps, n, m), np.int32), np.empty((reps, n, m), np.int32)
    sb, sa = np.empty((reps, n, m), np.float32), np.empty((reps, n, m), np.float32)
    rt.block(q, 0, n, batch, sb, raw=raw)
    for i in range(n):
        rt.block(q, i, i + 1, alone, sa, raw=raw)
    return batch, alone, sb, sa


def _exact_top(a1, b1, q, m):
    s = np.einsum("nd,rdb->rnb", q.astype(np.float64), a1.astype(np.float64)) + b1[:, None, :]
    return np.argsort(-s, axis=2, kind="stable")[:, :, :m]


@pytest.mark.parametrize("d,b,m", [(8, 64, 5), (50, 256, 12), (384, 300, 24), (96, 128, 100), (32, 40, 40)])
def test_alone_equals_batched_equals_exact(d, b, m):
    rng = np.random.default_rng(d + m)
    a1 = (rng.normal(size=(2, d, b)) / np.sqrt(d)).astype(np.float32)
    b1 = (rng.normal(size=(2, b)) * 0.01).astype(np.float32)
    q = rng.normal(size=(120, d)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    rt = _routing(a1, b1)
    tiles = -(-b // TILE)
    assert rt.half.shape == (2, tiles, d, TILE) and rt.rows.shape == (2, b, d) and (rt.slack[:, 0] > 0).all()
    assert rt.tiles.shape == (2, tiles, d, TILE)
    batch, alone, sb, sa = _alone_and_batched(rt, q, m)
    np.testing.assert_array_equal(batch, alone)
    np.testing.assert_array_equal(sb, sa)  # the raw scores too: both are the exact re-scores
    np.testing.assert_array_equal(batch, _exact_top(a1, b1, q, m))


def test_buckets_closer_than_half_precision_are_ranked_exactly():
    """Two rows that differ below half precision's resolution: a query alone
    still ranks them by their exact scores, as a batch does."""
    d, b = 64, 32
    rng = np.random.default_rng(3)
    base = rng.normal(size=d).astype(np.float32)
    base /= np.linalg.norm(base)
    a1 = np.zeros((1, d, b), np.float32)
    a1[0] = (rng.normal(size=(d, b)) * 0.01).astype(np.float32)
    for c, step in ((5, 3e-5), (9, 6e-5), (20, 0.0)):  # near-copies of one direction
        a1[0, :, c] = base
        a1[0, 0, c] += step
    rt = _routing(a1, np.zeros((1, b), np.float32))
    half = rt.half.view(np.float16).astype(np.float32)
    assert half[0, 0, 0, 5] == half[0, 0, 0, 9] == half[0, 0, 0, 20]  # half precision cannot tell them apart
    q = np.tile(base, (4, 1))
    q[:, 0] += np.array([0.5, 1.0, 2.0, 4.0], np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    batch, alone, _, _ = _alone_and_batched(rt, q, 2)
    np.testing.assert_array_equal(alone, batch)
    assert (alone[0, :, 0] == 9).all() and (alone[0, :, 1] == 5).all()  # 20 is third


def test_weights_beyond_half_range_route_exactly_without_the_half_rows():
    rng = np.random.default_rng(5)
    a1 = (rng.normal(size=(1, 16, 50)) * 1e5).astype(np.float32)
    b1 = np.zeros((1, 50), np.float32)
    rt = _routing(a1, b1)
    assert rt.half.shape == (1, 0, 0, 0) and rt.rows.shape == (1, 50, 16)
    q = rng.normal(size=(30, 16)).astype(np.float32)
    batch, alone, _, _ = _alone_and_batched(rt, q, 7)
    np.testing.assert_array_equal(batch, alone)
    np.testing.assert_array_equal(batch, _exact_top(a1, b1, q, 7))


@pytest.mark.parametrize("d,b,m", [(8, 64, 5), (50, 300, 12), (384, 128, 24), (30, 40, 40)])
def test_8bit_rows_alone_equal_batched_equal_exact(d, b, m):
    """A query alone scores 8-bit rows with its own bytes, then re-scores
    exactly every bucket the bound admits: the buckets and scores a batch
    (float32) gets, and the exact ranking; a zero query too."""
    rng = np.random.default_rng(7 * d + b)
    a1 = (rng.normal(size=(2, d, b)) / np.sqrt(d)).astype(np.float32)
    b1 = (rng.normal(size=(2, b)) * 0.01).astype(np.float32)
    q = rng.normal(size=(120, d)).astype(np.float32)
    q[0] = 0.0
    rt = _routing(a1, b1, int8=True)
    assert rt.tiles8.shape[1] > 0 and rt.half.shape == (2, 0, 0, 0) and (rt.slack[:, 0] > 0).all()
    batch, alone, sb, sa = _alone_and_batched(rt, q, m)
    np.testing.assert_array_equal(batch, alone)
    np.testing.assert_array_equal(sb, sa)
    np.testing.assert_array_equal(batch, _exact_top(a1, b1, q, m))


def test_8bit_rows_and_query_bytes_score_within_their_bound():
    """tile_rows8 and _quantize_query: the integer dot product, its offset
    term taken off, is within |q| err + |q - s u| (|a| + err) of q . a."""
    rng = np.random.default_rng(12)
    d, b = 50, 130
    a = (rng.normal(size=(1, d, b)) / np.sqrt(d)).astype(np.float32)
    a[0, :, 7] = 0.0  # a bucket without weights
    t, sb, err = tile_rows8(a)
    g = -(-d // 4)
    back = _untile8(t)[0].astype(np.int64)
    assert (np.linalg.norm(a[0] - back[:d, :b] * sb[0, 0, :b], axis=0) <= err[0]).all()
    np.testing.assert_allclose(sb[0, 1, :b], sb[0, 0, :b] * 128.0 * back[:d, :b].sum(axis=0), rtol=1e-6)
    for qv in rng.normal(size=(20, d)).astype(np.float32):
        hq, hsc = np.empty((1, 4 * g), np.uint8), np.empty(1, np.float32)
        qerr = _quantize_query(qv, hq, hsc)
        assert (hq[0, d:] == 0).all() and hsc[0] == pytest.approx(np.abs(qv).max() / 127)
        u = hq[0, :d].astype(np.int64) - 128
        assert qerr >= np.linalg.norm(qv - hsc[0] * u) and (np.abs(u) <= 127).all()
        approx = hsc[0] * sb[0, 0, :b] * (hq[0].astype(np.int64) @ back[:, :b]) - hsc[0] * sb[0, 1, :b]
        exact = qv.astype(np.float64) @ a[0]
        bound = np.linalg.norm(qv) * err[0] + qerr * (np.linalg.norm(a[0], axis=0).max() + err[0])
        assert (np.abs(approx - exact) <= bound * 1.0001 + 1e-6).all()


def test_buckets_closer_than_8bit_steps_are_ranked_exactly():
    """Rows that differ far below one 8-bit step: a query alone still ranks
    them by their exact scores, as a batch does."""
    d, b = 64, 32
    rng = np.random.default_rng(3)
    base = rng.normal(size=d).astype(np.float32)
    base /= np.linalg.norm(base)
    a1 = (rng.normal(size=(1, d, b)) * 0.01).astype(np.float32)
    for c, step in ((5, 3e-5), (9, 6e-5), (20, 0.0)):
        a1[0, :, c] = base
        a1[0, 0, c] += step
    rt = _routing(a1, np.zeros((1, b), np.float32), int8=True)
    q = np.tile(base, (4, 1))
    q[:, 0] += np.array([0.5, 1.0, 2.0, 4.0], np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    batch, alone, _, _ = _alone_and_batched(rt, q, 2)
    np.testing.assert_array_equal(alone, batch)
    assert (alone[0, :, 0] == 9).all() and (alone[0, :, 1] == 5).all()


def test_softmax_probabilities_are_the_same_alone_and_batched():
    rng = np.random.default_rng(9)
    a1 = rng.normal(size=(2, 24, 80)).astype(np.float32)
    rt = _routing(a1, np.zeros((2, 80), np.float32))
    q = rng.normal(size=(40, 24)).astype(np.float32)
    batch, alone, pb, pa = _alone_and_batched(rt, q, 6, raw=False)
    np.testing.assert_array_equal(batch, alone)
    np.testing.assert_array_equal(pb, pa)
    assert ((pb > 0) & (pb <= 1)).all() and (np.diff(pb, axis=2) <= 0).all()


@pytest.mark.parametrize("b", [1, 40, 64, 130])
def test_tiles_hold_every_column_of_the_layer_and_zeros_past_it(b):
    rng = np.random.default_rng(b)
    a = rng.normal(size=(2, 7, b)).astype(np.float32)
    t = tile_layer(a)
    assert t.shape == (2, -(-b // TILE), 7, TILE) and t.flags.c_contiguous and t.dtype == np.float32
    back = t.transpose(0, 2, 1, 3).reshape(2, 7, -1)
    np.testing.assert_array_equal(back[:, :, :b], a)
    assert (back[:, :, b:] == 0).all()


def test_two_layer_routers_hold_no_one_query_tables():
    rng = np.random.default_rng(1)
    a1, b1 = rng.normal(size=(1, 8, 16)).astype(np.float32), np.zeros((1, 16), np.float32)
    # 40 buckets: two 16-bucket tiles and 8 buckets past them; 37 queries: blocks of 32 and 8
    a2, b2 = rng.normal(size=(1, 16, 40)).astype(np.float32), rng.normal(size=(1, 40)).astype(np.float32)
    rt = Routing(a1, b1, a2, b2)  # a2 (R, H, B)
    assert rt.rows.shape == (1, 0, 0) and rt.half.shape == (1, 0, 0, 0) and rt.n_buckets == 40
    assert rt.tiles.shape == (1, 1, 16, TILE)  # a2 tiled
    q = rng.normal(size=(37, 8)).astype(np.float32)
    batch, alone, _, _ = _alone_and_batched(rt, q, 4)
    np.testing.assert_array_equal(batch, alone)
    want = np.maximum(q.astype(np.float64) @ a1[0] + b1[0], 0) @ a2[0].astype(np.float64) + b2[0]
    np.testing.assert_array_equal(batch[0], np.argsort(-want, axis=1, kind="stable")[:, :4])


@pytest.mark.parametrize("d,b,m", [(50, 1024, 20), (16, 1000, 27), (7, 90, 9)])
def test_float32_tables_route_alone_as_in_a_batch_without_a_re_score(monkeypatch, d, b, m):
    """Without half-precision rows nothing is re-scored: the tiles sum each
    score in the same order for one query and for a group, so the buckets
    and the raw scores agree bit for bit (full tiles, 16-bucket slices and
    a remainder past them), and the buckets are the exact top m."""
    monkeypatch.setattr(routers, "HALF_ROWS_FROM", 1 << 30)
    rng = np.random.default_rng(d * b)
    a1 = (rng.normal(size=(2, d, b)) / np.sqrt(d)).astype(np.float32)
    b1 = (rng.normal(size=(2, b)) * 0.01).astype(np.float32)
    q = rng.normal(size=(150, d)).astype(np.float32)
    rt = _routing(a1, b1)
    assert rt.half.shape == (2, 0, 0, 0)
    batch, alone, sb, sa = _alone_and_batched(rt, q, m)
    np.testing.assert_array_equal(batch, alone)
    np.testing.assert_array_equal(sb, sa)
    np.testing.assert_array_equal(batch, _exact_top(a1, b1, q, m))
    exact = np.einsum("nd,rdb->rnb", q, a1) + b1[:, None, :]
    np.testing.assert_allclose(sb, np.take_along_axis(exact, batch, axis=2), rtol=1e-5, atol=1e-5)


def test_small_tables_route_in_float32(monkeypatch):
    monkeypatch.setattr(routers, "HALF_ROWS_FROM", 1 << 16)
    rng = np.random.default_rng(2)
    small, large = (_routing(rng.normal(size=(1, d, b)).astype(np.float32), np.zeros((1, b), np.float32))
                    for d, b in ((50, 1024), (64, 1024)))
    assert small.half.shape == (1, 0, 0, 0) and small.rows.shape == (1, 1024, 50)
    assert large.half.shape == (1, 1024 // TILE, 64, TILE)


@pytest.mark.parametrize("vnni", [False, True])
@pytest.mark.parametrize("preset", ["fast", "ivf"])
def test_indexes_route_one_query_alone_as_in_a_batch(data, preset, vnni, monkeypatch):
    """Through a whole search, and Index.route: with half-precision rows,
    and with 8-bit rows (where the CPU has VNNI; forced here, the plain
    vector code where it lacks it)."""
    import irli
    from conftest import FAST, assert_alone_equals_batch

    monkeypatch.setattr(routers, "HAVE_VNNI", vnni)
    index = irli.Index(preset, **FAST[preset]).fit(data[0])
    assert (index.routing_.tiles8 if vnni else index.routing_.half).shape[1] > 0
    assert (index.routing_.half if vnni else index.routing_.tiles8).shape[1] == 0
    q = data[1][:80]
    assert_alone_equals_batch(index, q, probes=4)
    np.testing.assert_array_equal(index.route(q[:1], probes=4)[:, 0], index.route(q, probes=4)[:, 0])


@pytest.mark.parametrize("h,b", [(16, 40), (30, 130)])
def test_8bit_tiles_hold_every_weight_to_half_a_step(h, b):
    rng = np.random.default_rng(h + b)
    a = rng.normal(size=(2, h, b)).astype(np.float32)
    a[1, :, 3] = 0.0  # a bucket without weights
    bias = rng.normal(size=(2, b)).astype(np.float32)
    t, sb = tile_layer8(a, bias)
    g = -(-h // 4)
    assert t.shape == (2, -(-b // TILE), g, 4 * TILE) and t.dtype == np.int8 and t.flags.c_contiguous
    assert sb.shape == (2, 2, t.shape[1] * TILE) and sb.dtype == np.float32
    back = _untile8(t)
    assert (back[:, h:] == 0).all() and (back[:, :, b:] == 0).all()
    approx = back[:, :h, :b] * sb[:, None, 0, :b]
    assert (np.abs(approx - a) <= sb[:, None, 0, :b] / 2 * 1.0001).all()
    np.testing.assert_array_equal(sb[:, 1, :b], bias)
    assert (sb[:, :, b:] == 0).all()


def _mlp(rng, reps, d, h, b):
    a1 = (rng.normal(size=(reps, d, h)) / np.sqrt(d)).astype(np.float32)
    b1 = (rng.normal(size=(reps, h)) * 0.1).astype(np.float32)
    a2 = (rng.normal(size=(reps, h, b)) / np.sqrt(h)).astype(np.float32)
    b2 = (rng.normal(size=(reps, b)) * 0.1).astype(np.float32)
    return a1, b1, a2, b2


@pytest.mark.parametrize("d,h,b,m", [(50, 128, 1024, 12), (20, 30, 130, 9)])
def test_8bit_last_layer_routes_alike_alone_and_batched_within_its_rounding(d, h, b, m):
    """The 8-bit last layer: one query alone and in a batch get the same
    buckets and scores bit for bit, every score is within the rounding of
    its bytes (half a step of the hidden row times the column's absolute
    sum, plus half a weight step times the row's sum) of the float64 one,
    and nearly all the float32 router's buckets are kept."""
    rng = np.random.default_rng(h + b)
    a1, b1, a2, b2 = _mlp(rng, 2, d, h, b)
    rt = Routing(a1, b1, a2, b2, int8=True)
    assert rt.tiles8.shape[1] > 0
    q = rng.normal(size=(150, d)).astype(np.float32)
    batch, alone, sb, sa = _alone_and_batched(rt, q, m)
    np.testing.assert_array_equal(batch, alone)
    np.testing.assert_array_equal(sb, sa)
    hid = np.maximum(np.einsum("nd,rdh->rnh", q.astype(np.float64), a1) + b1[:, None, :], 0)
    exact = np.einsum("rnh,rhb->rnb", hid, a2) + b2[:, None, :]
    step_h = hid.max(axis=2) / 255  # (R, n)
    step_w = rt.scale8[:, 0, :b]  # (R, B)
    bound = (step_h[:, :, None] / 2 * np.abs(a2).sum(axis=1)[:, None, :]
             + step_w[:, None, :] / 2 * hid.sum(axis=2)[:, :, None] * (1 + 1 / 255))
    got_bound = np.take_along_axis(bound, batch, axis=2) * 1.001 + 1e-4
    assert (np.abs(sb - np.take_along_axis(exact, batch, axis=2)) <= got_bound).all()
    floats = Routing(a1, b1, a2, b2, int8=False)
    assert floats.tiles8.shape[1] == 0
    fb, _, _, _ = _alone_and_batched(floats, q[:20], m)
    kept = np.mean([len(set(fb[r, i]) & set(batch[r, i])) / m for r in range(2) for i in range(20)])
    assert kept >= 0.9


def test_8bit_routing_is_chosen_for_large_two_layer_routers_where_the_cpu_has_vnni(monkeypatch):
    rng = np.random.default_rng(3)
    a1, b1, a2, b2 = _mlp(rng, 1, 8, 64, 1024)
    monkeypatch.setattr(routers, "HAVE_VNNI", True)
    assert Routing(a1, b1, a2, b2).tiles8.shape[1] > 0
    assert Routing(a1, b1, a2[:, :, :512], b2[:, :512]).tiles8.shape[1] == 0  # 64 x 512 < INT8_FROM
    one = _routing(rng.normal(size=(1, 128, 1024)).astype(np.float32), np.zeros((1, 1024), np.float32), None)
    assert one.tiles8.shape[1] > 0 and one.half.shape[1] == 0  # one layer: 8-bit rows for a query alone
    monkeypatch.setattr(routers, "HAVE_VNNI", False)
    assert Routing(a1, b1, a2, b2).tiles8.shape[1] == 0


def test_an_irli_index_searches_alike_alone_and_batched_through_8bit_routing(data, truth, monkeypatch, tmp_path):
    """A whole search with the 8-bit last layer (forced for these small
    routers; the plain vector code where the CPU lacks VNNI): alone =
    batched, and the recall of the float32 routers."""
    import irli
    from conftest import FAST, assert_alone_equals_batch
    from irli.metrics import recall_at_k

    index = irli.Index("irli", **FAST["irli"]).fit(data[0])
    assert index.routing_.tiles8.shape[1] == 0  # 64 x 64 weights: below INT8_FROM
    q = data[1]
    floats = recall_at_k(index.search(q, k=10, threads=1).ids, truth, 10)
    index.save(tmp_path / "ix")
    monkeypatch.setattr(routers, "INT8_FROM", 0)
    monkeypatch.setattr(routers, "HAVE_VNNI", True)
    eight = irli.Index.load(tmp_path / "ix")
    assert eight.routing_.tiles8.shape[1] > 0
    batch = assert_alone_equals_batch(eight, q[:60])
    assert recall_at_k(batch.ids, truth[:60], 10) >= recall_at_k(index.search(q[:60], k=10).ids, truth[:60], 10) - 0.03
    assert abs(recall_at_k(eight.search(q, k=10, threads=1).ids, truth, 10) - floats) <= 0.01
