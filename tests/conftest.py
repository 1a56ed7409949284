"""Shared fixtures: small structured data with exact ground truth, and fast
settings for each preset (same code paths, smaller models and fewer epochs)."""

import numpy as np
import pytest

import irli
from irli.io.datasets import synthetic
from irli.kernels.exact import exact_knn

N, D, NQ, B = 3000, 16, 200, 32

# Fast per-preset overrides: smaller networks and fewer epochs than the
# defaults, so the whole suite stays well under its time budget.
FAST = {
    "ivf": dict(n_buckets=B),
    "ivf-ltr": dict(n_buckets=B, epochs=6, n_train=2000, lr=3e-3),
    "irli": dict(n_buckets=B, hidden=64, epochs=6, repartition_every=2, n_train=2000,
                 target_k=10, lr=3e-3, n_reps=3),
    "fast": dict(n_buckets=B),
}
PRESETS = list(FAST)


@pytest.fixture(scope="session")
def data():
    """(items float32 (N, D), queries float32 (NQ, D)), deterministic."""
    return synthetic(N, D, NQ, latent=6, clusters=24, seed=7)


@pytest.fixture(scope="session")
def truth(data):
    """Exact cosine top-10 ids of the queries among the items."""
    x, q = data
    return exact_knn(x, q, 10, "cosine")[0]


_CACHE: dict = {}


def fitted(preset: str, data, metric: str = "cosine", **extra) -> irli.Index:
    """A fitted index for `preset` on `data`, cached per arguments (read-only use)."""
    key = (preset, metric, tuple(sorted(extra.items())))
    if key not in _CACHE:
        _CACHE[key] = irli.Index(preset, metric=metric, **{**FAST[preset], **extra}).fit(data[0])
    return _CACHE[key]


@pytest.fixture(params=PRESETS)
def preset(request):
    return request.param


@pytest.fixture
def index(preset, data):
    return fitted(preset, data)


@pytest.fixture(scope="session")
def cluster():
    """A local Ray with 2 CPUs for the session (skipped without the ray extra)."""
    import os
    from pathlib import Path

    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'irli[ray]')")
    from irli.distributed import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(  # workers import irli and the tests
                 [str(Path(irli.__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)])}})
    yield RayExecutor(workers=2)
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """A test that uses the Ray cluster is marked `ray` (make test runs those
    in their own pytest process), however it is written."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


def assert_alone_equals_batch(index, q, **search):
    """Each query searched alone gives its row of one batched search (ids,
    scores, candidates, entries read)."""
    batch = index.search(q, k=10, threads=1, **search)
    for i in range(q.shape[0]):
        one = index.search(q[i], k=10, **search)
        np.testing.assert_array_equal(one.ids[0], batch.ids[i])
        np.testing.assert_array_equal(one.scores[0], batch.scores[i])
        assert one.candidates[0] == batch.candidates[i] and one.scanned[0] == batch.scanned[i]
    return batch
