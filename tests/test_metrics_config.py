"""Metrics and the config object."""

import numpy as np
import pytest

from irli import PRESETS, IndexConfig
from irli.config import default_buckets
from irli.metrics import bucket_load, recall_at_k, routing_accuracy


def test_recall_at_k():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(truth, truth) == 1.0
    assert recall_at_k(np.array([[3, 9, -1], [6, 5, 4]]), truth) == pytest.approx((1 / 3 + 1) / 2)
    assert recall_at_k(np.array([[-1, -1, -1], [-1, -1, -1]]), np.array([[-1, 1, 2], [0, 1, 2]])) == 0.0
    assert recall_at_k(np.array([[1, 7], [9, 4]]), truth, k=1) == 0.5


def test_routing_accuracy():
    assign = np.array([[0, 1, 2, 0], [1, 1, 0, 0]])  # R=2, 4 items
    probed = np.array([[[0], [2]], [[0], [0]]])  # R=2, 2 queries, m=1
    assert routing_accuracy(probed, assign, np.array([1, 3])) == 0.5  # q0: item1 in b1/b1: miss; q1: item3 b0 in rep0? probed 2 -> no; rep1 probed 0 -> yes
    assert routing_accuracy(probed, assign, np.array([0, 2])) == 1.0


def test_bucket_load():
    s = bucket_load(np.array([[4, 0, 2, 2]]))
    assert s == {"max": 4.0, "mean": 2.0, "max_over_mean": 2.0, "std": pytest.approx(np.sqrt(2)), "empty": 1}


def test_presets_and_overrides():
    assert set(PRESETS) == {"irli", "ivf-ltr", "ivf", "fast"}
    assert IndexConfig.from_preset("fast").scan == "pq4" and IndexConfig.from_preset("fast").copies == 2
    c = IndexConfig.from_preset("irli", n_reps=2)
    assert (c.n_reps, c.router, c.start, c.repartition) == (2, "mlp", "hash", True)
    assert IndexConfig.from_preset("ivf-ltr").router == "linear"
    assert IndexConfig.from_dict(c.to_dict()) == c
    assert c.replace(hidden=8).hidden == 8


def test_default_buckets():
    assert default_buckets(390_000) == 1024
    assert default_buckets(1_000_000) == 1024
    assert default_buckets(1_100_000) == 2048
    assert default_buckets(3) == 2 and default_buckets(16) == 4
    assert IndexConfig(n_buckets=77).buckets_for(10_000) == 77
