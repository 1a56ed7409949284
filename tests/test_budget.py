"""The learned probe budget (learned_probes): what it learns, that search
with it stays consistent across the kernel's paths and a save, and that it
finds neighbours, checked against exact search on generated data."""

import json

import numpy as np
import pytest

import irli
from irli.errors import ConfigError, IndexFormatError
from irli.io.datasets import synthetic
from irli.io.storage import manifest_sha256
from irli.kernels.exact import exact_knn
from irli.learn.budget import ProbeBudget, _needed

N, D = 6000, 16


@pytest.fixture(scope="module")
def setup():
    x, q = synthetic(N, D, 300, latent=6, clusters=24, seed=11)
    index = irli.Index("fast", n_buckets=64, learned_probes=True).fit(x)
    return x, q, index


def recall(ids, truth):
    return np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids, truth)])


def test_needed_counts_probes_to_the_last_reachable_neighbour():
    probed = np.array([[3, 1, 0, 2], [0, 1, 2, 3]], dtype=np.int32)  # routing order of 2 queries
    assign = np.array([[3, 0, 2, 1, 2], [1, 1, 1, 3, 0]], dtype=np.int32)  # home and spill bucket of 5 items
    truth = np.array([[0, 2], [3, 4]])
    # query 0: item 0 is in 3 (probe 1) or 1 (probe 2): 1; item 2 in 2 or 1: probe 2 -> 2 probes
    # query 1: item 3 in 1 or 3: probe 2; item 4 in 2 or 0: probe 1 -> 2 probes
    np.testing.assert_array_equal(_needed(probed, assign, truth, 4), [2, 2])
    probed2 = np.array([[3, 1]], dtype=np.int32)  # narrower routing: item 0 at probe 1, item 2 at probe 2
    np.testing.assert_array_equal(_needed(probed2, assign, truth[:1], 4), [2])
    probed3 = np.array([[2, 0]], dtype=np.int32)  # item 3 sits in buckets 1 and 3: not reached, so all probes
    np.testing.assert_array_equal(_needed(probed3, assign, np.array([[3, 3]]), 4), [2])


def test_the_mean_budget_is_the_probes_asked_for(setup):
    x, q, index = setup
    sizes = np.diff(index.lists_.offsets[0])
    for probes in (4, 8):
        r = index.search(q, k=10, probes=probes)
        opened = r.scanned / sizes.mean()  # about the buckets a query opened
        assert 0.5 * probes < opened.mean() < 2 * probes
        assert r.scanned.std() > 0  # queries get different budgets


def test_one_query_per_call_equals_the_batch(setup):
    _, q, index = setup
    batch = index.search(q, k=10, probes=6)
    for i in range(0, len(q), 37):
        one = index.search(q[i], k=10, probes=6)
        np.testing.assert_array_equal(one.ids[0], batch.ids[i])
        assert one.scanned[0] == batch.scanned[i]


def test_a_batch_of_several_chunks_equals_one_query_per_call(setup):
    """A batch with the budget runs in chunks of _CHUNK_LEARNED queries (two
    passes each): one past a chunk boundary gets what it gets alone."""
    from irli.kernels.pq_scan import _CHUNK_LEARNED as chunk
    x, _, index = setup
    rng = np.random.default_rng(5)
    n = chunk + 300
    q = (x[rng.choice(len(x), n)] + 0.3 * rng.standard_normal((n, D))).astype(np.float32)
    batch = index.search(q, k=10, probes=6, threads=1)
    for i in list(range(0, n, 97)) + [chunk - 1, chunk, n - 1]:
        one = index.search(q[i], k=10, probes=6)
        np.testing.assert_array_equal(one.ids[0], batch.ids[i])
        assert one.scanned[0] == batch.scanned[i]


def test_recall_against_exact_search(setup):
    x, q, index = setup
    truth = exact_knn(x, q, 10, "cosine")[0]
    fixed = irli.Index("fast", n_buckets=64).fit(x)
    got = index.search(q, k=10, probes=8)
    ref = fixed.search(q, k=10, probes=8)
    assert recall(got.ids, truth) >= 0.9
    # the same mean number of buckets, spent where the model asks: at least as good as a fixed count
    assert recall(got.ids, truth) >= recall(ref.ids, truth) - 0.01


def test_save_load_keeps_the_budget(setup, tmp_path):
    _, q, index = setup
    path = index.save(tmp_path / "lp")
    again = irli.load(path)
    assert isinstance(again.budget_, ProbeBudget)
    np.testing.assert_array_equal(again.budget_.weights, index.budget_.weights)
    np.testing.assert_array_equal(again.search(q, k=5, probes=6).ids, index.search(q, k=5, probes=6).ids)


def test_a_damaged_budget_is_refused(setup, tmp_path):
    _, _, index = setup
    path = index.save(tmp_path / "lp")
    man = json.loads((path / "manifest.json").read_text())
    man["probe_budget"]["weights"] = man["probe_budget"]["weights"][:3]
    (path / "manifest.json").write_text(json.dumps(man))  # edited, its checksum not: refused as such
    with pytest.raises(IndexFormatError, match="manifest.json does not match its checksum"):
        irli.Index.load(path, verify=False)
    man["manifest_sha256"] = manifest_sha256(man)  # crafted with a checksum to match: the values are checked
    (path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(IndexFormatError, match="probe_budget"):
        irli.Index.load(path, verify=False)


def test_learned_probes_needs_codes_and_one_repetition():
    with pytest.raises(ConfigError, match="learned_probes"):
        irli.Index("ivf", learned_probes=True)
    with pytest.raises(ConfigError, match="learned_probes"):
        irli.Index("fast", learned_probes=True, n_reps=2)


def test_fast_has_it_unless_told_or_an_override_rules_it_out(setup):
    x, q, index = setup
    cfg = irli.IndexConfig.from_preset("fast")
    assert cfg.learned_probes and cfg.probes == 18
    assert not irli.IndexConfig.from_preset("fast", scan="exact").learned_probes  # the preset's, dropped
    assert not irli.IndexConfig.from_preset("fast", n_reps=2).learned_probes
    assert not irli.IndexConfig.from_preset("fast", learned_probes=False).learned_probes
    with pytest.raises(ConfigError, match="learned_probes"):  # the user's own: an error
        irli.IndexConfig.from_preset("fast", scan="exact", learned_probes=True)
    small = x[:1500]
    assert irli.Index("fast", n_buckets=16).fit(small).budget_ is not None
    assert irli.Index("fast", n_buckets=16, learned_probes=False).fit(small).budget_ is None


def test_asking_for_every_bucket_opens_every_bucket(setup):
    x, q, index = setup
    r = index.search(q[:50], k=10, probes=64, refine=1000)  # B = 64
    assert (r.scanned == index.lists_.offsets[0, -1]).all()  # every entry of every bucket
    truth = exact_knn(x, q[:50], 10, "cosine")[0]
    assert recall(r.ids, truth) == 1.0
    one = index.search(q[3], k=10, probes=64, refine=1000)
    np.testing.assert_array_equal(one.ids[0], r.ids[3])


def test_a_query_log_trains_it(setup):
    x, q, _ = setup
    logged = irli.Index("fast", n_buckets=64, learned_probes=True).fit(x, train_queries=q[:200])
    assert np.isfinite(logged.budget_.weights).all() and logged.budget_.scale > 0
    truth = exact_knn(x, q[200:], 10, "cosine")[0]
    assert recall(logged.search(q[200:], k=10, probes=8).ids, truth) >= 0.85
