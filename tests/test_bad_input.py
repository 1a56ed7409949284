"""One test per kind of bad input: a clear one-line error, never a crash
inside FAISS or torch, never a silently wrong answer."""

import numpy as np
import pytest
from conftest import fitted

import irli
from irli import ConfigError, InvalidInputError, NotFittedError


@pytest.fixture
def idx(data):
    return fitted("ivf", data)


def _one_line(excinfo):
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


def test_wrong_dimension(idx, data):
    with pytest.raises(InvalidInputError) as e:
        idx.search(data[1][:, :5], k=3)
    assert "dimension 5" in _one_line(e) and "16" in str(e.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_queries(idx, data, bad):
    q = data[1][:4].copy()
    q[2, 3] = bad
    with pytest.raises(InvalidInputError) as e:
        idx.search(q, k=3)
    assert "NaN or inf" in _one_line(e) and "row 2" in str(e.value)


def test_nan_in_vectors_at_fit(data):
    x = data[0].copy()
    x[10, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        irli.Index("ivf", n_buckets=8).fit(x)


@pytest.mark.parametrize("bad", [
    np.array([["a", "b"], ["c", "d"]]),
    np.ones((3, 16), dtype=complex),
    np.ones((3, 16), dtype=bool),
    np.array([[object()] * 16], dtype=object),
])
def test_non_numeric_dtype(idx, bad):
    with pytest.raises(InvalidInputError, match="dtype"):
        idx.search(bad, k=3)


def test_integer_input_is_converted(data):
    x = np.round(data[0] * 100).astype(np.int64)
    index = irli.Index("ivf", n_buckets=8).fit(x)
    res_int = index.search(x[:5], k=1, probes=8)
    res_f = index.search(x[:5].astype(np.float32), k=1, probes=8)
    np.testing.assert_array_equal(res_int.ids, res_f.ids)
    assert res_int.scores.dtype == np.float32


@pytest.mark.parametrize("shape", [(0, 16), (5, 0), (0,)])
def test_empty_input(idx, shape):
    with pytest.raises(InvalidInputError, match="empty"):
        idx.search(np.zeros(shape, dtype=np.float32), k=3)


def test_empty_fit():
    with pytest.raises(InvalidInputError, match="empty"):
        irli.Index("ivf").fit(np.zeros((0, 8), dtype=np.float32))


def test_three_dimensional_input(idx):
    with pytest.raises(InvalidInputError, match="shape"):
        idx.search(np.zeros((2, 2, 16), dtype=np.float32), k=3)


@pytest.mark.parametrize("k", [0, -1, 2.5, "3", True])
def test_k_out_of_range(idx, data, k):
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        idx.search(data[1][:2], k=k)


@pytest.mark.parametrize("probes", [0, -3, 1.5])
def test_bad_probes(idx, data, probes):
    with pytest.raises(InvalidInputError, match="probes"):
        idx.search(data[1][:2], k=3, probes=probes)


def test_min_votes_beyond_repetitions(idx, data):
    with pytest.raises(InvalidInputError, match="min_votes=2 exceeds the 1 repetitions"):
        idx.search(data[1][:2], k=3, min_votes=2)


def test_fewer_items_than_buckets(data):
    with pytest.raises(InvalidInputError, match="fewer than n_buckets=64"):
        irli.Index("ivf", n_buckets=64).fit(data[0][:20])


@pytest.mark.parametrize("call", ["search", "save", "route", "assignments", "dim", "add", "remove",
                                  "compact", "drift", "refresh", "ids"])
def test_unfitted_index(data, tmp_path, call):
    index = irli.Index("ivf")
    with pytest.raises(NotFittedError, match="not fitted"):
        if call == "search":
            index.search(data[1][:2], k=3)
        elif call == "save":
            index.save(tmp_path / "x")
        elif call == "route":
            index.route(data[1][:2])
        elif call == "assignments":
            index.assignments()
        elif call in ("add", "remove"):
            getattr(index, call)(data[0][:2] if call == "add" else [1])
        elif call in ("compact", "drift", "refresh"):
            getattr(index, call)()
        else:
            getattr(index, call)
    assert not (tmp_path / "x").exists()


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'hnsw'"):
        irli.Index("hnsw")


def test_unknown_metric():
    with pytest.raises(ConfigError, match="unknown metric 'manhattan'"):
        irli.Index("ivf", metric="manhattan")


@pytest.mark.parametrize("override,match", [
    (dict(n_bucket=10), "unknown option 'n_bucket'"),
    (dict(n_reps=0), "n_reps must be between 1 and 64"),
    (dict(router="tree"), "unknown router 'tree'"),
    (dict(loss="hinge"), "unknown loss 'hinge'"),
    (dict(lr=-1.0), "lr must be in"),
    (dict(k_choices=8, n_buckets=4), "k_choices=8 exceeds n_buckets=4"),
    (dict(min_votes=3), "min_votes must be between 1 and 1"),
    (dict(router="mlp", epochs=0), "needs epochs >= 1"),
    (dict(n_buckets=True), "n_buckets must be an integer"),
    (dict(val_fraction=2.0), "val_fraction must be in"),
    (dict(max_load=0.5), "max_load must be in"),
])
def test_invalid_options_fail_at_construction(override, match):
    with pytest.raises(ConfigError, match=match):
        irli.Index("ivf", **override)


def test_unreadable_files(tmp_path):
    from irli.io.datasets import read_vectors

    with pytest.raises(FileNotFoundError, match="no such file"):
        read_vectors(tmp_path / "missing.npy")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy at all")
    with pytest.raises(InvalidInputError, match="not a readable .npy"):
        read_vectors(bad)
    with pytest.raises(InvalidInputError, match="unknown file type"):
        read_vectors(tmp_path / "x.csv" if (tmp_path / "x.csv").write_text("1,2") else None)


def test_k_beyond_collection_does_not_raise(idx, data):
    res = idx.search(data[1][:2], k=len(idx) + 5, probes=idx.n_buckets)
    assert (res.ids[:, -5:] == -1).all()
