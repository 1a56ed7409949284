"""Scale-out on Ray: training, sharded search and their failures, checked
against the single-process index, plus their failure modes. The Ray tests
run on a local 2-CPU cluster started once for the session."""

import os

import numpy as np
import pytest
from conftest import FAST

import irli

pytestmark = pytest.mark.ray  # run in their own pytest process (.ci/suite)

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'irli[ray]')")

from irli.distributed import DistributedError, RayExecutor  # noqa: E402
from irli.distributed.sharded import ShardedIndex, merge  # noqa: E402


def test_ray_training_equals_single_process_for_kmeans_repetitions(cluster, data):
    """Repetitions are independent and seeded by their number: k-means
    repetitions trained in two tasks give the single-process index."""
    x, q = data
    one = irli.Index("ivf", n_buckets=32, n_reps=2).fit(x)
    two = irli.Index("ivf", n_buckets=32, n_reps=2).fit(x, executor=cluster)
    np.testing.assert_array_equal(one.assignments(), two.assignments())
    np.testing.assert_array_equal(one.search(q, k=10).ids, two.search(q, k=10).ids)


def test_ray_training_of_learned_routers(cluster, data):
    """One task holding every repetition is the single-process computation;
    two tasks draw each group's initial weights from its own seed, so the
    routers differ, by a bounded amount of recall."""
    from irli.kernels.exact import exact_knn

    x, q = data
    truth = exact_knn(x, q, 10, "cosine")[0]
    cfg = {**FAST["irli"], "n_reps": 2}
    single = irli.Index("irli", **cfg).fit(x)
    one_task = irli.Index("irli", **cfg).fit(x, executor=RayExecutor(workers=1))
    np.testing.assert_array_equal(single.assignments(), one_task.assignments())
    two_tasks = irli.Index("irli", **cfg).fit(x, executor=cluster)

    def recall(index):
        ids = index.search(q, k=10, probes=4).ids
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)])

    assert abs(recall(two_tasks) - recall(single)) <= 0.05
    assert len(two_tasks.history_["rounds"]) == 2  # one log per group


@pytest.mark.parametrize("preset", ["ivf", "irli"])
def test_sharded_search_equals_single_process(cluster, data, preset):
    """Exact scans: the merged shards return the single index's answers."""
    x, q = data
    index = irli.Index(preset, **{**FAST[preset], "scan": "exact"}).fit(x)
    index.remove(np.arange(0, len(x), 9))
    sharded = ShardedIndex(index, shards=2, executor=cluster)
    try:
        for probes in (1, 4):
            want = index.search(q, k=10, probes=probes)
            got = sharded.search(q, k=10, probes=probes)
            np.testing.assert_array_equal(got.ids, want.ids)
            np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6)
            # the shards hold no removed items; the single index still reads their tombstones
            assert (got.scanned <= want.scanned).all() and (got.scanned > 0).all()
            assert (got.candidates >= want.candidates).all()  # items in two shards count twice
    finally:
        sharded.close()


def test_sharded_search_fans_out_only_to_probed_shards(cluster, data):
    x, q = data
    index = irli.Index("ivf", n_buckets=32).fit(x)
    sharded = ShardedIndex(index, shards=4, executor=cluster)
    try:
        probed = index.route(q[:1], probes=1)[0, 0, 0]
        for s, actor in enumerate(sharded.actors):  # only the owner of the one bucket is asked
            if s != sharded.layout.owner[0, probed]:
                ray.kill(actor, no_restart=True)
        np.testing.assert_array_equal(sharded.search(q[:1], k=5, probes=1).ids,
                                      index.search(q[:1], k=5, probes=1).ids)
    finally:
        sharded.close()


def test_a_crashed_shard_restarts_or_is_reported(cluster, data, tmp_path):
    """A part actor killed once reloads its part and answers; one killed for
    good is named in a DistributedError within the timeout."""
    import time

    x, q = data
    index = irli.Index("ivf", n_buckets=32).fit(x)
    sharded = ShardedIndex.open(index.save(tmp_path / "s", shards=2), executor=cluster, timeout_s=20)
    try:
        want = index.search(q, k=5, probes=4).ids
        ray.kill(sharded.actors[0], no_restart=False)  # dies; Ray restarts it, and it loads its part again
        np.testing.assert_array_equal(sharded.search(q, k=5, probes=4).ids, want)
        ray.kill(sharded.actors[1], no_restart=True)  # dies for good
        t0 = time.monotonic()
        with pytest.raises(DistributedError, match="shard 1 of 2"):
            sharded.search(q, k=5, probes=4)
        assert time.monotonic() - t0 < 20
    finally:
        sharded.close()


def test_a_hung_shard_is_reported_within_the_timeout(cluster, data, tmp_path):
    import time

    x, q = data
    index = irli.Index("ivf", n_buckets=32).fit(x)
    # Loading the parts waits for the actors to start, which can take longer than 2 s on a
    # busy machine; the short limit is for the search under test.
    sharded = ShardedIndex.open(index.save(tmp_path / "s", shards=2), executor=cluster, timeout_s=60)
    try:
        sharded.timeout_s = 2.0
        sharded.actors[0].__ray_call__.remote(lambda self: time.sleep(30))  # busy: the part never answers
        t0 = time.monotonic()
        with pytest.raises(DistributedError, match="shard 0 of 2 did not answer"):
            sharded.search(q, k=5, probes=32)  # every query reaches every part
        assert time.monotonic() - t0 < 10
    finally:
        sharded.close()


def _sleeps(item, seconds):
    import time

    time.sleep(seconds)
    return item


def test_a_hung_task_is_reported_within_the_timeout(cluster):
    import time

    t0 = time.monotonic()
    with pytest.raises(DistributedError, match="did not finish within 2 s"):
        RayExecutor(workers=2, timeout_s=2).map(_sleeps, [1], seconds=60)
    assert time.monotonic() - t0 < 15


def _dies_once(item, marker):
    """A task whose worker process dies the first time it runs."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return item * 2


def _raises(item):
    raise ValueError(f"bad item {item}")


def test_a_dead_worker_is_retried_or_reported(cluster, tmp_path):
    assert cluster.map(_dies_once, [1, 2], marker=str(tmp_path / "m")) == [2, 4]
    strict = RayExecutor(workers=2, max_retries=0)
    with pytest.raises(DistributedError, match="Ray task 0 of 1"):
        strict.map(_dies_once, [1], marker=str(tmp_path / "n"))
    with pytest.raises(DistributedError, match="ValueError: bad item 3"):
        cluster.map(_raises, [3])


def test_merge_deduplicates_and_orders():
    pos = np.array([[3, 5, -1, 5, 7, 3], [1, 1, 1, -1, -1, -1]])
    scores = np.array([[0.1, 0.9, -np.inf, 0.95, 0.5, 0.2], [0.3, 0.3, 0.2, -np.inf, -np.inf, -np.inf]],
                      dtype=np.float32)
    p, s = merge(pos, scores, 3)
    assert p.tolist() == [[5, 7, 3], [1, -1, -1]]
    np.testing.assert_allclose(s[0], [0.95, 0.5, 0.2])


def test_cli_ray_address(cluster, data, tmp_path, capsys):
    """--ray-address trains on the cluster and searches its shards; in this
    process Ray is already initialised, as `ray start` + "auto" would be."""
    from irli.cli import main

    x, q = data
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "q.npy", q)
    args = ["build", str(tmp_path / "x.npy"), "-o", str(tmp_path / "idx"), "--preset", "ivf",
            "--set", "n_buckets=32", "--set", "n_reps=2", "-q"]
    assert main(args + ["--ray-address", "auto", "--workers", "2"]) == 0
    local = irli.Index("ivf", n_buckets=32, n_reps=2).fit(x)
    built = irli.load(tmp_path / "idx")
    np.testing.assert_array_equal(built.assignments(), local.assignments())
    assert main(["search", str(tmp_path / "idx"), str(tmp_path / "q.npy"), "-k", "5", "--probes", "4",
                 "--ray-address", "auto", "--shards", "2", "--out", str(tmp_path / "r")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "r.ids.npy"), local.search(q, k=5, probes=4).ids)


def test_no_ray_import_without_an_address(data, tmp_path):
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", data[0][:500])
    code = ("import sys; from irli.cli import main; "
            f"main(['build', {str(tmp_path / 'x.npy')!r}, '-o', {str(tmp_path / 'i')!r}, '--preset', 'ivf', "
            "'--set', 'n_buckets=8', '-q']); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_ray_build_equals_the_streamed_build(cluster, data, tmp_path, metric):
    """The streamed pass over row ranges in two Ray tasks gives the index
    one process builds: same placements, codes, vectors and results."""
    from irli.index.build import build

    x, q = data
    np.save(tmp_path / "x.npy", x)
    kw = dict(preset="fast", metric=metric, sample=1500, batch=500, n_buckets=32)
    one = build(tmp_path / "x.npy", tmp_path / "one", **kw)
    two = build(tmp_path / "x.npy", tmp_path / "two", executor=cluster, **kw)
    np.testing.assert_array_equal(one.assignments(spilled=True), two.assignments(spilled=True))
    np.testing.assert_array_equal(np.asarray(one.vectors_), np.asarray(two.vectors_))
    np.testing.assert_array_equal(one.search(q, k=10).ids, two.search(q, k=10).ids)


def test_a_failed_ray_build_leaves_nothing(cluster, data, tmp_path):
    from irli.index.build import build

    x = data[0].copy()
    x[2900, 1] = np.inf
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DistributedError, match="inf"):
        build(tmp_path / "x.npy", tmp_path / "idx", preset="ivf", sample=1000, batch=500, n_buckets=16,
              executor=cluster)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]
