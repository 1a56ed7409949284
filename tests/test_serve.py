"""`irli serve` on a local Ray: real HTTP requests (irli.Client and raw
urllib) against the Ray Serve deployment, compared with Index.search; bad
requests; changes over HTTP; a replica killed under load."""

import json
import socket
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

import irli

from conftest import FAST

pytestmark = pytest.mark.ray  # run in their own pytest process (.ci/suite)

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'irli[ray]')")
pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'ray[serve]')")

from irli.client import ServiceError  # noqa: E402
from irli.serve import ServeOptions, start, stop  # noqa: E402

OPTIONS = ServeOptions(replica_cpus=0.25, max_batch=64, batch_wait_ms=2.0, max_body=1 << 20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def port(cluster):
    yield free_port()
    stop()


@pytest.fixture(scope="module")
def served(port, data, tmp_path_factory):
    """(url, the served index in memory, its directory): an ivf index."""
    path = tmp_path_factory.mktemp("serve") / "idx"
    index = irli.Index("ivf", **FAST["ivf"]).fit(data[0])
    index.save(path)
    return start(path, port=port, options=OPTIONS), index, path


def post(url: str, body: bytes, method: str = "POST", headers=None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_http_results_equal_index_search(served, data):
    url, index, _ = served
    client = irli.Client(url)
    q = data[1]
    want = index.search(q, k=10, probes=4)
    got = client.search(q, k=10, probes=4)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got.candidates, want.candidates)
    allow = np.arange(0, len(data[0]), 4)
    np.testing.assert_array_equal(client.search(q[:20], k=5, probes=4, allow=allow).ids,
                                  index.search(q[:20], k=5, probes=4, allow=allow).ids)


def test_concurrent_single_vector_requests_are_batched_and_answered_right(served, data):
    url, index, _ = served
    client = irli.Client(url)
    q = data[1][:64]
    want = index.search(q, k=5).ids
    got = [None] * len(q)

    def one(i):
        got[i] = client.search(q[i], k=5).ids[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(q))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    np.testing.assert_array_equal(np.stack(got), want)


def test_every_bad_request_gets_a_4xx_with_one_line(served, data):
    url, index, _ = served
    q0 = data[1][0].tolist()
    bad = {
        "malformed JSON": (b'{"vectors": [1, 2', 400, "malformed JSON"),
        "not an object": (b"[1, 2]", 400, "JSON object"),
        "wrong dimension": (json.dumps({"vectors": [[1.0, 2.0]]}).encode(), 400, "dimension 2"),
        "ragged": (json.dumps({"vectors": [q0, q0[:3]]}).encode(), 400, "equal length"),
        "strings": (json.dumps({"vectors": ["a"] * 16}).encode(), 400, "numbers"),
        "NaN": (b'{"vectors": [' + b", ".join([b"NaN"] * 16) + b"]}", 400, "NaN"),
        "k zero": (json.dumps({"vectors": q0, "k": 0}).encode(), 400, "k=0 out of range"),
        "k huge": (json.dumps({"vectors": q0, "k": 10**6}).encode(), 400, "out of range"),
        "k text": (json.dumps({"vectors": q0, "k": "10"}).encode(), 400, "k must be an integer"),
        "probes zero": (json.dumps({"vectors": q0, "probes": 0}).encode(), 400, "probes"),
        "allow text": (json.dumps({"vectors": q0, "allow": ["x"]}).encode(), 400, "allow"),
        "unknown field": (json.dumps({"vectors": q0, "kk": 3}).encode(), 400, "unknown field"),
        "no vectors": (b"{}", 400, "missing field"),
    }
    for name, (body, status, words) in bad.items():
        code, ans = post(url + "/search", body)
        assert code == status, (name, code, ans)
        assert words in ans["error"] and "\n" not in ans["error"], (name, ans)
    code, ans = post(url + "/search", b"{" + b" " * (OPTIONS.max_body + 10) + b"}")
    assert code == 413 and "over the limit" in ans["error"]
    code, ans = post(url + "/remove", json.dumps({"ids": [10**9]}).encode())
    assert code == 400 and "unknown id 1000000000" in ans["error"]
    assert post(url + "/nowhere", b"{}")[0] == 404
    assert post(url + "/search", None, method="GET")[0] == 405
    with pytest.raises(ServiceError, match="400: vectors have dimension 3"):
        irli.Client(url).search([1.0, 2.0, 3.0])


def test_add_and_remove_over_http_are_searchable_and_saved(served, data):
    url, index, path = served
    client = irli.Client(url)
    x, q = data
    new = client.add(q[:3] * 1.0)
    assert new.tolist() == list(range(index.next_id_, index.next_id_ + 3))
    assert client.search(q[:3], k=1).ids[:, 0].tolist() == new.tolist()  # each finds itself
    assert irli.load(path).search(q[:3], k=1).ids[:, 0].tolist() == new.tolist()  # saved before answered
    assert client.remove(new) == 3
    assert not np.isin(client.search(q[:3], k=5).ids, new).any()
    assert len(irli.load(path)) == len(x)
    with pytest.raises(ServiceError, match="400"):
        client.add(q[:1], ids=[0])  # id 0 is taken


def test_a_sharded_index_serves_the_same_answers(port, data, tmp_path):
    index = irli.Index("ivf", **FAST["ivf"]).fit(data[0])
    url = start(index.save(tmp_path / "s", shards=2), port=port, options=OPTIONS)
    client = irli.Client(url)
    np.testing.assert_array_equal(client.search(data[1], k=10, probes=4).ids,
                                  index.search(data[1], k=10, probes=4).ids)
    assert client.info()["n_shards"] == 2 and client.health()["status"] == "ok"
    with pytest.raises(ServiceError, match="409: /add is not available: a sharded index is read-only"):
        client.add(data[1][:1])


def test_a_killed_replica_loses_no_request(port, data, tmp_path):
    """Two replicas under load from 8 threads; one is killed. Every request
    gets the right answer or a clear ServiceError, and the service keeps
    answering (Serve starts a new replica)."""
    import time

    index = irli.Index("ivf", **FAST["ivf"]).fit(data[0])
    index.save(tmp_path / "idx")
    url = start(tmp_path / "idx", port=port, options=ServeOptions(replicas=2, replica_cpus=0.25))
    client = irli.Client(url, timeout_s=20, retries=5)
    q = data[1]
    want = index.search(q, k=5).ids
    results, errors = {}, {}
    N = 400

    def load(worker):
        for i in range(worker, N, 8):
            try:
                results[i] = client.search(q[i % len(q)], k=5).ids[0]
            except ServiceError as e:
                errors[i] = str(e)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    while len(results) < 40 and any(t.is_alive() for t in threads):
        time.sleep(0.01)
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if "SERVE_REPLICA" in a["name"] and "IndexServer" in a["name"]]
    assert len(names) == 2
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    at_kill = len(results) + len(errors)
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert at_kill < N / 2  # the kill came under load
    assert len(results) + len(errors) == N  # every request answered or failed clearly
    assert len(results) >= 0.95 * N, errors
    for i, ids in results.items():
        np.testing.assert_array_equal(ids, want[i % len(q)])
    assert client.health()["status"] == "ok"
