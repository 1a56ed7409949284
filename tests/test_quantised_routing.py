"""Routing at high dimension: one-layer routers of d >= QUANTISED_FROM_DIM
score buckets with an int16 copy of their weights and re-score a shortlist
exactly (irli.kernels.route); the buckets must be the exact router's."""

import numpy as np
import pytest

import irli
from irli.io.datasets import synthetic
from irli.kernels.exact import exact_knn
from irli.kernels.route import quant_limit
from irli.metrics import recall_at_k
from irli.model.routers import QUANTISED_FROM_DIM, CentroidRouter, LinearRouter, Routing, quantise, route


def _unit(a):
    return np.ascontiguousarray(a / np.linalg.norm(a, axis=1, keepdims=True), dtype=np.float32)


def _exact_top(routers, q, m):
    """The exact top-m buckets of each repetition, ties to the lower bucket."""
    out = []
    for rt in routers:
        s = rt.logits(q).astype(np.float64)
        out.append(np.lexsort((np.tile(np.arange(s.shape[1]), (len(q), 1)), -s), axis=1)[:, :m])
    return np.stack(out)


@pytest.mark.parametrize("d", [QUANTISED_FROM_DIM, 768])
def test_quantised_routing_finds_the_exact_buckets(d):
    rng = np.random.default_rng(d)
    cents = [_unit(rng.normal(size=(256, d))) for _ in range(2)]
    routers = [CentroidRouter(cents[0]), LinearRouter(weight=cents[1], bias=rng.normal(size=256) * 0.01)]
    routing = Routing.from_routers(routers)
    assert routing.quantised and routing.c16.dtype == np.int16 and routing.c16.shape == (2, 256, d)
    q = _unit(rng.normal(size=(300, d)))
    for m in (1, 8, 24):
        got, scores = route(routing, q, m, with_probs=False)
        want = _exact_top(routers, q, m)
        assert (got == want).mean() > 0.999, m  # float ties aside
    # a single query takes the same steps alone as inside a batch
    one = np.concatenate([route(routing, q[i:i + 1], 8)[0] for i in range(40)], axis=1)
    np.testing.assert_array_equal(one, route(routing, q[:40], 8)[0])


def test_low_dimensions_and_two_layer_routers_stay_float():
    rng = np.random.default_rng(0)
    assert not Routing.from_routers([CentroidRouter(_unit(rng.normal(size=(64, QUANTISED_FROM_DIM - 1))))]).quantised
    from irli.model.routers import MLPRouter

    mlp = MLPRouter(w1=rng.normal(size=(300, 16)), b1=np.zeros(16), w2=rng.normal(size=(16, 8)), b2=np.zeros(8))
    assert not Routing.from_routers([mlp]).quantised


def test_quantise_is_within_half_a_step_and_sums_fit_int32():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(2, 50, 300)).astype(np.float32)
    w[0, 3] = 0  # a zero row
    q, scale = quantise(w)
    lim = quant_limit(300)
    assert q.dtype == np.int16 and np.abs(q).max() <= lim and scale[0, 3] == 1.0
    assert (np.abs(w - scale[:, :, None] * q) <= scale[:, :, None] * 0.5 + 1e-6).all()
    for d in (50, 2048, 4096, 20_000):
        assert d * quant_limit(d) ** 2 <= 2**31 - 1 and quant_limit(d) >= 1
    assert quant_limit(384) == 1023


@pytest.mark.parametrize("preset", ["fast", "ivf"])
def test_an_index_at_high_dimension_searches_like_exact_routing(preset):
    x, q = synthetic(3000, QUANTISED_FROM_DIM, 100, latent=8, clusters=24, seed=3)
    truth = exact_knn(x, q, 10, "cosine")[0]
    index = irli.Index(preset, n_buckets=32).fit(x)
    assert index.routing_.quantised
    res = index.search(q, k=10, probes=8)
    single = np.concatenate([index.search(q[i], k=10, probes=8).ids for i in range(30)])
    np.testing.assert_array_equal(single, res.ids[:30])
    # the same index with float routing probes the same buckets, so finds the same items
    plain = Routing(*(np.array(a) for a in (index.routing_.a1, index.routing_.b1, index.routing_.a2,
                                            index.routing_.b2)),
                    c16=np.zeros((1, 0, 0), np.int16), cscale=np.zeros((1, 0), np.float32),
                    a1t=np.zeros((1, 0, 0), np.float32))
    qn = _unit(q)
    np.testing.assert_array_equal(route(index.routing_, qn, 8)[0], route(plain, qn, 8)[0])
    assert recall_at_k(res.ids, truth) > 0.8
