"""irli.model.repetitions.Repetitions: the model type an Index holds, and
the one place its partitions and routers become arrays on disk and back."""

import dataclasses

import numpy as np
import pytest
from conftest import FAST, fitted

import irli
from irli.errors import IndexFormatError
from irli.model.repetitions import Repetitions


@pytest.mark.parametrize("preset", ["fast", "irli"])
def test_arrays_and_router_tensors_round_trip(data, preset):
    index = fitted(preset, data)
    reps = index.reps_
    back = Repetitions.from_arrays("here", reps.arrays(), reps.router_tensors(), reps.kind, reps.n_reps,
                                   index.config.metric)
    assert back.n_reps == index.config.n_reps and back.n_buckets == index.n_buckets
    np.testing.assert_array_equal(back.assign, reps.assign)
    np.testing.assert_array_equal(back.lists.lists, reps.lists.lists)
    q = np.ascontiguousarray(data[1][:50] / np.linalg.norm(data[1][:50], axis=1, keepdims=True), dtype=np.float32)
    np.testing.assert_array_equal(back.route(q, 4)[0], reps.route(q, 4)[0])


def test_frozen_a_change_makes_a_new_one(data):
    index = irli.Index("ivf", **FAST["ivf"]).fit(data[0])  # its own: the shared fitted one must not change
    reps = index.reps_
    with pytest.raises(dataclasses.FrozenInstanceError):
        reps.assign = None
    before = reps.assign
    index.add(data[1][:5])
    assert index.reps_ is not reps and reps.assign is before  # a search holding `reps` sees no change
    assert index.reps_.assign.shape[2] == before.shape[2] + 5
    assert index.reps_.routing is reps.routing  # the routers did not change: their stacked form is kept
    assert reps.changed(routers=reps.routers).routing is not reps.routing


def test_routers_that_do_not_fit_are_refused(data):
    reps = fitted("ivf", data).reps_
    tensors = reps.router_tensors()
    with pytest.raises(IndexFormatError, match="router 0 maps"):
        Repetitions.read_routers("idx", tensors, reps.kind, reps.n_reps, "cosine", reps.n_buckets + 1,
                                 reps.centroids.shape[2])
    with pytest.raises(IndexFormatError, match="idx: router 0 is unreadable"):
        Repetitions.read_routers("idx", tensors, "no-such-kind", reps.n_reps, "cosine", reps.n_buckets,
                                 reps.centroids.shape[2])


def test_place_follows_the_routers_and_drift_matches_fit(data):
    index = fitted("ivf", data)
    reps = index.reps_
    q = np.ascontiguousarray(data[1][:40] / np.linalg.norm(data[1][:40], axis=1, keepdims=True), dtype=np.float32)
    loads = np.stack([np.bincount(reps.assign[r, 0], minlength=reps.n_buckets) for r in range(reps.n_reps)])
    where = reps.place(q, index.config, loads, seed=0)
    assert where.shape == (reps.n_reps, reps.copies, 40)
    np.testing.assert_array_equal(where[:, 0], reps.route(q, 1)[0][:, :, 0])  # no re-partitioning: the best bucket
    alive = np.arange(reps.assign.shape[2])
    moved, imbalance, _ = reps.drift(index.vectors_, alive, alive, index.config)
    at_fit = index.history_["drift_at_fit"]
    assert abs(np.mean(moved) - at_fit["moved"]) < 0.02 and abs(imbalance - at_fit["imbalance"]) < 1e-6


def _label_model(live=None, seed=0, reps=3, feats=40, hid=8, b=6, labels=30):
    from irli.model.labels import LabelModel

    rng = np.random.default_rng(seed)
    w = {"w1": rng.normal(size=(feats, reps * hid)), "b1": rng.normal(size=reps * hid) * 0.1,
         "w2": rng.normal(size=(reps, hid, b)), "b2": rng.normal(size=(reps, b)) * 0.1}
    w = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in w.items()}
    assign = rng.integers(0, b, size=(reps, labels)).astype(np.int32)
    return LabelModel.build(**w, assign=assign, live=live)


def test_the_label_model_holds_repetitions_of_sparse_routers():
    import scipy.sparse as sp

    model = _label_model()
    reps = model.reps
    assert isinstance(reps, Repetitions) and reps.kind == "sparse-mlp" and not reps.dense
    assert reps.centroids is None and reps.copies == 1 and reps.n_reps == 3 and reps.n_buckets == 6
    x = sp.random(20, 40, density=0.2, format="csr", random_state=1, dtype=np.float32)
    h = model.hidden(x)
    for r, router in enumerate(reps.routers):  # each router is its slice of the stacked layers
        assert np.shares_memory(router.w2, reps.routing.w2)
        z = router.logits(x)
        np.testing.assert_allclose(model.bucket_probs(h, r), 1 / (1 + np.exp(-z)), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="vector index"):
        reps.route(np.zeros((1, 40), np.float32), 2)
    with pytest.raises(TypeError, match="vector index"):
        reps.arrays()
    with pytest.raises(IndexFormatError, match="reads sparse rows"):
        Repetitions.read_routers("idx", {f"{r}.{k}": v for r, rt in enumerate(reps.routers)
                                         for k, v in rt.state().items()}, "sparse-mlp", 3, "cosine", 6, 40)


def test_label_lists_hold_the_live_labels_in_their_buckets():
    live = np.ones(30, dtype=bool)
    live[[0, 7, 29]] = False
    model = _label_model(live=live)
    assert model.n_live == 27 and model.members.shape == (3, 27)
    for r in range(3):
        for b in range(6):
            members = model.members[r, model.offsets[r, b]:model.offsets[r, b + 1]]
            want = np.flatnonzero(live & (model.assign[r] == b))
            np.testing.assert_array_equal(members, want)
    # a change of `live` rebuilds the lists; the stacked routers are shared, not copied
    all_live = model.changed(live=None)
    assert all_live.n_live == 30 and all_live.reps.routing is model.reps.routing and model.n_live == 27
    back = type(model).build(**model.arrays())  # what a label directory holds rebuilds the same model
    np.testing.assert_array_equal(back.members, model.members)
    np.testing.assert_array_equal(back.assign, model.assign)
