"""The search kernel against a plain numpy reference, filters, and metrics."""

import numpy as np
import pytest
from conftest import FAST, fitted

import irli
from irli.errors import InvalidInputError
from irli.kernels.exact import exact_knn
from irli.metrics import recall_at_k
from irli.model.routers import route


def _reference(index, q, k, probes, min_votes=1, top_c=None):
    """Per-query numpy version of the search path: gather, vote, cut, score."""
    assign = index.assignments()
    pos = np.argsort(index.ids_)  # each id's position
    xn = index.vectors_[pos]  # vectors in id order
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    buckets, probs = route(index.routers_, qn.astype(np.float32), probes, with_probs=True)
    out = []
    for i in range(q.shape[0]):
        votes = np.zeros(len(index))
        mass = np.zeros(len(index))
        for r in range(index.n_reps):
            for b, p in zip(buckets[r, i], probs[r, i]):
                hit = assign[r] == b
                votes[hit] += 1
                mass[hit] += p
        cand = np.nonzero(votes >= min_votes)[0]
        if top_c is not None:  # equal mass (the same buckets) to the lower position, as the kernel does
            cand = cand[np.lexsort((pos[cand], -mass[cand]))[:top_c]]
        s = xn[cand] @ qn[i]
        out.append((set(cand[np.argsort(-s)[:k]].tolist()), len(cand)))
    return out


@pytest.mark.parametrize("min_votes,top_c", [(1, None), (2, None), (3, None), (1, 40), (2, 25)])
def test_kernel_matches_reference(data, min_votes, top_c):
    index = fitted("irli", data, scan="exact")  # the vote filters are for exact scans
    q = data[1][:25]
    res = index.search(q, k=5, probes=3, min_votes=min_votes, top_c=top_c)
    ref = _reference(index, q, 5, 3, min_votes, top_c)
    for i, (want, ncand) in enumerate(ref):
        assert res.candidates[i] == ncand
        assert set(res.ids[i][res.ids[i] >= 0].tolist()) == want


def test_vote_filter_cuts_candidates(data, truth):
    index = fitted("irli", data, scan="exact")
    loose = index.search(data[1], k=10, probes=4, min_votes=1)
    strict = index.search(data[1], k=10, probes=4, min_votes=2)
    assert strict.candidates.mean() < loose.candidates.mean()
    assert recall_at_k(strict.ids, truth) <= recall_at_k(loose.ids, truth) + 1e-9


def test_top_c_caps_candidates(data):
    index = fitted("irli", data, scan="exact")
    res = index.search(data[1], k=10, probes=4, top_c=50)
    assert res.candidates.max() <= 50


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_other_metrics_exact_when_every_bucket_is_probed(data, metric):
    x, q = data
    x = x * np.linspace(0.5, 2.0, x.shape[0], dtype=np.float32)[:, None]  # varied norms
    index = irli.Index("ivf", metric=metric, n_buckets=16).fit(x)
    res = index.search(q, k=10, probes=16)
    want_ids, want_scores = exact_knn(x, q, 10, metric)
    assert recall_at_k(res.ids, want_ids) >= 0.999
    np.testing.assert_allclose(res.scores, want_scores, rtol=1e-4, atol=1e-3)
    if metric == "l2":
        assert (np.diff(res.scores, axis=1) >= -1e-4).all()  # distances ascend


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_learned_routers_with_other_metrics(data, metric):
    x, q = data
    idx = irli.Index("ivf-ltr", metric=metric, **FAST["ivf-ltr"]).fit(x)
    truth = exact_knn(x, q, 10, metric)[0]
    assert recall_at_k(idx.search(q, k=10, probes=8).ids, truth) >= 0.85
    idx2 = irli.Index("irli", metric=metric, **FAST["irli"]).fit(x)
    assert recall_at_k(idx2.search(q, k=10, probes=8).ids, truth) >= 0.85


def test_route_returns_best_first(data):
    index = fitted("ivf", data)
    qn = data[1][:30] / np.linalg.norm(data[1][:30], axis=1, keepdims=True)
    buckets, probs = route(index.routers_, qn.astype(np.float32), 5, with_probs=True)
    logits = index.routers_[0].logits(qn.astype(np.float32))
    want = np.argsort(-logits, axis=1)[:, :5]
    np.testing.assert_array_equal(buckets[0], want)
    assert (np.diff(probs[0], axis=1) <= 1e-7).all() and (probs > 0).all()
    np.testing.assert_array_equal(index.route(data[1][:30], probes=5), buckets)


@pytest.mark.parametrize("preset,kw", [("ivf", {}), ("irli", {}), ("irli", dict(min_votes=2)),
                                       ("irli", dict(top_c=30)), ("irli", dict(top_c=30, min_votes=2)),
                                       ("fast", {})])
def test_threads_agree_with_one_thread(data, preset, kw):
    """Per-thread scratch space: more threads must give one thread's answers."""
    index = fitted(preset, data, **({"scan": "exact"} if set(kw) & {"min_votes", "top_c"} else {}))
    one = index.search(data[1], k=10, probes=3, threads=1, **kw)
    for t in (2, 3):
        many = index.search(data[1], k=10, probes=3, threads=t, **kw)
        np.testing.assert_array_equal(one.ids, many.ids)
        np.testing.assert_array_equal(one.scores, many.scores)
        np.testing.assert_array_equal(one.candidates, many.candidates)


@pytest.mark.parametrize("m,width", [(1, 256), (5, 256), (24, 256), (64, 256), (65, 256), (200, 256), (20, 1024),
                                     (27, 1000), (17, 16 * 17), (18, 16 * 17), (3, 40), (7, 7), (20, 4800), (2, 20),
                                     (1, 10)])
def test_top_m_selection_matches_a_full_sort(m, width):
    """Widths that are and are not multiples of the 16-bucket groups, m
    from one to more groups than there are (no group threshold then)."""
    from irli.kernels.topk import top_m

    s = np.random.default_rng(m).normal(size=(300, width)).astype(np.float32)
    s[:20] = np.round(s[:20] * 2)  # ties
    s[20:30] = 0.5  # all equal
    s[30:40, ::2] = -np.inf  # -inf, which the rank placement pads with
    idx, val = top_m(s, m)
    want = np.argsort(-s, axis=1, kind="stable")[:, :m]
    np.testing.assert_array_equal(val, np.take_along_axis(s, want, axis=1))  # the same scores, best first
    np.testing.assert_array_equal(idx, want)  # ties go to the lower bucket


def test_a_query_per_call_reuses_its_checked_settings(data):
    """The lean path of one float32 vector per call (Index._plan) answers
    as a batch does, and still refuses what a first call would."""
    index = fitted("fast", data)
    q = data[1][:12]
    batch = index.search(q, k=7, probes=3, refine=2)
    for _ in range(2):  # the second round reads the kept settings
        for i, v in enumerate(q):
            one = index.search(v, k=7, probes=3, refine=2)
            np.testing.assert_array_equal(one.ids[0], batch.ids[i])
            np.testing.assert_array_equal(one.scores[0], batch.scores[i])
    with pytest.raises(InvalidInputError, match="k"):
        index.search(q[0], k=7.0, probes=3, refine=2)
    with pytest.raises(InvalidInputError, match="threads"):
        index.search(q[0], k=7, probes=3, refine=2, threads=0)
    bad = q[0].copy()
    bad[1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        index.search(bad, k=7, probes=3, refine=2)
    for k in range(1, 70):  # a sweep of settings: the kept ones stay few
        assert index.search(q[0], k=k, probes=2).ids.shape == (1, k)
    assert 0 < len(index._snapshot().plans) <= 64
