"""The contract every preset honours (run once per preset)."""

import numpy as np
from conftest import FAST, N

import irli
from irli.metrics import recall_at_k


def test_shapes_dtypes_and_order(index, data):
    res = index.search(data[1][:50], k=7)
    assert res.ids.shape == (50, 7) and res.ids.dtype == np.int64
    assert res.scores.shape == (50, 7) and res.scores.dtype == np.float32
    assert res.candidates.shape == (50,) and (res.candidates >= 7).all()
    assert (np.diff(res.scores, axis=1) <= 1e-6).all()  # best first
    assert ((res.ids >= 0) & (res.ids < N)).all()
    ids, scores = res  # unpacks as a pair
    assert ids is res.ids and scores is res.scores


def test_scores_are_exact_similarities(index, data):
    x, q = data
    res = index.search(q[:20], k=5)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q[:20] / np.linalg.norm(q[:20], axis=1, keepdims=True)
    want = np.take_along_axis(qn @ xn.T, res.ids, axis=1)
    np.testing.assert_allclose(res.scores, want, atol=1e-5)


def test_no_duplicate_ids(index, data):
    res = index.search(data[1], k=10, probes=8)
    s = np.sort(res.ids, axis=1)
    assert not ((s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)).any()


def test_single_query_vector(index, data):
    q = data[1][3]
    one = index.search(q, k=5)
    batch = index.search(data[1][3:4], k=5)
    assert one.ids.shape == (1, 5)
    np.testing.assert_array_equal(one.ids, batch.ids)


def test_k_larger_than_collection_pads(preset, data):
    x = data[0][:40]
    idx = irli.Index(preset, **{**FAST[preset], "n_buckets": 4, "n_train": 40}).fit(x)
    res = idx.search(data[1][:3], k=60, probes=4)
    assert res.ids.shape == (3, 60)
    assert (res.ids[:, :40] >= 0).all() and (res.ids[:, 40:] == -1).all()
    assert np.isneginf(res.scores[:, 40:]).all()
    assert sorted(res.ids[0, :40]) == list(range(40))


def _exact_kw(index, k=10):
    """For a PQ-scanning index: a refine factor that re-scores every entry."""
    return {"refine": -(-index.lists_.lists.size // k)} if index.codes_ else {}


def test_probing_every_bucket_is_exact(index, data, truth):
    res = index.search(data[1], k=10, probes=index.n_buckets, **_exact_kw(index))
    assert recall_at_k(res.ids, truth) >= 0.999
    assert (res.candidates == N).all()


def test_probes_beyond_buckets_are_clamped(index, data):
    a = index.search(data[1][:10], k=5, probes=10_000)
    b = index.search(data[1][:10], k=5, probes=index.n_buckets)
    np.testing.assert_array_equal(a.ids, b.ids)


def test_recall_does_not_fall_as_probes_grow(index, data, truth):
    # with PQ codes, only the exact re-rank of everything probed is monotone
    kw = _exact_kw(index)
    runs = [index.search(data[1], k=10, probes=m, **kw) for m in (1, 2, 4, 8, 16, 32)]
    recalls = [recall_at_k(r.ids, truth) for r in runs]
    assert all(b >= a for a, b in zip(recalls, recalls[1:])), recalls
    scans = [r.scanned.mean() for r in runs]
    assert all(b > a for a, b in zip(scans, scans[1:])), scans
    if not index.codes_:
        cands = [r.candidates.mean() for r in runs]
        assert all(b >= a for a, b in zip(cands, cands[1:])), cands


def test_save_load_round_trip(index, data, tmp_path):
    index.save(tmp_path / "idx")
    for mmap in (True, False):
        again = irli.load(tmp_path / "idx", mmap=mmap)
        a = index.search(data[1], k=10, probes=3)
        b = again.search(data[1], k=10, probes=3)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
        assert again.config == index.config and len(again) == len(index)
    assert isinstance(irli.load(tmp_path / "idx").vectors_, np.memmap)


def test_same_seed_same_index(preset, data):
    x = data[0][:1500]
    kw = {**FAST[preset], "n_buckets": 16}
    a = irli.Index(preset, seed=3, **kw).fit(x)
    b = irli.Index(preset, seed=3, **kw).fit(x)
    np.testing.assert_array_equal(a.assignments(), b.assignments())
    np.testing.assert_array_equal(a.search(data[1], k=10, probes=2).ids, b.search(data[1], k=10, probes=2).ids)


def test_fit_returns_self_and_reports_progress(preset, data):
    seen = []
    idx = irli.Index(preset, **{**FAST[preset], "n_buckets": 16}).fit(data[0][:1000], callback=seen.append)
    assert isinstance(idx, irli.Index) and idx.is_fitted
    stages = {p.stage for p in seen}
    assert "lists" in stages
    if FAST[preset].get("epochs"):
        assert {"ground-truth", "train"} <= stages
        assert all(0 <= p.done <= p.total for p in seen)
