"""Partitions, re-partitioning and router training."""

import numpy as np
import pytest
from conftest import FAST

import irli
from irli.config import IndexConfig
from irli.learn.loop import training_set
from irli.model.partition import (
    InvertedLists,
    assign_nearest,
    hash_assign,
    kmeans,
    nearest_centroids,
    power_of_k,
)


def test_hash_is_seeded_and_spreads_items():
    a = hash_assign(10_000, 64, seed=1)
    assert a.dtype == np.int32 and a.min() >= 0 and a.max() < 64
    np.testing.assert_array_equal(a, hash_assign(10_000, 64, seed=1))
    assert (a != hash_assign(10_000, 64, seed=2)).mean() > 0.9
    counts = np.bincount(a, minlength=64)
    assert counts.max() < 1.5 * counts.mean() and counts.min() > 0.5 * counts.mean()


def test_kmeans_beats_random_centroids(data):
    x = data[0] / np.linalg.norm(data[0], axis=1, keepdims=True)
    c = kmeans(x, 16, spherical=True, iters=10, seed=0)
    assert c.shape == (16, x.shape[1]) and c.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1, atol=1e-5)
    rand = x[np.random.default_rng(0).choice(len(x), 16, replace=False)]
    fit = (x * c[assign_nearest(x, c, True)]).sum(1).mean()
    base = (x * rand[assign_nearest(x, rand, True)]).sum(1).mean()
    assert fit > base


def test_power_of_k_takes_least_loaded_choice():
    # every item offers buckets 0 and 1 first: running counts alternate them
    choices = np.tile(np.array([[0, 1, 2, 3]], dtype=np.int32), (10, 1))
    a = power_of_k(choices, 2, 4, None, seed=0)
    assert sorted(np.bincount(a, minlength=4).tolist()) == [0, 0, 5, 5]
    # with a cap of 1.0 x mean (= 3 per bucket of 4 over 10 items), overflow goes down the ranking
    b = power_of_k(choices, 2, 4, 1.0, seed=0)
    assert np.bincount(b, minlength=4).max() <= 3 and np.bincount(b, minlength=4).sum() == 10


def test_power_of_k_respects_the_cap_even_without_fallbacks():
    choices = np.zeros((1000, 2), dtype=np.int32)  # everyone wants bucket 0
    a = power_of_k(choices, 2, 50, 1.5, seed=0)
    assert np.bincount(a, minlength=50).max() <= 30


@pytest.mark.parametrize("copies", [1, 2])
def test_inverted_lists_hold_every_assignment(copies):
    rng = np.random.default_rng(0)
    assign = np.stack([rng.permutation(7)[:copies] for _ in range(3 * 100)]).reshape(3, 100, copies)
    assign = np.ascontiguousarray(assign.transpose(0, 2, 1)).astype(np.int32)  # (R, c, n), no repeats per item
    inv = InvertedLists.from_assignments(assign, 7)
    assert inv.lists.shape == (3, copies * 100) and inv.sizes().sum(axis=1).tolist() == [copies * 100] * 3
    for r in range(3):
        for b in range(7):
            members = inv.lists[r, inv.offsets[r, b] : inv.offsets[r, b + 1]]
            assert (np.diff(members) > 0).all()  # increasing, no item twice in a bucket
            want = np.nonzero((assign[r] == b).any(axis=0))[0]
            np.testing.assert_array_equal(members, want)


def test_soar_spill_picks_a_different_nearby_bucket(data):
    from irli.model.partition import soar_spill

    x = data[0] / np.linalg.norm(data[0], axis=1, keepdims=True)
    c = kmeans(x, 16, spherical=True, iters=5, seed=0)
    home = assign_nearest(x, c, True)
    near = nearest_centroids(x, c, False, 16)
    extra = soar_spill(x, c, home, 2, lam=1.0)
    assert extra.shape == (2, len(x))
    assert (extra[0] != home).all() and (extra[1] != home).all() and (extra[0] != extra[1]).all()
    # with no orthogonality weight, the second home is just the second-nearest centroid
    np.testing.assert_array_equal(soar_spill(x, c, home, 1, lam=0.0)[0], near[:, 1])
    # with it, the second home's residual is less aligned with the first residual
    r1 = x - c[home]

    def cos(a, b):
        return np.abs((a * b).sum(1)) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    assert cos(r1, x - c[extra[0]]).mean() < cos(r1, x - c[near[:, 1]]).mean()


def test_training_set_excludes_self(data):
    x = data[0] / np.linalg.norm(data[0], axis=1, keepdims=True)
    cfg = IndexConfig(target_k=5, n_train=300)
    ts = training_set(x, cfg)
    assert ts.neighbors.shape == (300, 5)
    rows = np.nonzero((x[None, :, :] == ts.queries[:, None, :]).all(-1))[1]
    assert not (ts.neighbors == rows[:, None]).any()


def _neighbour_mass(index, queries, neighbours):
    """Mean router probability of the buckets holding each query's neighbours."""
    assign = index.assignments()
    qn = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    out = []
    for r, router in enumerate(index.routers_):
        s = router.logits(qn)
        p = np.exp(s - s.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        held = np.zeros_like(p, dtype=bool)
        np.put_along_axis(held, assign[r][neighbours], True, axis=1)
        out.append((p * held).sum(1).mean())
    return float(np.mean(out))


def test_repartitioning_raises_neighbour_bucket_probability(data):
    x, q = data
    kw = {**FAST["irli"], "epochs": 8, "repartition_every": 4, "loss": "softmax", "min_moved": 0.0}
    before = irli.Index("irli", **{**kw, "repartition": False}).fit(x)
    after = irli.Index("irli", **kw).fit(x)
    from irli.kernels.exact import exact_knn

    nb = exact_knn(x, q, 10, "cosine")[0]
    assert _neighbour_mass(after, q, nb) > _neighbour_mass(before, q, nb) + 0.02
    sizes = after.lists_.sizes()
    assert sizes.max() <= 2.0 * sizes.mean() + 1  # the load cap
    assert sizes.max() <= np.ceil(kw.get("max_load", 2.0) * len(x) / sizes.shape[1])
    assert after.history_["rounds"][0]["moved"]  # it did re-partition


def test_early_stop_when_few_items_move(data):
    x = data[0]
    idx = irli.Index("irli", **{**FAST["irli"], "epochs": 12, "repartition_every": 2, "min_moved": 1.0}).fit(x)
    rounds = idx.history_["rounds"]
    assert len(rounds) == 1 and "moved" in rounds[0]


def test_validation_picks_the_epoch(data):
    idx = irli.Index("ivf-ltr", **{**FAST["ivf-ltr"], "epochs": 30, "patience": 2, "lr": 0.05}).fit(data[0])
    r = idx.history_["rounds"][0]
    vals, best = r["val_loss"], r["best_epoch"][0]
    assert r["epochs"] <= 30 and len(vals) == r["epochs"]
    if best:  # an epoch beat the starting weights: the best one is kept
        assert best == int(np.argmin(vals)) + 1
        assert r["epochs"] <= best + 2  # stopped `patience` epochs after it, or at the end
    else:  # no epoch beat the starting weights (epoch 0): they are kept, and training stops after `patience`
        assert r["epochs"] == 2


@pytest.mark.parametrize("combo", [
    dict(start="hash", router="centroid", repartition=True, epochs=4, repartition_every=2),
    dict(start="kmeans", router="mlp", repartition=False, epochs=3, n_reps=2),
    dict(start="hash", router="linear", repartition=True, epochs=4, repartition_every=2, loss="sigmoid"),
    dict(start="kmeans", router="linear", repartition=True, epochs=4, repartition_every=2, k_choices=3),
    dict(start="kmeans", router="centroid", n_reps=2, min_votes=2),
])
def test_every_combination_is_reachable(data, combo):
    idx = irli.Index("ivf", n_buckets=16, n_train=800, hidden=32, **combo).fit(data[0][:1200])
    assert idx.config.start == combo["start"] and idx.routers_[0].kind == combo["router"]
    res = idx.search(data[1][:5], k=3, probes=16)
    assert (res.ids >= 0).all() and res.candidates.min() == 1200


def test_user_training_queries(data):
    x, q = data
    idx = irli.Index("ivf-ltr", **FAST["ivf-ltr"]).fit(x, train_queries=q)
    assert idx.is_fitted and idx.history_["rounds"][0]["epochs"] >= 1


def test_bucket_means_in_batches():
    from irli.model.partition import bucket_means

    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 4)).astype(np.float32)
    a = rng.integers(0, 9, size=500).astype(np.int32)
    a[a == 3] = 4  # bucket 3 empty
    old = np.full((9, 4), 7.0, np.float32)
    got = bucket_means(x, a, 9, spherical=False, old=old, batch=37)
    for b in range(9):
        want = x[a == b].mean(0) if (a == b).any() else old[b]
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-6)
    unit = bucket_means(x, a, 9, spherical=True)
    np.testing.assert_allclose(np.linalg.norm(unit[[0, 1, 2, 4]], axis=1), 1, atol=1e-5)


def test_irli_preset_on_fewer_buckets_than_its_choices():
    """The preset's K = 8 choices shrink to the buckets there are; a K the
    user sets past them is still refused."""
    from irli.errors import ConfigError

    assert IndexConfig.from_preset("irli", n_buckets=4).k_choices == 4
    assert IndexConfig.from_preset("irli", n_buckets=64).k_choices == 8
    with pytest.raises(ConfigError, match="k_choices=8 exceeds n_buckets=4"):
        IndexConfig.from_preset("irli", n_buckets=4, k_choices=8)
    x = np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32)
    index = irli.Index("irli", n_buckets=4, epochs=2, n_train=300).fit(x)
    sizes = np.diff(index.lists_.offsets, axis=1)
    assert sizes.max() <= np.ceil(1.2 * len(x) / 4)  # balanced under the preset's cap


def test_repartition_on_the_cpu_routes_through_the_compiled_kernels(data):
    """The exported routers, run by the search's routing kernels, rank each
    item's buckets as the torch routers do (up to float rounding between
    near-equal scores), and the re-partition puts items where power-of-K
    on torch's ranking puts them."""
    import torch

    from irli.learn.loop import _Trainer
    from irli.model.partition import fallback_width

    x = data[0] / np.linalg.norm(data[0], axis=1, keepdims=True)
    cfg = IndexConfig.from_preset("irli", **FAST["irli"])
    trainer = _Trainer(x.shape[1], 32, cfg, None, sample=x[:500])
    with torch.no_grad():  # untrained weights: any ranking will do
        trainer.params["w2"].mul_(5.0)
    assert trainer.device.type == "cpu"
    new = trainer.repartition(x, seed=3)
    width = fallback_width(cfg.k_choices, 32)
    with torch.no_grad():
        top = torch.topk(trainer.forward(torch.from_numpy(x)), width, dim=2).indices.numpy().astype(np.int32)
    want = np.stack([power_of_k(top[r], cfg.k_choices, 32, cfg.max_load, 3 + r) for r in range(cfg.n_reps)])
    assert new.shape == want.shape == (cfg.n_reps, x.shape[0]) and new.dtype == want.dtype
    assert (new == want).mean() >= 0.99
    assert (new == want).mean(axis=1).min() >= 0.98
