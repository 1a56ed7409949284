"""`irli serve` over real HTTP. One suite runs against both ways of running
the app: the default server (uvicorn in this process) and Ray Serve
(--ray). Then what only the default server does (slow clients, limits on
connections, signals, two services on a host, start-up errors), writes
that cannot be saved, a second writer, and irli.Client's argument checks."""

from __future__ import annotations

import errno
import io
import json
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import msgspec
import numpy as np
import pytest
from conftest import fitted

import irli
from irli.errors import IndexLockedError, InvalidInputError
from irli.serving import Client, ServeOptions, ServiceError, processes
from irli.serving.server import ServeError, Server
from irli.serving.service import Service

LIMITS = dict(max_batch=64, max_body=1 << 20, max_vectors=300, max_results=20_000, header_timeout_s=2.0,
              body_timeout_s=2.0)
IRLI = [sys.executable, "-m", "irli.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Serve keeps the HTTP options of its first start in a Ray cluster: every
# service of this module on Ray listens here (a later start replaces the app)
RAY_PORT = free_port()


def call(url: str, body: bytes | None = None, method: str | None = None, headers=None, timeout=30):
    """(status, headers, body bytes) of one request."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def post_json(url: str, doc) -> tuple[int, dict]:
    status, _, body = call(url, json.dumps(doc).encode() if not isinstance(doc, bytes) else doc,
                           headers={"Content-Type": "application/json"})
    return status, json.loads(body)


class Served:
    def __init__(self, url, ref, path):
        self.url, self.ref, self.path = url, ref, path


@pytest.fixture(scope="module", params=["local", "local, every search on the thread",
                                        pytest.param("ray", marks=pytest.mark.ray)])
def served(request, data, tmp_path_factory):
    """The fast preset's index saved and served, with an in-memory copy to
    compare against (tests that change it undo their changes)."""
    path = fitted("fast", data).save(tmp_path_factory.mktemp("serve") / "idx")
    ref = irli.load(path, mmap=False)
    if request.param.startswith("local"):
        server = Server(path, ServeOptions(port=0, inline_rows=16 if request.param == "local" else 0, **LIMITS))
        yield Served(server.start(), ref, path)
        server.stop()
        return
    request.getfixturevalue("cluster")
    from irli.serving import on_ray

    url = on_ray.start(path, ServeOptions(port=RAY_PORT, replica_cpus=0.25, **LIMITS))
    yield Served(url, ref, path)
    on_ray.stop()


# -- the suite both ways of running the app pass --------------------------------------------
def test_answers_equal_index_search_in_every_format(served, data):
    q = data[1][:40]
    want = served.ref.search(q, k=10, probes=6)
    status, got = post_json(served.url + "/search", {"vectors": q.tolist(), "k": 10, "probes": 6})
    assert status == 200
    np.testing.assert_array_equal(got["ids"], want.ids)
    np.testing.assert_allclose(np.array(got["scores"], dtype=np.float32), want.scores, rtol=1e-6)
    np.testing.assert_array_equal(got["candidates"], want.candidates)
    res = Client(served.url).search(q, k=10, probes=6)  # msgpack, float32 bytes
    np.testing.assert_array_equal(res.ids, want.ids)
    np.testing.assert_array_equal(res.scores, want.scores)
    np.testing.assert_array_equal(res.candidates, want.candidates)
    buf = io.BytesIO()
    np.save(buf, q)
    status, headers, body = call(served.url + "/search?k=10&probes=6", buf.getvalue(),
                                 headers={"Content-Type": "application/x-npy"})
    assert status == 200 and headers["Content-Type"] == "application/x-npy"
    f = io.BytesIO(body)
    ids, scores, cand = (np.load(f) for _ in range(3))
    np.testing.assert_array_equal(ids, want.ids)
    np.testing.assert_array_equal(scores, want.scores)
    np.testing.assert_array_equal(cand, want.candidates)
    one = Client(served.url).search(q[0], k=3, refine=2)  # a (d,) vector and refine
    np.testing.assert_array_equal(one.ids, served.ref.search(q[0], k=3, refine=2).ids)


def test_allow_in_every_form_equals_index_search(served, data):
    q = data[1][:6]
    n = len(served.ref)
    rng = np.random.default_rng(3)
    mask = rng.random(n) < 0.3
    masks = rng.random((6, n)) < 0.2
    forms = {"ids": np.flatnonzero(mask), "mask": mask, "lists": [np.flatnonzero(m) for m in masks],
             "masks": masks, "small lists": [[1, 2, 3], [4], [], [5, 6], [7], [8, 9]]}
    client = Client(served.url)
    for name, allow in forms.items():
        want = served.ref.search(q, k=5, probes=4, allow=allow)
        got = client.search(q, k=5, probes=4, allow=allow)
        np.testing.assert_array_equal(got.ids, want.ids, err_msg=name)
    with pytest.raises(InvalidInputError, match="allow has 2 id lists for 6 queries"):
        client.search(q, allow=[[1], [2]])


def test_concurrent_single_vector_requests_are_answered_right(served, data):
    q = data[1][:96]
    want = served.ref.search(q, k=5).ids
    got: dict = {}
    errors = []
    client = Client(served.url)

    def one(w):
        try:
            for i in range(w, len(q), 24):
                got[i] = client.search(q[i], k=5).ids[0]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(w,)) for w in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    np.testing.assert_array_equal(np.stack([got[i] for i in range(len(q))]), want)


def test_every_bad_request_gets_a_one_line_json_error(served, data):
    q0 = data[1][0].tolist()
    d = len(q0)
    npy = io.BytesIO()
    np.save(npy, np.arange(d))  # integers, not floats
    bad = {
        "malformed JSON": (b'{"vectors": [1, 2', 400, "malformed JSON"),
        "not an object": (b"[1, 2]", 400, "the body must be an object"),
        "deeply nested": (b'{"vectors": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "vectors[0][0] must be a number, got array"),
        "wrong dimension": ({"vectors": [[1.0, 2.0]]}, 400, "queries have dimension 2, the index has"),
        "ragged": ({"vectors": [q0, q0[:3]]}, 400, "lists of equal length"),
        "mixed depth": ({"vectors": [1.0, [2.0]]}, 400, "lists of equal length"),
        "numeric strings": ({"vectors": ["0.5"] * d}, 400, "vectors[0] must be a number or a list, got str"),
        "booleans": ({"vectors": [True] * d}, 400, "got bool"),
        "null": ({"vectors": [None] * d}, 400, "vectors[0] must be a number or a list, got null"),
        "empty": ({"vectors": []}, 400, "queries is empty"),
        "too large for float32": ({"vectors": [1e300] * d}, 400, "NaN or inf"),
        "k zero": ({"vectors": q0, "k": 0}, 400, "k must be a positive integer, got 0"),
        "k huge": ({"vectors": q0, "k": 10**6}, 400, "out of range"),
        "k text": ({"vectors": q0, "k": "10"}, 400, "k must be an integer, got str"),
        "k float": ({"vectors": q0, "k": 10.5}, 400, "k must be an integer, got float"),
        "probes zero": ({"vectors": q0, "probes": 0}, 400, "probes must be a positive integer, got 0"),
        "allow text": ({"vectors": q0, "allow": ["x"]}, 400, "allow[0]"),
        "allow mixed": ({"vectors": q0, "allow": [1, [2]]}, 400, "not a mix"),
        "allow negative": ({"vectors": q0, "allow": [-1]}, 400, ">= 0"),
        "unknown field": ({"vectors": q0, "kk": 3}, 400, "unknown field 'kk'"),
        "no vectors": (b"{}", 400, "missing field 'vectors'"),
        "too many vectors": ({"vectors": [q0] * 301}, 413, "301 query vectors in one request; the limit is 300"),
        "too many results": ({"vectors": [q0] * 200, "k": 101}, 413, "the limit is 20,000"),
    }
    for name, (body, status, words) in bad.items():
        code, ans = post_json(served.url + "/search", body)
        assert code == status, (name, code, ans)
        assert words in ans["error"] and "\n" not in ans["error"], (name, ans)
    cases = [  # (path, body, headers, method, status, words)
        ("/search", b"{" + b" " * (1 << 20) + b"}", {}, "POST", 413, "over the limit of 1048576"),
        ("/search?k=3", npy.getvalue(), {"Content-Type": "application/x-npy"}, "POST", 400, "must hold floats"),
        ("/search?kk=3", b"\x93NUMPY", {"Content-Type": "application/x-npy"}, "POST", 400, "not a .npy array"),
        ("/remove", json.dumps({"ids": [10**9]}).encode(), {}, "POST", 400, "id 1000000000 is not in the index"),
        ("/remove", json.dumps({"ids": [1.5]}).encode(), {}, "POST", 400, "ids[0] must be an integer"),
        ("/add", json.dumps({"vectors": [q0], "ids": [True]}).encode(), {}, "POST", 400, "ids[0] must be an integer"),
        ("/nowhere", b"{}", {}, "POST", 404, "no endpoint /nowhere"),
        ("/search", None, {}, "GET", 405, "/search takes POST, not GET"),
    ]
    for path, body, headers, method, status, words in cases:
        code, hdrs, raw = call(served.url + path, body, method=method, headers=headers)
        ans = json.loads(raw)
        assert code == status and words in ans["error"] and "\n" not in ans["error"], (path, code, ans)
        assert hdrs["Content-Type"] == "application/json"
    with pytest.raises(InvalidInputError, match="400: queries have dimension 3"):
        Client(served.url).search([1.0, 2.0, 3.0])


def test_changes_are_saved_before_they_are_answered(served, data):
    client = Client(served.url)
    q = data[1]
    first = client.info()["n_items"]
    new = client.add(q[:3])
    assert client.search(q[:3], k=1).ids[:, 0].tolist() == new.tolist()  # each finds itself
    assert irli.load(served.path).search(q[:3], k=1).ids[:, 0].tolist() == new.tolist()  # on disk already
    with pytest.raises(ServiceError, match="400: id .* is already in the index"):
        client.add(q[:1], ids=new[:1])
    assert client.remove(new) == 3
    assert not np.isin(client.search(q[:3], k=5).ids, new).any()
    assert len(irli.load(served.path)) == first == client.info()["n_items"]


# -- the default server -------------------------------------------------------------------
@pytest.fixture
def index_dir(data, tmp_path):
    return fitted("fast", data).save(tmp_path / "idx")


@pytest.fixture
def local(index_dir):
    servers = []

    def start(path=index_dir, **options):
        server = Server(path, ServeOptions(**{"port": 0, **LIMITS, **options}))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def test_a_failed_save_applies_nothing_and_the_retry_works(local, index_dir, data, monkeypatch):
    url = local()
    client = Client(url)
    q = data[1][:2]
    before = client.info()["n_items"]
    real_save = np.save

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("irli.io.storage.np.save", full_disk)
    with pytest.raises(ServiceError) as e:
        client.add(q, ids=[900_001, 900_002])
    assert e.value.status == 503 and str(index_dir) in str(e.value) and "No space left on device" in str(e.value)
    with pytest.raises(ServiceError, match="503: the change was not applied"):
        client.remove([0])
    assert client.info()["n_items"] == before  # nothing applied
    assert not np.isin([900_001, 900_002], client.search(q, k=5).ids).any()
    assert 0 in client.search(irli.load(index_dir).get_vectors([0]), k=1).ids
    assert len(irli.load(index_dir)) == before and not list(index_dir.parent.glob(".idx.tmp-*"))
    monkeypatch.setattr("irli.io.storage.np.save", real_save)
    assert client.add(q, ids=[900_001, 900_002]).tolist() == [900_001, 900_002]  # the retry works
    assert client.remove([0]) == 1
    assert len(irli.load(index_dir)) == before + 1


def test_a_second_writer_is_refused(local, index_dir):
    url = local()
    other = irli.load(index_dir)
    with pytest.raises(IndexLockedError, match="another writer holds this index .*irli serve"):
        Service(other, path=index_dir)
    with pytest.raises(IndexLockedError, match="another writer holds this index"):
        other.save(index_dir)
    reader = Service(other, ServeOptions(read_only=True), path=index_dir)  # readers are welcome
    assert reader.lock is None and not reader.writable
    with pytest.raises(ServeError, match="is in use"):  # and a second service on the same port is refused
        Server(index_dir, ServeOptions(port=int(url.rsplit(":", 1)[1]), read_only=True))


def test_token_and_read_only(local, data):
    url = local(token="s3cret", read_only=True)
    q = data[1][:2]
    assert call(url + "/health")[0] == 200  # load balancers probe without a token
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        status, hdrs, body = call(url + "/search", json.dumps({"vectors": q.tolist()}).encode(), headers=headers)
        assert status == 401 and "token" in json.loads(body)["error"] and hdrs["WWW-Authenticate"]
    assert call(url + "/info")[0] == 401
    client = Client(url, token="s3cret")
    assert client.search(q, k=3).ids.shape == (2, 3)
    assert client.info()["writable"] is False
    with pytest.raises(ServiceError, match="403: /add is switched off: the service is read-only"):
        client.add(q)
    with pytest.raises(ServiceError, match="403: /remove is switched off"):
        client.remove([1])


def _raise_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"needs {want} open files, the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def test_slow_clients_are_dropped_and_health_keeps_answering(local):
    _raise_fd_limit(10_000)
    url = local(header_timeout_s=3.0, body_timeout_s=1.0)
    host, port = url[len("http://"):].split(":")
    half_open = []
    try:
        for _ in range(4000):  # connections that never finish their headers
            s = socket.create_connection((host, int(port)))
            s.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Ty")
            half_open.append(s)
        t = time.perf_counter()
        assert call(url + "/health", timeout=5)[0] == 200
        assert time.perf_counter() - t < 2.0
        slow_body = socket.create_connection((host, int(port)))
        slow_body.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"vec")
        big_head = socket.create_connection((host, int(port)))
        big_head.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (70 << 10))
        for s, status in ((big_head, b"431"), (slow_body, b"408")):
            s.settimeout(10)
            answer = _read_all(s)
            assert answer.startswith(b"HTTP/1.1 " + status), answer[:100]
            assert b'{"error":' in answer
        half_open[0].settimeout(10)
        answer = _read_all(half_open[0])  # the server closed it after header_timeout_s
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 3 s" in answer
        assert call(url + "/health", timeout=5)[0] == 200
    finally:
        for s in half_open:
            s.close()


def _read_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def test_two_services_on_one_host_answer_for_their_own_index(local, data, tmp_path):
    small = irli.Index("ivf", n_buckets=8).fit(data[0][:500]).save(tmp_path / "small")
    a, b = local(), local(small)
    assert a != b
    for _ in range(20):
        assert Client(a).info()["n_items"] == len(data[0])
        assert Client(b).info()["n_items"] == 500


def test_warming_up_changes_nothing(local, index_dir):
    before = {p.name: p.stat().st_mtime_ns for p in index_dir.iterdir()}
    url = local()
    assert Client(url).info()["n_items"] == len(irli.load(index_dir))
    assert {p.name: p.stat().st_mtime_ns for p in index_dir.iterdir()} == before


# -- the command: signals, kill -9, start-up errors ------------------------------------------
def _serve(path, *args) -> tuple[subprocess.Popen, str]:
    """`irli serve PATH --port 0 ARGS` in a new process; (process, URL)."""
    proc = subprocess.Popen(IRLI + ["serve", str(path), "--port", "0", *args], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    m = re.search(r"on (http://\S+);", line)
    if not m:
        proc.kill()
        raise AssertionError(f"no URL in {line!r}")
    return proc, m.group(1)


@pytest.fixture
def spawned():
    """Start `irli serve` processes; any left running are killed at the end."""
    procs = []

    def spawn(path, *args):
        proc, url = _serve(path, *args)
        procs.append(proc)
        return proc, url

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_sigterm_drains_requests_in_flight_and_exits_0(spawned, index_dir, data):
    proc, url = spawned(index_dir, "--drain", "5")
    client = Client(url, retries=0)
    q = data[1]
    answered, failed = [], []

    def load():
        for i in range(400):
            try:
                client.search(q[i % len(q)], k=5)
                answered.append(i)
            except ServiceError as e:
                failed.append(e)
                return

    t = threading.Thread(target=load)
    t.start()
    while len(answered) < 20 and not failed:
        time.sleep(0.01)
    assert not failed, failed
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    t.join(timeout=30)
    rest = proc.stderr.read()
    assert "irli: stopped" in rest and "Traceback" not in rest
    assert all(e.status is None for e in failed)  # refused after the drain, never a half answer
    with pytest.raises(ServiceError):
        Client(url, retries=0, timeout_s=2).health()  # nothing is left listening


def test_an_acknowledged_add_survives_kill_9(spawned, index_dir, data):
    proc, url = spawned(index_dir)
    try:
        ids = Client(url).add(data[1][:2])
    finally:
        proc.kill()
        proc.wait(timeout=30)
    index = irli.load(index_dir)
    assert all(i in index for i in ids)
    Service(index, path=index_dir).close()  # the dead writer's lock went with it


@pytest.mark.parametrize("case", ["missing", "label index", "busy port"])
def test_start_up_errors_are_one_line(case, index_dir, tmp_path):
    args = [str(tmp_path / "nonexist.index")]
    words = "no such index directory"
    if case == "label index":
        from irli.io.datasets import synthetic_labels

        x, y = synthetic_labels(300, 20, n_features=50, signature=4, seed=3)
        args = [str(irli.LabelIndex(n_reps=2, hidden=8, epochs=1).fit(x, y).save(tmp_path / "labels"))]
        words = "a label index; irli serve serves vector indexes"
    elif case == "busy port":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            r = subprocess.run(IRLI + ["serve", str(index_dir), "--port", str(s.getsockname()[1])],
                               capture_output=True, text=True, timeout=120)
        words = "is in use"
    if case != "busy port":
        r = subprocess.run(IRLI + ["serve", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("irli: error: ") and words in lines[0], r.stderr


# -- the client ---------------------------------------------------------------------------
def test_client_checks_arguments_as_index_does():
    client = Client("http://127.0.0.1:9")  # nothing is sent: every check runs first
    for ids, words in (([777777.9], "ids must be integers, got 777777.9"), ([-0.5], "ids must be integers"),
                       ([-1], "must be >= 0"), ([1, 2], "ids has 2 entries for 1 vectors")):
        with pytest.raises(InvalidInputError, match=re.escape(words)):
            client.add(np.ones((1, 4), np.float32), ids=ids)
    with pytest.raises(InvalidInputError, match="ids must be integers"):
        client.remove([1.5])
    with pytest.raises(InvalidInputError, match="allow must be integers"):
        client.search(np.ones(4, np.float32), allow=[0.5])
    with pytest.raises(InvalidInputError, match="k must be an integer"):
        client.search(np.ones(4, np.float32), k=2.0)
    with pytest.raises(ServiceError, match="no answer"):
        Client("http://127.0.0.1:9", retries=0).health()


def test_msgpack_bodies_answer_in_msgpack(served, data):
    q = data[1][:3]
    body = msgspec.msgpack.encode({"vectors": q.tolist(), "k": 4})
    status, headers, raw = call(served.url + "/search", body, headers={"Content-Type": "application/msgpack"})
    assert status == 200 and headers["Content-Type"] == "application/msgpack"
    ans = msgspec.msgpack.decode(raw)
    ids = np.frombuffer(ans["ids"], "<i8").reshape(ans["shape"])
    np.testing.assert_array_equal(ids, served.ref.search(q, k=4).ids)


# -- Ray Serve only: sharded indexes, replicas, stopping -----------------------------------
@pytest.mark.ray
def test_on_ray_sigterm_exits_0_and_leaves_nothing_running(spawned, index_dir, data):
    proc, url = spawned(index_dir, "--ray")
    assert Client(url).search(data[1][:2], k=3).ids.shape == (2, 3)
    cluster = processes.tree(proc.pid)
    assert len(cluster) >= 3  # its own Ray: GCS, raylet, workers
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    rest = proc.stderr.read()
    assert "Traceback" not in rest and "SIGTERM received" not in rest, rest
    assert not processes.alive(cluster)
@pytest.mark.ray
def test_a_sharded_index_serves_the_same_answers_on_ray(cluster, data, tmp_path):
    from irli.serving import on_ray

    index = irli.Index("ivf", n_buckets=32).fit(data[0])
    url = on_ray.start(index.save(tmp_path / "s", shards=2), ServeOptions(port=RAY_PORT, replica_cpus=0.25))
    try:
        client = Client(url)
        np.testing.assert_array_equal(client.search(data[1], k=10, probes=4).ids,
                                      index.search(data[1], k=10, probes=4).ids)
        assert client.info()["parts"] == 2 and client.health()["status"] == "ok"
        with pytest.raises(ServiceError, match="409: /add is not available: a sharded index is read-only"):
            client.add(data[1][:1])
    finally:
        on_ray.stop()


@pytest.mark.ray
def test_a_killed_replica_loses_no_request(cluster, data, tmp_path):
    """Two replicas under load from 8 threads; one is killed. Every request
    gets the right answer or a clear ServiceError, and the service keeps
    answering (Serve starts a new replica)."""
    import ray

    from irli.serving import on_ray

    index = irli.Index("ivf", n_buckets=32).fit(data[0])
    index.save(tmp_path / "idx")
    url = on_ray.start(tmp_path / "idx", ServeOptions(port=RAY_PORT, replicas=2, replica_cpus=0.25))
    try:
        client = Client(url, timeout_s=20, retries=5)
        q = data[1]
        want = index.search(q, k=5).ids
        results, errors = {}, {}
        n = 400

        def load(worker):
            for i in range(worker, n, 8):
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
        assert at_kill < n / 2  # the kill came under load
        assert len(results) + len(errors) == n  # every request answered or failed clearly
        assert len(results) >= 0.95 * n, errors
        for i, ids in results.items():
            np.testing.assert_array_equal(ids, want[i % len(q)])
        assert client.health()["status"] == "ok"
        with pytest.raises(ServiceError, match="409: /add is not available: the service runs more than one"):
            client.add(q[:1])
    finally:
        on_ray.stop()


# -- the batcher --------------------------------------------------------------------------
def test_requests_that_queue_behind_a_search_go_together_and_none_waits_for_a_batch_to_fill():
    import asyncio

    from irli.serving.batcher import Batcher

    batches = []
    gate = threading.Event()

    def run(reqs):
        batches.append(list(reqs))
        if len(batches) == 1:
            gate.wait(10)  # the first search is slow: the others queue behind it
        return [r * 10 if r >= 0 else ValueError(f"bad {r}") for r in reqs]

    async def main():
        b = Batcher(run, rows=lambda r: 1, max_rows=3, timeout_s=30)
        first = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0.05)
        assert batches == [[1]]  # it started at once, alone
        rest = [asyncio.ensure_future(b.submit(r)) for r in (2, 3, 4, -5)]
        await asyncio.sleep(0.05)
        gate.set()
        out = await asyncio.gather(first, *rest, return_exceptions=True)
        b.close()
        return out

    out = asyncio.run(main())
    assert out[:4] == [10, 20, 30, 40] and isinstance(out[4], ValueError) and "bad -5" in str(out[4])
    assert batches == [[1], [2, 3, 4], [-5]]  # queued ones together, up to max_rows


def test_a_request_that_waits_too_long_gets_the_timeout_error():
    import asyncio

    from irli.serving.batcher import Batcher

    gate = threading.Event()

    async def main():
        b = Batcher(lambda reqs: (gate.wait(10), reqs)[1], rows=lambda r: 1, timeout_s=0.3,
                    expired=lambda: TimeoutError("no answer in time"))
        try:
            with pytest.raises(TimeoutError, match="no answer in time"):
                await b.submit(1)
        finally:
            gate.set()
            b.close()

    asyncio.run(main())


def test_a_part_of_a_sharded_index_down_is_a_503_naming_it(data, tmp_path, monkeypatch):
    from irli.distributed import DistributedError
    from irli.serving.protocol import JSON, RequestError, SearchBody

    index = irli.load(irli.Index("ivf", n_buckets=16).fit(data[0]).save(tmp_path / "s", shards=2))
    service = Service(index)
    assert service.sharded and not service.writable and service.lock is None
    req = service.search_request(SearchBody(vectors=data[1][:2].tolist(), k=3), JSON)
    assert isinstance(service.search([req])[0], bytes)

    def down(*args, **kwargs):
        raise DistributedError("part 1 (search) failed: ActorDiedError: the actor died")

    monkeypatch.setattr(index, "search", down)
    monkeypatch.setattr(index, "ping", down)
    answer = service.search([req])[0]
    assert isinstance(answer, RequestError) and answer.status == 503 and "part 1" in answer.message
    with pytest.raises(RequestError, match="part 1"):
        service.health()
