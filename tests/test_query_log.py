"""Learning from a query log: the training schedule follows the log's size,
targets can be the user's own, and a log of queries unlike the items buys
recall over centroid routing."""

import numpy as np
import pytest

import irli
from irli.config import IndexConfig
from irli.errors import InvalidInputError
from irli.metrics import recall_at_k


def test_schedule_follows_the_log_size():
    cfg = IndexConfig.from_preset("ivf-ltr")
    assert cfg.scaled_schedule(50_000) == cfg  # the presets' values are a 50,000-query log's
    small, large = cfg.scaled_schedule(5_000), cfg.scaled_schedule(2_000_000)
    assert small.batch_size < cfg.batch_size < large.batch_size
    assert small.lr < cfg.lr < large.lr
    assert small.epochs > cfg.epochs > large.epochs >= 2
    steps = cfg.epochs * 50_000 / cfg.batch_size
    for c, n in ((small, 5_000), (large, 2_000_000)):  # about the same number of optimiser steps
        assert 0.6 * steps <= c.epochs * n / c.batch_size <= 1.6 * steps
    irli_ = IndexConfig.from_preset("irli").scaled_schedule(5_000)
    assert irli_.epochs // irli_.repartition_every == 20 // 5  # as many re-partition rounds
    assert cfg.replace(schedule="fixed").scaled_schedule(5_000).epochs == cfg.epochs
    assert IndexConfig.from_preset("ivf").scaled_schedule(5_000).epochs == 0  # nothing trained


def _shifted(seed=7, n=4000, d=32, n_log=2000, n_test=500):
    """Items in clusters; queries drawn near items, then distorted by a fixed
    linear map and a common offset (queries unlike the items, as questions
    are unlike passages)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((48, d))
    x = (centers[rng.integers(0, 48, n)] + 0.5 * rng.standard_normal((n, d))).astype(np.float32)
    a = np.eye(d) + 0.8 * rng.standard_normal((d, d)) / np.sqrt(d)
    v = 1.5 * rng.standard_normal(d)

    def draw(m):
        return ((x[rng.integers(0, n, m)] + 0.3 * rng.standard_normal((m, d))) @ a + v).astype(np.float32)

    return x, draw(n_log), draw(n_test)


def _truth(x, q, k=10):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.argsort(-(qn @ xn.T), axis=1, kind="stable")[:, :k]


def test_a_log_of_shifted_queries_beats_centroid_routing_and_its_schedule_pays():
    x, log, test = _shifted()
    truth = _truth(x, test)
    ivf = irli.Index("ivf", n_buckets=32).fit(x)
    ltr = irli.Index("ivf-ltr", n_buckets=32).fit(x, train_queries=log)
    # the presets' schedule as set: 20 epochs of batches of 512, 80 steps on this log
    fixed = irli.Index("ivf-ltr", n_buckets=32, schedule="fixed").fit(x, train_queries=log)
    for probes in (1, 2):
        base = recall_at_k(ivf.search(test, k=10, probes=probes).ids, truth, 10)
        learned = recall_at_k(ltr.search(test, k=10, probes=probes).ids, truth, 10)
        short = recall_at_k(fixed.search(test, k=10, probes=probes).ids, truth, 10)
        assert learned >= base + 0.03, (probes, base, learned)
        assert learned >= short + 0.01, (probes, short, learned)  # the schedule sized for the log pays


def test_own_targets_equal_to_the_exact_neighbours_train_the_same_router():
    x, log, test = _shifted(n=2000, n_log=600, n_test=100)
    kw = dict(n_buckets=16, epochs=3)
    ids = np.arange(x.shape[0], dtype=np.int64) * 3 + 5  # user ids, not positions
    default = irli.Index("ivf-ltr", **kw).fit(x, ids=ids, train_queries=log)
    own = irli.Index("ivf-ltr", **kw).fit(x, ids=ids, train_queries=log, train_targets=ids[_truth(x, log, 1)])
    np.testing.assert_array_equal(default.search(test, k=10, probes=2).ids, own.search(test, k=10, probes=2).ids)
    np.testing.assert_array_equal(default.routers_[0].weight, own.routers_[0].weight)
    other = irli.Index("ivf-ltr", **kw).fit(x, ids=ids, train_queries=log,
                                           train_targets=ids[np.random.default_rng(1).integers(0, 2000, (600, 2))])
    assert not np.array_equal(default.routers_[0].weight, other.routers_[0].weight)


@pytest.mark.parametrize("targets, queries, match", [
    (np.zeros((5, 1), np.int64), False, "needs train_queries"),
    (np.zeros((4, 1), np.int64), True, "4 rows for 5 train_queries"),
    (np.zeros(5, np.int64), True, "an \\(m, t\\) matrix"),
    (np.full((5, 1), 999), True, "id 999, which is not among"),
    (np.full((5, 1), 0.5), True, "must be integers"),
])
def test_bad_targets_are_named(targets, queries, match):
    x, log, _ = _shifted(n=200, n_log=5, n_test=1)
    with pytest.raises(InvalidInputError, match=match):
        irli.Index("ivf-ltr", n_buckets=4, epochs=1).fit(x, train_queries=log if queries else None,
                                                          train_targets=targets)


def test_targets_without_a_trained_router_are_refused():
    x, log, _ = _shifted(n=200, n_log=5, n_test=1)
    with pytest.raises(InvalidInputError, match="train a router"):
        irli.Index("ivf", n_buckets=4).fit(x, train_queries=log, train_targets=np.zeros((5, 1), np.int64))
