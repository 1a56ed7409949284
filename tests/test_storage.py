"""Index directories: atomic saves, checks on load."""

import json
import os

import numpy as np
import pytest
from conftest import fitted

import irli
from irli import IndexFormatError
from irli.io.storage import MANIFEST, manifest_sha256


@pytest.fixture
def saved(data, tmp_path):
    index = fitted("irli", data)
    path = index.save(tmp_path / "idx")
    return index, path


def test_directory_layout_and_manifest(saved):
    index, path = saved
    names = sorted(os.listdir(path))
    assert names == ["assign.npy", "centres.npy", "ids.npy", "lists.npy", MANIFEST, "offsets.npy", "pq_books.npy",
                     "pq_codes.npy", "routers.safetensors", "vectors.npy"]
    man = json.loads((path / MANIFEST).read_text())
    assert man["format"] == "irli-index" and man["format_version"] == 3
    assert man["irli_version"] == irli.__version__ and man["config"]["n_reps"] == index.n_reps
    assert man["n_items"] == len(index) and man["dim"] == index.dim and man["task"] == "vectors"
    for f, meta in man["files"].items():
        assert len(meta["sha256"]) == 64 and meta["bytes"] == (path / f).stat().st_size


def test_no_pickle_anywhere(saved):
    _, path = saved
    for f in path.glob("*.npy"):
        np.load(f, allow_pickle=False)  # would raise on an object array


def test_missing_directory(tmp_path):
    with pytest.raises(IndexFormatError, match="no such index directory"):
        irli.load(tmp_path / "nope")


def test_foreign_directory(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.txt").write_text("hello")
    with pytest.raises(IndexFormatError, match="not an irli index"):
        irli.load(tmp_path / "other")
    (tmp_path / "other" / MANIFEST).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(IndexFormatError, match="not an irli index manifest"):
        irli.load(tmp_path / "other")


def test_truncated_file(saved):
    _, path = saved
    f = path / "vectors.npy"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(IndexFormatError, match="vectors.npy has .* bytes.*truncated"):
        irli.load(path)


def test_corrupted_file(saved):
    _, path = saved
    f = path / "lists.npy"
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="checksum mismatch in lists.npy"):
        irli.load(path)


def test_corrupted_manifest(saved):
    _, path = saved
    (path / MANIFEST).write_text("{ not json")
    with pytest.raises(IndexFormatError, match="corrupted manifest.json"):
        irli.load(path)


def test_missing_file(saved):
    _, path = saved
    (path / "routers.safetensors").unlink()
    with pytest.raises(IndexFormatError, match="missing file routers.safetensors"):
        irli.load(path)


def test_newer_format_version(saved):
    _, path = saved
    man = json.loads((path / MANIFEST).read_text())
    man["format_version"] = 99
    man["manifest_sha256"] = manifest_sha256(man)
    (path / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(IndexFormatError, match="format version 99 is not supported"):
        irli.load(path)


def test_overwrite_replaces_whole_index(data, saved):
    index, path = saved
    other = fitted("ivf", data)
    other.save(path)
    again = irli.load(path)
    assert again.config.router == "centroid"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_failed_save_keeps_earlier_index(data, saved, monkeypatch):
    index, path = saved
    before = irli.load(path).search(data[1][:20], k=5).ids
    import irli.io.storage as storage

    real = np.save

    def broken(f, arr, **kw):
        if str(f).endswith("lists.npy"):
            raise OSError("disk full")
        return real(f, arr, **kw)

    monkeypatch.setattr(storage.np, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        fitted("ivf", data).save(path)
    monkeypatch.undo()
    after = irli.load(path)
    assert after.config.router == "mlp"
    np.testing.assert_array_equal(after.search(data[1][:20], k=5).ids, before)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_refuses_to_overwrite_foreign_data(data, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(IndexFormatError, match="refusing to overwrite"):
        fitted("ivf", data).save(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(IndexFormatError, match="not a directory"):
        fitted("ivf", data).save(tmp_path / "afile")


def test_skip_verification_still_checks_sizes(saved):
    _, path = saved
    f = path / "vectors.npy"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0x01
    f.write_bytes(bytes(raw))
    irli.load(path, verify=False)  # same size, unverified: loads
    with pytest.raises(IndexFormatError, match="checksum"):
        irli.load(path)


def test_mismatched_router_weights(data, tmp_path):
    import shutil

    from irli.io.storage import sha256

    a = irli.Index("ivf", n_buckets=32).fit(data[0]).save(tmp_path / "a")
    b = irli.Index("ivf", n_buckets=16).fit(data[0]).save(tmp_path / "b")
    shutil.copy(b / "routers.safetensors", a / "routers.safetensors")
    man = json.loads((a / MANIFEST).read_text())  # a consistent manifest around the wrong weights
    man["files"]["routers.safetensors"].update(bytes=(a / "routers.safetensors").stat().st_size,
                                               sha256=sha256(a / "routers.safetensors"))
    man["manifest_sha256"] = manifest_sha256(man)
    (a / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(IndexFormatError, match="router 0 maps 16 -> 16, index has d=16, B=32"):
        irli.load(a)


def test_older_format_is_refused(data, tmp_path):
    """Directories of format versions 1 and 2 (development builds) are
    refused with a one-line error that says to rebuild."""
    path = irli.Index("ivf", n_buckets=8).fit(data[0]).save(tmp_path / "idx")
    m = json.loads((path / MANIFEST).read_text())
    m["format_version"] = 2
    m["manifest_sha256"] = manifest_sha256(m)
    (path / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(irli.IndexFormatError, match="format version 2 is older.*rebuild"):
        irli.load(path)


def _retask(path, task):
    man = json.loads((path / MANIFEST).read_text())
    if task is None:
        del man["task"]
    else:
        man["task"] = task
    man["manifest_sha256"] = manifest_sha256(man)
    (path / MANIFEST).write_text(json.dumps(man))


@pytest.mark.parametrize("task", [None, "ann"])
def test_older_task_names_still_load(saved, data, task):
    index, path = saved
    _retask(path, task)  # directories written before named a vector index "ann" (or nothing)
    back = irli.load(path)
    assert isinstance(back, irli.Index)
    np.testing.assert_array_equal(back.search(data[1][:10], k=5).ids, index.search(data[1][:10], k=5).ids)


def test_unknown_task_is_refused(saved):
    _, path = saved
    _retask(path, "graph")
    with pytest.raises(IndexFormatError, match="unknown task 'graph'"):
        irli.load(path)
