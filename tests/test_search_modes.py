"""The three ways people search give one answer: one query per call, a batch
on one thread, a batch on every core, and several Python threads at once."""

import threading

import numpy as np
import pytest
from conftest import FAST, B, assert_alone_equals_batch, fitted

import irli
from irli import InvalidInputError
from irli.metrics import recall_at_k

VARIANTS = [("fast", {}), ("fast", dict(pq_residual=False)), ("ivf", {}), ("ivf", dict(spill=1)),
            ("ivf-ltr", {}), ("irli", {}), ("fast", dict(n_reps=2)), ("irli", dict(top_c=40, scan="exact"))]


def _same(a, b):
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.candidates, b.candidates)
    np.testing.assert_array_equal(a.scanned, b.scanned)


@pytest.mark.parametrize("preset,kw", VARIANTS)
def test_one_query_per_call_equals_its_row_of_a_batch(data, preset, kw):
    index = fitted(preset, data, **kw)
    q = data[1][:60]
    batch = assert_alone_equals_batch(index, q, probes=3)
    small = index.search(q[:7], k=10, probes=3)  # a few queries: the path without the pool
    np.testing.assert_array_equal(small.ids, batch.ids[:7])
    np.testing.assert_array_equal(small.scores, batch.scores[:7])


@pytest.mark.parametrize("preset,kw", VARIANTS)
def test_results_do_not_depend_on_the_thread_count(data, preset, kw):
    index = fitted(preset, data, **kw)
    one = index.search(data[1], k=10, probes=4, threads=1)
    for t in (2, 3, None):
        _same(one, index.search(data[1], k=10, probes=4, threads=t, batch_size=37))


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_single_equals_batch_for_other_metrics(data, metric):
    x, q = data
    x = x * np.linspace(0.5, 2.0, x.shape[0], dtype=np.float32)[:, None]
    for res in (True, False):
        index = irli.Index("fast", metric=metric, n_buckets=16, pq_residual=res).fit(x)
        batch = index.search(q[:40], k=5, probes=3, threads=2)
        for i in range(40):
            one = index.search(q[i], k=5, probes=3)
            np.testing.assert_array_equal(one.ids[0], batch.ids[i])
            np.testing.assert_array_equal(one.scores[0], batch.scores[i])


def test_single_equals_batch_after_removals(data):
    index = irli.Index("fast", n_buckets=B).fit(data[0])
    index.remove(np.arange(0, 3000, 3))
    batch = index.search(data[1][:50], k=10, probes=4, threads=2)
    assert not np.isin(batch.ids, np.arange(0, 3000, 3)).any()
    for i in range(50):
        np.testing.assert_array_equal(index.search(data[1][i], k=10, probes=4).ids[0], batch.ids[i])


@pytest.mark.parametrize("preset", ["fast", "ivf", "irli"])
def test_concurrent_python_threads_get_one_threads_answers(data, preset):
    index = fitted(preset, data)
    q = data[1]
    want = index.search(q, k=10, probes=3, threads=1)
    got, errors = {}, []

    def worker(w):
        try:
            for rep in range(3):
                rows = np.arange(w, q.shape[0], 4)
                res = index.search(q[rows], k=10, probes=3, threads=2)
                single = index.search(q[rows[0]], k=10, probes=3)
                got[(w, rep)] = (rows, res, single)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert len(got) == 12
    for rows, res, single in got.values():
        np.testing.assert_array_equal(res.ids, want.ids[rows])
        np.testing.assert_array_equal(res.scores, want.scores[rows])
        np.testing.assert_array_equal(single.ids[0], want.ids[rows[0]])


@pytest.mark.parametrize("kw", [{}, {"learned_probes": False}])  # fast has the budget by default
def test_one_query_calls_from_many_threads_do_not_share_scratch(data, kw):
    """One query per call reuses its plan's scratch buffers; calls running at
    once (the kernel releases the GIL) must each get their own."""
    index = fitted("fast", data, **kw)
    q = data[1]
    want = index.search(q, k=10, probes=3, refine=2, threads=1)
    got, errors = {}, []

    def worker(w):
        try:
            for i in range(w, q.shape[0], 2):
                got[(w, i)] = index.search(q[i], k=10, probes=3, refine=2)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w % 2,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert len(got) == q.shape[0]
    for (_, i), res in got.items():
        np.testing.assert_array_equal(res.ids[0], want.ids[i])
        np.testing.assert_array_equal(res.scores[0], want.scores[i])


@pytest.mark.parametrize("preset", ["fast", "ivf"])
def test_search_while_another_thread_adds_removes_and_compacts(data, preset):
    """Each search sees the index before or after a change, never a mix:
    no crash, and every id returned is one that was live at some point."""
    x, q = data
    index = irli.Index(preset, **FAST[preset]).fit(x[:2000])
    stop = threading.Event()
    errors, seen = [], []

    def searcher():
        try:
            while not stop.is_set():
                res = index.search(q[:20], k=5, probes=4)
                seen.append(res.ids)
                index.search(q[3], k=5, probes=4)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=searcher)
    t.start()
    try:
        for s in range(6):
            index.add(x[2000 + s * 150: 2000 + (s + 1) * 150])
            index.remove(np.arange(s * 100, s * 100 + 100))
            if s % 2 == 1:
                index.compact()
    finally:
        stop.set()
        t.join(timeout=120)
    assert not errors and seen
    ids = np.concatenate([a.ravel() for a in seen])
    assert ids.max() < 2900 and ids.min() >= -1
    # after the changes, a search answers from the current items only
    final = index.search(q, k=5, probes=B)
    assert not np.isin(final.ids, np.arange(600)).any()


def test_threads_argument_and_process_default(data):
    index = fitted("fast", data)
    with pytest.raises(InvalidInputError, match="threads must be a positive integer"):
        index.search(data[1], k=5, threads=0)
    with pytest.raises(InvalidInputError, match="threads must be a positive integer"):
        irli.set_num_threads(-2)
    old = irli.get_num_threads()
    try:
        irli.set_num_threads(1)
        assert irli.get_num_threads() == 1
        _same(index.search(data[1], k=5, probes=2), index.search(data[1], k=5, probes=2, threads=3))
    finally:
        irli.set_num_threads(None)
    assert irli.get_num_threads() == old


def test_fit_and_add_take_threads(data):
    a = irli.Index("fast", n_buckets=B).fit(data[0][:2500], threads=1)
    b = irli.Index("fast", n_buckets=B).fit(data[0][:2500], threads=2)
    _same(a.search(data[1], k=5, probes=3), b.search(data[1], k=5, probes=3))
    a.add(data[0][2500:], threads=1)
    b.add(data[0][2500:], threads=2)
    _same(a.search(data[1], k=5, probes=3), b.search(data[1], k=5, probes=3))


def test_rerank_budget_holds_distinct_items(data):
    """Spilled items sit in two buckets; the re-rank budget is refine x k
    distinct items, not entries (a duplicate used to waste a slot)."""
    index = fitted("fast", data)
    for refine in (2, 4):
        res = index.search(data[1], k=10, probes=6, refine=refine)
        assert (res.candidates == refine * 10).all()  # enough items are probed to fill it
        for row in res.ids:
            assert len(set(row.tolist())) == 10


def test_exact_scan_scratch_is_reused_not_cleared(data):
    """The exact scan's per-item marks live in per-thread arrays stamped per
    query: a search costs what it touches, not the collection size."""
    from irli.threads import stamps

    index = fitted("ivf", data, spill=1)
    index.search(data[1][:5], k=5, probes=2, threads=1)
    scratch = stamps()
    mark = scratch.arrays["mark"]
    first = scratch.next
    index.search(data[1][:5], k=5, probes=2, threads=1)
    assert scratch.arrays["mark"] is mark and scratch.next == first + 5
    assert mark.max() == first + 4  # stamps of this call's five queries, nothing cleared


def test_stamps_wrap_around_cleanly():
    from irli.threads import Stamps

    s = Stamps()
    s.next = 2**31 - 10
    (a,), first = s.take(("mark",), 100, 20)
    assert first == 0 and (a == -1).all() and s.next == 20


def test_nan_and_inf_queries_are_refused_on_every_path(data):
    index = fitted("fast", data)
    q = data[1][:40].copy()
    q[33, 2] = np.nan
    for threads in (1, 2):
        with pytest.raises(InvalidInputError, match="NaN or inf .first in row 33"):
            index.search(q, k=5, threads=threads)
    v = data[1][0].copy()
    v[0] = np.inf
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        index.search(v, k=5)
    ivf = fitted("ivf", data)
    with pytest.raises(InvalidInputError, match="NaN or inf .first in row 33"):
        ivf.search(q, k=5)
    with pytest.raises(InvalidInputError, match="dimension"):
        index.search(np.zeros(7, np.float32), k=5)


def test_huge_finite_query_values_normalise_without_overflow(data):
    """Norms are summed in float64: a 1e30 query row is a direction, not zeros."""
    index = fitted("fast", data)
    q = data[1][:5].copy()
    np.testing.assert_array_equal(index.search(q * np.float32(1e30), k=5, probes=3).ids,
                                  index.search(q, k=5, probes=3).ids)


def test_pq_residual_choice_is_a_config_option(data, truth):
    from irli import ConfigError

    with pytest.raises(ConfigError, match="pq_residual"):
        irli.Index("fast", pq_residual="yes")
    direct = fitted("fast", data, pq_residual=False)
    residual = fitted("fast", data, pq_residual=True)
    assert not direct.codes_.residual and residual.codes_.residual
    assert direct.codes_.codes.shape[1] == 1 and residual.codes_.codes.shape[1] == 2  # one code per copy
    for index in (direct, residual):
        assert recall_at_k(index.search(data[1], k=10, probes=4).ids, truth) >= 0.9


def test_default_pq_m_matches_the_docs():
    from irli.index.codes import default_pq_m

    assert [default_pq_m(d) for d in (16, 50, 64, 65, 96, 254, 255, 256, 258, 384, 768)] == \
        [16, 50, 64, 65, 48, 127, 255, 64, 129, 96, 192]
