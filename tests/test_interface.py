"""One interface for every kind of index (an implicit-style contract mixin).

`VectorContract` holds the checks every searchable vector index honours,
whatever made it: fitted in memory (every preset), loaded from disk,
memory-mapped, written by the out-of-core `irli.build`, or split into Ray
shards, or searched through `irli serve` by `irli.Client`. `TestLabelIndex`
holds the same checks, where they make sense, for `LabelIndex`. Each kind's
test class inherits the mixin and says how to make the index; every form
must give the very same ids as the in-memory index.
"""

import inspect

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import FAST, PRESETS, fitted

import irli
from irli.io.datasets import synthetic_labels
from irli.result import SearchResult

K = 5


class VectorContract:
    """Subclasses define `make(self, request, data, tmp_path)` -> (index,
    reference in-memory Index whose answers it must equal)."""

    search_options: dict = {}

    @pytest.fixture
    def pair(self, request, data, tmp_path):
        return self.make(request, data, tmp_path)

    def test_result_type_shapes_and_order(self, pair, data):
        index, _ = pair
        res = index.search(data[1][:30], k=K, **self.search_options)
        assert isinstance(res, SearchResult)
        assert res.ids.shape == (30, K) and res.ids.dtype == np.int64
        assert res.scores.shape == (30, K) and res.scores.dtype == np.float32
        assert res.candidates.shape == (30,)
        assert (np.diff(res.scores, axis=1) <= 1e-6).all()
        ids, scores = res
        assert ids is res.ids and scores is res.scores

    def test_same_ids_as_the_index_in_memory(self, pair, data):
        index, ref = pair
        got = index.search(data[1], k=10, **self.search_options)
        want = ref.search(data[1], k=10, **self.search_options)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6)

    def test_single_query_equals_its_row_in_a_batch(self, pair, data):
        index, _ = pair
        batch = index.search(data[1][:8], k=K, **self.search_options)
        for i in (0, 7):
            np.testing.assert_array_equal(index.search(data[1][i], k=K, **self.search_options).ids[0],
                                          batch.ids[i])

    def test_is_searchable_with_the_same_facts(self, pair):
        index, ref = pair
        assert isinstance(index, irli.Searchable)
        assert index.dim == ref.dim and len(index) == len(ref)
        assert index.config.metric == ref.config.metric and index.config.n_reps == ref.config.n_reps
        params = inspect.signature(type(index).search).parameters
        for name in ("queries", "k", "probes", "allow", "refine"):
            assert name in params, f"{type(index).__name__}.search lacks {name}"
        assert params["k"].default == 10 and params["probes"].default is None

    def test_bad_queries_get_one_line_errors(self, pair, data):
        index, _ = pair
        with pytest.raises(irli.InvalidInputError, match="queries"):
            index.search(data[1][:2, :5], k=K)
        bad = data[1][:2].copy()
        bad[1, 0] = np.nan
        with pytest.raises(irli.InvalidInputError, match="NaN"):
            index.search(bad, k=K)
        with pytest.raises(irli.InvalidInputError, match="k"):
            index.search(data[1][:2], k=0)


class TestEveryPresetInMemory(VectorContract):
    @pytest.fixture(params=PRESETS)
    def pair(self, request, data):
        index = fitted(request.param, data)
        return index, index


class TestLoaded(VectorContract):
    def make(self, request, data, tmp_path):
        ref = fitted("fast", data)
        return irli.load(ref.save(tmp_path / "idx"), mmap=False), ref


class TestMemoryMapped(VectorContract):
    def make(self, request, data, tmp_path):
        ref = fitted("ivf", data)
        return irli.load(ref.save(tmp_path / "idx"), mmap=True), ref


class TestBuiltOutOfCore(VectorContract):
    def make(self, request, data, tmp_path):
        np.save(tmp_path / "x.npy", data[0])
        built = irli.build(tmp_path / "x.npy", tmp_path / "idx", preset="ivf", sample=len(data[0]),
                           **FAST["ivf"])
        # learning from every item, a build equals a fit of the same items
        return built, fitted("ivf", data)


@pytest.mark.ray
class TestShardedOnRay(VectorContract):
    """Written as parts, each part loaded by its own Ray actor."""

    search_options = {"probes": 4}

    def make(self, request, data, tmp_path):
        ref = fitted("ivf", data)
        sharded = irli.ShardedIndex.open(ref.save(tmp_path / "sharded", shards=2),
                                         executor=request.getfixturevalue("cluster"))
        request.addfinalizer(sharded.close)
        return sharded, ref


class TestShardedInProcess(VectorContract):
    """Written as parts to an fsspec URL, opened by irli.load in this process."""

    search_options = {"probes": 4}

    def make(self, request, data, tmp_path):
        pytest.importorskip("fsspec")
        ref = fitted("ivf", data)
        url = f"memory://irli-test/{tmp_path.name}"
        return irli.load(ref.save(url, shards=3)), ref


class TestClientOfAService(VectorContract):
    """irli.Client against `irli serve` (the default server, in this process)."""

    def make(self, request, data, tmp_path):
        from irli.serving.server import Server

        ref = fitted("fast", data)
        server = Server(ref.save(tmp_path / "idx"), irli.serving.ServeOptions(port=0, read_only=True))
        url = server.start()
        request.addfinalizer(server.stop)
        return irli.Client(url), ref


@pytest.fixture(scope="module")
def labels():
    """A small fitted LabelIndex and 100 test points."""
    x, y = synthetic_labels(900, 60, n_features=300, seed=3)
    return irli.LabelIndex(n_reps=2, hidden=32, epochs=3, repartition_every=2).fit(x[:800], y[:800]), x[800:]


class TestLabelIndex:
    """The label index answers through the same result type and the same
    save / load contract."""

    def test_result_type_shapes_and_order(self, labels):
        index, x = labels
        res = index.predict(x, k=K)
        assert isinstance(res, SearchResult)
        assert res.ids.shape == (100, K) and res.ids.dtype == np.int64
        assert res.scores.dtype == np.float32 and res.candidates.shape == (100,)
        assert (np.diff(res.scores, axis=1) <= 1e-6).all()
        assert ((res.ids >= -1) & (res.ids < 60)).all()
        same = index.search(x, k=K)  # the same call under every index's name
        np.testing.assert_array_equal(same.ids, res.ids)
        np.testing.assert_array_equal(same.scores, res.scores)

    @pytest.mark.parametrize("mmap", [False, True])
    def test_save_returns_the_path_and_loads_the_same(self, labels, tmp_path, mmap):
        index, x = labels
        path = index.save(tmp_path / "lab")
        assert path == tmp_path / "lab"
        again = irli.load(path, mmap=mmap)
        assert isinstance(again, irli.LabelIndex)
        np.testing.assert_array_equal(again.predict(x, k=K).ids, index.predict(x, k=K).ids)

    def test_single_point_equals_its_row_in_a_batch(self, labels):
        index, x = labels
        batch = index.predict(x[:6], k=K)
        np.testing.assert_array_equal(index.predict(sp.csr_matrix(x[5]), k=K).ids[0], batch.ids[5])

    def test_unfitted_and_bad_input(self, labels):
        index, x = labels
        with pytest.raises(irli.NotFittedError):
            irli.LabelIndex().predict(x, k=K)
        with pytest.raises(irli.InvalidInputError, match="k must be a positive integer, got 0"):
            index.predict(x, k=0)
        with pytest.raises(irli.InvalidInputError, match="features"):
            index.predict(x[:, :10], k=K)
