"""Sharded indexes on disk (irli.distributed.layout) searched in this process: the
parts, the bucket -> part table, equality with the single index, URLs and
damaged directories. The Ray side is in test_distributed.py."""

import json
import shutil

import numpy as np
import pytest
from conftest import FAST, fitted

import irli
from irli.distributed.layout import SLACK, assign_buckets, shards_touched
from irli.errors import IndexFormatError, InvalidInputError


def recall(ids, truth):
    return np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids, truth)])


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("preset", ["ivf", "irli"])
def test_parts_answer_as_the_single_index(data, tmp_path, preset, metric):
    """Exact-scan presets: the merged parts return the single index's ids and
    scores, removed items included (they are left out of the parts)."""
    x, q = data
    index = irli.Index(preset, metric=metric, **{**FAST[preset], "scan": "exact"}).fit(x)
    index.remove(np.arange(0, len(x), 7))
    sharded = irli.load(index.save(tmp_path / "s", shards=3))
    assert isinstance(sharded, irli.ShardedIndex) and len(sharded) == len(index)
    for probes in (1, 5):
        want = index.search(q, k=10, probes=probes)
        got = sharded.search(q, k=10, probes=probes)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5)
        assert (got.scanned <= want.scanned).all()  # the single index still reads the removed entries


def test_compressed_parts_score_at_least_as_well(data, truth, tmp_path):
    """scan="pq4": each part re-ranks its own best refine x k, a superset of
    what the single index re-ranks, so every rank scores at least as well."""
    index = fitted("fast", data)
    sharded = irli.ShardedIndex.open(index.save(tmp_path / "s", shards=4))
    want = index.search(data[1], k=10, probes=4)
    got = sharded.search(data[1], k=10, probes=4)
    assert (got.scores >= want.scores - 1e-5).all()
    assert recall(got.ids, truth) >= recall(want.ids, truth)


def test_each_part_holds_only_its_buckets_and_loads_alone(data, tmp_path):
    x, _ = data
    index = irli.Index("fast", n_buckets=32, spill=1).fit(x)
    path = index.save(tmp_path / "s", shards=4)
    man = json.loads((path / "manifest.json").read_text())
    assert man["task"] == "sharded" and sorted(man["parts"]) == [f"part-{s}" for s in range(4)]
    owner = np.load(path / "owner.npy")
    assign = index.assignments(spilled=True)  # (R, c, N) by ascending id
    held = []
    for s in range(4):
        part = irli.Index.load(path / f"part-{s}", mmap=True)
        assert isinstance(part.vectors_, np.memmap)
        want = index.ids[(owner[0][assign[0]] == s).any(axis=0)]  # items with a copy in one of its buckets
        np.testing.assert_array_equal(part.ids, want)
        np.testing.assert_array_equal(part.get_vectors(want[:5]), index.get_vectors(want[:5]))
        with pytest.raises(InvalidInputError, match="read-only"):
            part.remove(want[:1])
        held.append(len(part))
    assert set(np.concatenate([irli.Index.load(path / f"part-{s}").ids for s in range(4)])) == set(index.ids)
    assert max(held) < 0.5 * len(index)  # about a quarter each (plus spilled copies)


def test_locality_balances_and_touches_fewer_parts_than_modulo(data):
    x, q = data
    index = irli.Index("ivf", n_buckets=64).fit(x)
    sizes = np.diff(index.lists_.offsets, axis=1)
    for s in (2, 4, 8):
        owner = assign_buckets(index.centroids_, sizes, s)
        load = np.bincount(owner.ravel(), weights=(sizes + 1).ravel(), minlength=s)
        assert (load > 0).all() and load.max() <= (1 + SLACK) * load.sum() / s + (sizes + 1).max()
        probed = index.route(q, probes=4)
        local = shards_touched(owner, probed).mean()
        modulo = shards_touched(assign_buckets(index.centroids_, sizes, s, "modulo"), probed).mean()
        assert local < modulo
    np.testing.assert_array_equal(assign_buckets(index.centroids_, sizes, 4, "modulo")[0], np.arange(64) % 4)
    with pytest.raises(InvalidInputError, match="assignment"):
        assign_buckets(index.centroids_, sizes, 4, "random")


def test_refining_by_sample_queries_cuts_parts_reached_and_keeps_balance(data):
    from irli.distributed.layout import refine_by_queries

    x, q = data
    index = irli.Index("ivf", n_buckets=64).fit(x)
    sizes = np.diff(index.lists_.offsets, axis=1)
    w = (sizes + 1).astype(float)
    cap = (1 + SLACK) * w.sum() / 4
    start = assign_buckets(index.centroids_, sizes, 4)
    sample = index.route(x[::3], probes=6)
    refined = refine_by_queries(start, sample, w, cap)
    assert shards_touched(refined, sample).sum() < shards_touched(start, sample).sum()  # only improving moves
    load = np.bincount(refined.ravel(), weights=w.ravel(), minlength=4)
    assert load.max() <= max(cap, np.bincount(start.ravel(), weights=w.ravel()).max())
    held_out = index.route(q, probes=6)
    assert shards_touched(refined, held_out).mean() <= shards_touched(start, held_out).mean() + 0.05
    np.testing.assert_array_equal(assign_buckets(index.centroids_, sizes, 4, probed=sample), refined)


def test_shards_touched_counts_distinct_parts():
    owner = np.array([[0, 1, 2, 2]])
    probed = np.array([[[0, 1], [2, 3], [3, 2]]])
    assert shards_touched(owner, probed).tolist() == [2, 1, 1]


def test_fsspec_memory_url_round_trip(data):
    fsspec = pytest.importorskip("fsspec")
    index = fitted("ivf", data)
    url = "memory://irli-test/round-trip"
    index.save(url, shards=2)
    assert fsspec.filesystem("memory").exists("/irli-test/round-trip/part-1/vectors.npy")
    sharded = irli.ShardedIndex.open(url)
    np.testing.assert_array_equal(sharded.search(data[1], k=10, probes=3).ids,
                                  index.search(data[1], k=10, probes=3).ids)
    # file:// is a local path
    with pytest.raises(IndexFormatError, match="no such index directory"):
        irli.ShardedIndex.open("memory://irli-test/nothing-here")


def test_damaged_sharded_directories_are_refused(data, tmp_path):
    index = fitted("ivf", data)
    a = index.save(tmp_path / "a", shards=2)
    b = irli.Index("ivf", n_buckets=32, seed=5).fit(data[0]).save(tmp_path / "b", shards=2)
    with pytest.raises(IndexFormatError, match="a sharded index"):
        irli.Index.load(a)
    shutil.rmtree(a / "part-1")
    shutil.copytree(b / "part-1", a / "part-1")  # a part from another save
    with pytest.raises(IndexFormatError, match="not the one its sharded index was saved with"):
        irli.ShardedIndex.open(a)
    shutil.rmtree(a / "part-1")
    with pytest.raises(IndexFormatError, match="part-1"):
        irli.ShardedIndex.open(a)
    c = index.save(tmp_path / "c", shards=2)
    with pytest.raises(IndexFormatError, match="part-1: this part is not the one"):
        irli.ShardedIndex.open(c, parts=[c / "part-1", c / "part-1"], verify=False)
    np.save(tmp_path / "owner.npy", np.full((1, 32), 5, dtype=np.int32))
    shutil.copy(tmp_path / "owner.npy", c / "owner.npy")
    with pytest.raises(IndexFormatError, match="owner.npy"):
        irli.ShardedIndex.open(c, verify=False)


def test_bad_arguments(data, tmp_path):
    index = fitted("ivf", data)
    for bad in (0, 33, 2.0):
        with pytest.raises(InvalidInputError, match="shards"):
            index.save(tmp_path / "x", shards=bad)
    sharded = irli.ShardedIndex(index, shards=2)
    with pytest.raises(InvalidInputError, match="timeout_s"):
        irli.ShardedIndex(index, shards=2, timeout_s=0)
    with pytest.raises(InvalidInputError, match="probes"):
        sharded.search(data[1][:2], probes=0)
    with pytest.raises(InvalidInputError, match="parts"):
        irli.ShardedIndex.open(index.save(tmp_path / "s", shards=2), parts=["a"])


def test_allow_filters_every_part(data, tmp_path):
    index = fitted("ivf", data)
    sharded = irli.ShardedIndex.open(index.save(tmp_path / "s", shards=3))
    allow = np.arange(0, len(data[0]), 3)
    got = sharded.search(data[1], k=10, probes=4, allow=allow)
    assert np.isin(got.ids[got.ids >= 0], allow).all()
    want = index.search(data[1], k=10, probes=4, allow=allow)
    assert recall(got.ids, want.ids) > 0.95
    per_query = [np.arange(i, i + 50) for i in range(len(data[1]))]
    got = sharded.search(data[1], k=5, probes=4, allow=per_query)
    assert all(np.isin(row[row >= 0], a).all() for row, a in zip(got.ids, per_query))


def test_cli_shard_info_and_search(data, tmp_path, capsys):
    from irli.cli import main

    x, q = data
    index = fitted("ivf", data)
    index.save(tmp_path / "idx")
    np.save(tmp_path / "q.npy", q)
    assert main(["shard", str(tmp_path / "idx"), str(tmp_path / "s"), "--shards", "3"]) == 0
    assert main(["info", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "3 parts" in out and "part 2" in out
    assert main(["search", str(tmp_path / "s"), str(tmp_path / "q.npy"), "-k", "5", "--probes", "4",
                 "--out", str(tmp_path / "r")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "r.ids.npy"), index.search(q, k=5, probes=4).ids)
    assert main(["shard", str(tmp_path / "idx"), str(tmp_path / "t"), "--shards", "99"]) == 1
    assert "shards must be" in capsys.readouterr().err
