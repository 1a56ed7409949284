"""One interface for every kind of index (an implicit-style contract mixin).

`Contract` holds the checks every index honours, whatever made it; each
kind says how to make one, what its queries are and how to spoil them.
`VectorContract` adds the irli.Searchable facts and serves every vector
index: fitted in memory (every preset), loaded from disk, memory-mapped,
written by the out-of-core `irli.build`, split into Ray shards or fsspec
parts, or searched through `irli serve` by `irli.Client`. `LabelContract`
serves `LabelIndex` in memory, loaded and memory-mapped. Every form must
give the very same ids as its reference. `TestLabelIndex` keeps what only
a label index has to honour.
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


class Contract:
    """The checks every index honours, whatever it holds. Subclasses define
    `make(self, request, data, tmp_path)` -> (index, reference whose answers
    it must equal), `queries(self, request, data)` -> its queries, and how
    to take one query, a too-narrow batch and a batch holding NaN."""

    search_options: dict = {}
    dim_word = "queries"  # what a wrong-dimension error names

    @pytest.fixture
    def pair(self, request, data, tmp_path):
        return self.make(request, data, tmp_path)

    @pytest.fixture
    def qs(self, request, data):
        return self.queries(request, data)

    def test_result_type_shapes_and_order(self, pair, qs):
        index, _ = pair
        res = index.search(qs[:30], k=K, **self.search_options)
        assert isinstance(res, SearchResult)
        assert res.ids.shape == (30, K) and res.ids.dtype == np.int64
        assert res.scores.shape == (30, K) and res.scores.dtype == np.float32
        assert res.candidates.shape == (30,)
        assert (np.diff(res.scores, axis=1) <= 1e-6).all()
        ids, scores = res
        assert ids is res.ids and scores is res.scores

    def test_same_ids_as_the_reference(self, pair, qs):
        index, ref = pair
        got = index.search(qs, k=10, **self.search_options)
        want = ref.search(qs, k=10, **self.search_options)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6)

    def test_single_query_equals_its_row_in_a_batch(self, pair, qs):
        index, _ = pair
        batch = index.search(qs[:8], k=K, **self.search_options)
        for i in (0, 7):
            np.testing.assert_array_equal(index.search(self.one(qs, i), k=K, **self.search_options).ids[0],
                                          batch.ids[i])

    def test_bad_queries_get_one_line_errors(self, pair, qs):
        index, _ = pair
        with pytest.raises(irli.InvalidInputError, match=self.dim_word):
            index.search(self.narrow(qs[:2]), k=K)
        with pytest.raises(irli.InvalidInputError, match="NaN"):
            index.search(self.poison(qs[:2]), k=K)
        with pytest.raises(irli.InvalidInputError, match="k"):
            index.search(qs[:2], k=0)


class VectorContract(Contract):
    """Vector indexes: queries are rows of float32 vectors."""

    def queries(self, request, data):
        return data[1]

    def one(self, qs, i):
        return qs[i]

    def narrow(self, qs):
        return qs[:, :5]

    def poison(self, qs):
        bad = qs.copy()
        bad[1, 0] = np.nan
        return bad

    def test_is_searchable_with_the_same_facts(self, pair):
        index, ref = pair
        assert isinstance(index, irli.Searchable)
        assert index.dim == ref.dim and len(index) == len(ref)
        assert index.config.metric == ref.config.metric and index.config.n_reps == ref.config.n_reps
        params = inspect.signature(type(index).search).parameters
        for name in ("queries", "k", "probes", "allow", "refine"):
            assert name in params, f"{type(index).__name__}.search lacks {name}"
        assert params["k"].default == 10 and params["probes"].default is None


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


class LabelContract(Contract):
    """Label indexes: queries are CSR rows of features, answers label ids."""

    dim_word = "features"

    def queries(self, request, data):
        return request.getfixturevalue("labels")[1]

    def one(self, qs, i):
        return sp.csr_matrix(qs[i])

    def narrow(self, qs):
        return qs[:, :10]

    def poison(self, qs):
        bad = qs.copy().astype(np.float32)
        bad.data[0] = np.nan
        return bad


class TestLabelIndexInMemory(LabelContract):
    def make(self, request, data, tmp_path):
        index = request.getfixturevalue("labels")[0]
        return index, index


class TestLabelIndexLoaded(LabelContract):
    @pytest.fixture(params=[False, True], ids=["read", "mmap"])
    def pair(self, request, tmp_path):
        index = request.getfixturevalue("labels")[0]
        return irli.load(index.save(tmp_path / "lab"), mmap=request.param), index


class TestLabelIndex:
    """What only a label index has to honour beyond the contract."""

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
