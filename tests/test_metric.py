"""irli.metric.Metric: the one place a metric's meaning is decided."""

import faiss
import numpy as np
import pytest

import irli
from irli.errors import ConfigError, InvalidInputError
from irli.metric import METRICS, Metric


def test_unknown_metric_is_refused():
    with pytest.raises(ConfigError, match="metric must be one of"):
        Metric("hamming")
    with pytest.raises(ConfigError):
        irli.Index(metric="L2")


def test_named_shares_one_instance_and_config_exposes_it():
    assert Metric.named("l2") is Metric.named("l2")
    for name in METRICS:
        assert irli.IndexConfig.from_preset("fast", metric=name).metric_type == Metric(name)


@pytest.mark.parametrize("name", METRICS)
def test_scores_round_trip_and_order(name):
    kind = Metric.named(name)
    raw = np.float32([3.0, -1.0, 0.5])  # kernels' scores: larger is closer
    np.testing.assert_array_equal(kind.ranked_scores(kind.user_scores(raw)), raw)
    user = kind.user_scores(raw)
    # what a user sees is ranked as FAISS ranks it: nearest first for l2, largest first otherwise
    best = np.argmin(user) if kind.l2 else np.argmax(user)
    assert best == 0
    assert kind.faiss_metric == (faiss.METRIC_L2 if name == "l2" else faiss.METRIC_INNER_PRODUCT)


def test_prepare_items_normalises_for_cosine_only():
    x = np.float32([[3, 4], [0, 0], [1e3, 0]])
    np.testing.assert_allclose(Metric.named("cosine").prepare_items(x, "v")[0], [0.6, 0.8], rtol=1e-6)
    assert not Metric.named("cosine").prepare_items(x, "v")[1].any()  # zero rows stay zero
    np.testing.assert_array_equal(Metric.named("ip").prepare_items(x, "v"), x)
    huge = np.float32([[1, 1], [1e30, 1e30]])
    with pytest.raises(InvalidInputError, match="v row 1 has norm"):
        Metric.named("l2").prepare_items(huge, "v")


def test_sqnorms_only_for_l2():
    x = np.float32([[3, 4], [1, 0]])
    np.testing.assert_allclose(Metric.named("l2").sqnorms(x), [25, 1])
    assert Metric.named("cosine").sqnorms(x).size == 0
