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
