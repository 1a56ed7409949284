"""Out-of-core builds (irli.build): streamed into an index directory in
bounded memory, checked against the in-memory fit and for clean failure."""

import errno
import os

import numpy as np
import pytest

import irli
from irli.errors import SaveError
from irli.index.build import build
from irli.io.datasets import synthetic, write_vectors


@pytest.mark.parametrize("preset,metric", [("fast", "cosine"), ("ivf", "l2")])
def test_out_of_core_build_matches_in_memory_fit(tmp_path, data, preset, metric):
    """With the whole collection as the sample, the streamed build places
    items as the in-memory fit does, except the few whose nearest centroid
    moved when the router's centroids became the buckets' means."""
    x, q = data
    write_vectors(tmp_path / "x.fvecs", x)
    built = build(tmp_path / "x.fvecs", tmp_path / "idx", preset=preset, metric=metric,
                  sample=len(x), batch=700, n_buckets=32)
    fitted = irli.Index(preset, metric=metric, n_buckets=32).fit(x)
    assert isinstance(built.vectors_, np.memmap) and len(built) == len(x)
    assert (built.assignments() == fitted.assignments()).mean() >= 0.995
    a, b = built.search(q, k=10, probes=8), fitted.search(q, k=10, probes=8)
    assert np.mean(np.sort(a.ids, 1) == np.sort(b.ids, 1)) >= 0.99
    assert irli.load(tmp_path / "idx").search(q[:5], k=3).ids.shape == (5, 3)


def test_out_of_core_build_from_a_sample(tmp_path):
    x, q = synthetic(20_000, 16, 100, latent=6, clusters=30, seed=4)
    np.save(tmp_path / "x.npy", x)
    index = build(tmp_path / "x.npy", tmp_path / "idx", preset="fast", sample=4000, batch=3000)
    from irli.kernels.exact import exact_knn

    truth = exact_knn(x, q, 10, "cosine")[0]

    def recall(ids):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)])

    fitted = irli.Index("fast").fit(x)  # learning from a fifth of the items costs little recall
    assert recall(index.search(q, k=10, probes=16).ids) >= recall(fitted.search(q, k=10, probes=16).ids) - 0.03
    assert recall(index.search(q, k=10, probes=64, refine=50).ids) >= 0.95  # codes are not the limit
    assert index.history_["sample"] == 4000 and index.n_buckets == 256


def test_a_failed_build_leaves_nothing(tmp_path, data):
    x = data[0].copy()
    x[2500, 3] = np.nan  # met only in the last streamed batch
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(irli.InvalidInputError, match=r"NaN or inf \(first in row 2500\)"):
        build(tmp_path / "x.npy", tmp_path / "idx", preset="ivf", sample=1000, batch=1000, n_buckets=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]  # no index, no staged files
    x[2500, 3] = 0.0
    x[1234, 0] = np.inf  # in the sample this time: the row of the file is named, not the sample's
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(irli.InvalidInputError, match=r"NaN or inf \(first in row 1234\)"):
        build(tmp_path / "x.npy", tmp_path / "idx", preset="ivf", sample=len(x), batch=1000, n_buckets=16)


def test_an_input_that_shrinks_during_the_build_is_an_error_not_a_crash(tmp_path, data):
    """Reading a truncated memory map ends the process with SIGBUS; the
    build checks the file's size before each read instead."""
    x = data[0]
    np.save(tmp_path / "x.npy", x)
    cut = []

    def truncate_once(p):
        if p.stage == "assign" and not cut:  # after the first streamed batch
            os.truncate(tmp_path / "x.npy", 4096)
            cut.append(True)

    with pytest.raises(irli.InvalidInputError, match=r"x\.npy: the input file shrank to 4,096 bytes"):
        build(tmp_path / "x.npy", tmp_path / "idx", preset="fast", sample=1000, batch=1000, n_buckets=16,
              callback=truncate_once)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_a_full_disk_is_one_error_naming_the_path(tmp_path, data, monkeypatch):
    """Staging files are reserved at full size before they are written
    through memory maps (where a full disk would be a SIGBUS)."""
    np.save(tmp_path / "x.npy", data[0])

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(SaveError, match=f"{tmp_path / 'idx'}: could not save the index \\(No space left on device"):
        build(tmp_path / "x.npy", tmp_path / "idx", preset="fast", sample=1000, n_buckets=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_a_build_removes_what_a_build_that_died_left(tmp_path, data):
    np.save(tmp_path / "x.npy", data[0])
    for name in (".idx.stage-vectors-0123456789ab.npy", ".idx.stage-pq_codes-0123456789ab.npy"):
        (tmp_path / name).write_bytes(b"\0" * 4096)  # nobody holds them locked: their build died
    build(tmp_path / "x.npy", tmp_path / "idx", preset="fast", sample=1000, n_buckets=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "x.npy"]
