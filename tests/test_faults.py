"""The fault and bad-input pass: a table of more than 60 kinds of bad input
and fault, walked through the API and the CLI. Each must give a one-line
error of the right irli type naming the problem, or the documented
behaviour; then the reproductions of the defects the pass found (crashes,
data loss, silently wrong answers), each as its own test."""

import io
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import threading
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import irli
from irli import (
    ConfigError,
    IndexFormatError,
    InvalidInputError,
    LabelIndex,
    NotFittedError,
)
from irli.cli import main
from irli.io.datasets import synthetic, synthetic_labels
from irli.io.storage import manifest_sha256
from irli.kernels.exact import exact_knn

D = 16
I64 = np.iinfo(np.int64).max


@pytest.fixture(scope="module")
def small():
    x, q = synthetic(800, D, 20, latent=6, clusters=12, seed=11)
    return x, q


def make(preset="ivf", metric="cosine", x=None, n=600, **kw):
    if x is None:
        x = synthetic(n, D, 0, latent=6, clusters=12, seed=11)[0]
    return irli.Index(preset, metric=metric, n_buckets=8, **kw).fit(x)


@pytest.fixture(scope="module")
def ivf(small):
    return make(x=small[0])


@pytest.fixture(scope="module")
def saved(tmp_path_factory, small):
    path = tmp_path_factory.mktemp("faults") / "idx"
    make("fast", x=small[0]).save(path)
    return path


@pytest.fixture(scope="module")
def labels():
    x, y = synthetic_labels(400, 30, n_features=50, signature=4, keep=0.8, noise=1, seed=2)
    return LabelIndex(n_reps=2, hidden=16, epochs=2, repartition_every=1, seed=1).fit(x, y), x, y


def copy_of(path: Path, tmp: Path) -> Path:
    out = tmp / "copy"
    shutil.copytree(path, out)
    return out


def edit_manifest(path: Path, **changes) -> None:
    m = json.loads((path / "manifest.json").read_text())
    for k, v in changes.items():
        if k.startswith("config."):
            m["config"][k[7:]] = v
        else:
            m[k] = v
    m["manifest_sha256"] = manifest_sha256(m)  # crafted, checksum and all: the checks behind it must hold
    (path / "manifest.json").write_text(json.dumps(m))


# -- the table: (kind, call, error type, words the message must hold) ---------------
def _bad_q(value, col=2):
    def make_q(small):
        q = small[1][:3].copy()
        q[1, col] = value
        return q
    return make_q


CASES = [
    # queries
    ("query of the wrong dimension", lambda c: c.ivf.search(c.q[:, :5]), InvalidInputError, "dimension 5"),
    ("query holding NaN", lambda c: c.ivf.search(_bad_q(np.nan)(c.small)), InvalidInputError, "NaN or inf"),
    ("query holding inf", lambda c: c.ivf.search(_bad_q(np.inf)(c.small)), InvalidInputError, "row 1"),
    ("query of strings", lambda c: c.ivf.search(np.array([["a"] * D])), InvalidInputError, "dtype"),
    ("complex query", lambda c: c.ivf.search(np.ones((2, D), complex)), InvalidInputError, "dtype"),
    ("boolean query", lambda c: c.ivf.search(np.ones((2, D), bool)), InvalidInputError, "dtype"),
    ("object query", lambda c: c.ivf.search(np.array([[object()] * D])), InvalidInputError, "dtype"),
    ("empty query batch", lambda c: c.ivf.search(np.zeros((0, D), np.float32)), InvalidInputError, "empty"),
    ("3-D queries", lambda c: c.ivf.search(np.zeros((2, 2, D), np.float32)), InvalidInputError, "shape"),
    ("ragged query list", lambda c: c.ivf.search([[1.0] * D, [1.0]]), InvalidInputError, "could not be read"),
    ("float64 beyond float32", lambda c: c.ivf.search(np.full((1, D), 1e300)), InvalidInputError, "too large"),
    ("l2 query of norm 1e38", lambda c: c.l2.search(np.full((1, D), 1e37, np.float32)), InvalidInputError,
     "too large"),
    ("k = 0", lambda c: c.ivf.search(c.q, k=0), InvalidInputError, "k must be a positive integer"),
    ("k negative", lambda c: c.ivf.search(c.q, k=-1), InvalidInputError, "k must be a positive integer"),
    ("k a float", lambda c: c.ivf.search(c.q, k=2.5), InvalidInputError, "k must be a positive integer"),
    ("k a string", lambda c: c.ivf.search(c.q, k="3"), InvalidInputError, "k must be a positive integer"),
    ("k a bool", lambda c: c.ivf.search(c.q, k=True), InvalidInputError, "k must be a positive integer"),
    ("k = 10**12", lambda c: c.ivf.search(c.q, k=10**12), InvalidInputError, "out of range"),
    ("probes = 0", lambda c: c.ivf.search(c.q, probes=0), InvalidInputError, "probes"),
    ("probes a float", lambda c: c.ivf.search(c.q, probes=1.5), InvalidInputError, "probes"),
    ("min_votes above R", lambda c: c.ivf.search(c.q, min_votes=2), InvalidInputError, "min_votes=2"),
    ("threads = 0", lambda c: c.ivf.search(c.q, threads=0), InvalidInputError, "threads must be"),
    ("threads negative", lambda c: c.ivf.search(c.q, threads=-2), InvalidInputError, "threads must be"),
    ("batch_size = 0", lambda c: c.ivf.search(c.q, batch_size=0), InvalidInputError, "batch_size"),
    ("refine = 0 on fast", lambda c: c.fast.search(c.q, refine=0), InvalidInputError, "refine"),
    ("ragged allow-list", lambda c: c.ivf.search(c.q, allow=[1, [2, 3], 4]), InvalidInputError, "allow"),
    ("allow lists for too few queries", lambda c: c.ivf.search(c.q, allow=[[1], [2]]), InvalidInputError,
     "2 id lists for 3 queries"),
    ("negative id in allow", lambda c: c.ivf.search(c.q, allow=[-4]), InvalidInputError, ">= 0"),
    ("3-D allow mask", lambda c: c.ivf.search(c.q, allow=np.ones((1, 1, 1), bool)), InvalidInputError, "mask"),
    # fitting
    ("fit on nothing", lambda c: make(x=np.zeros((0, D), np.float32)), InvalidInputError, "empty"),
    ("fit on NaN", lambda c: make(x=_bad_q(np.nan)(c.small)), InvalidInputError, "NaN"),
    ("fewer items than buckets", lambda c: make(x=c.small[0][:5]), InvalidInputError, "fewer than n_buckets"),
    ("repeated ids", lambda c: irli.Index("ivf", n_buckets=4).fit(c.small[0][:50], ids=[1] * 50),
     InvalidInputError, "repeat"),
    ("negative ids", lambda c: irli.Index("ivf", n_buckets=4).fit(c.small[0][:3], ids=[0, -1, 2]),
     InvalidInputError, ">= 0"),
    ("id 1.5", lambda c: irli.Index("ivf", n_buckets=2).fit(c.small[0][:3], ids=[0, 1.5, 2]),
     InvalidInputError, "integers, got 1.5"),
    ("id 1e19", lambda c: irli.Index("ivf", n_buckets=2).fit(c.small[0][:2], ids=[0.0, 1e19]),
     InvalidInputError, "fit in int64, got 1e+19"),
    ("ids of the wrong length", lambda c: irli.Index("ivf", n_buckets=2).fit(c.small[0][:3], ids=[0, 1]),
     InvalidInputError, "2 entries for 3 vectors"),
    ("l2 fit on a row of norm 4e19", lambda c: make(metric="l2", x=np.vstack([c.small[0], np.full((1, D), 1e19)])),
     InvalidInputError, "too large"),
    ("ip fit on a row of norm 4e19", lambda c: make(metric="ip", x=np.vstack([c.small[0], np.full((1, D), 1e19)])),
     InvalidInputError, "too large"),
    ("pq_m that does not divide d", lambda c: make("fast", x=c.small[0], pq_m=5), InvalidInputError, "pq_m=5"),
    # configuration
    ("unknown preset", lambda c: irli.Index("bogus"), ConfigError, "bogus"),
    ("unknown metric", lambda c: irli.Index("ivf", metric="hamming"), ConfigError, "hamming"),
    ("n_buckets = 0", lambda c: irli.Index("ivf", n_buckets=0), ConfigError, "n_buckets"),
    ("unknown option", lambda c: irli.Index("ivf", colour=3), ConfigError, "colour"),
    ("negative seed", lambda c: irli.Index("ivf", seed=-1), ConfigError, "seed"),
    ("label index with seed -1", lambda c: LabelIndex(seed=-1), ConfigError, "seed"),
    ("label index with unknown option", lambda c: LabelIndex(colour=1), ConfigError, "colour"),
    # a fitted index changing
    ("add of the wrong dimension", lambda c: c.fresh().add(np.ones((2, 3), np.float32)), InvalidInputError,
     "dimension 3"),
    ("add of an id present", lambda c: c.fresh().add(c.small[0][:1], ids=[0]), InvalidInputError,
     "already in the index"),
    ("add l2 of norm 4e19", lambda c: c.fresh("l2").add(np.full((1, D), 1e19, np.float32)), InvalidInputError,
     "too large"),
    ("add after id int64 max", lambda c: c.fresh().add(c.small[0][:1], ids=[I64]).add(c.small[0][1:2]),
     InvalidInputError, "no ids left"),
    ("remove an unknown id", lambda c: c.fresh().remove([10**6]), InvalidInputError, "not in the index"),
    ("remove with missing='bogus'", lambda c: c.fresh().remove([1], missing="bogus"), InvalidInputError,
     "missing must be"),
    ("get_vectors of an unknown id", lambda c: c.ivf.get_vectors([10**6]), InvalidInputError, "not in the index"),
    ("unfitted search", lambda c: irli.Index("ivf").search(c.q), NotFittedError, "not fitted"),
    ("unfitted add", lambda c: irli.Index("ivf").add(c.q), NotFittedError, "not fitted"),
    ("unfitted compact", lambda c: irli.Index("ivf").compact(), NotFittedError, "not fitted"),
    ("unfitted save", lambda c: irli.Index("ivf").save(c.tmp / "never"), NotFittedError, "not fitted"),
    # saving over things that are not indexes
    ("save over a file", lambda c: (c.tmp / "f").write_text("x") and c.ivf.save(c.tmp / "f"), IndexFormatError,
     "not a directory"),
    ("save over a foreign directory", lambda c: ((c.tmp / "mine").mkdir(), (c.tmp / "mine" / "a").write_text("x"),
                                                c.ivf.save(c.tmp / "mine")), IndexFormatError, "refusing"),
    # loading
    ("load of a missing directory", lambda c: irli.load(c.tmp / "nope"), IndexFormatError, "no such index"),
    ("load of a file", lambda c: (c.tmp / "g").write_text("x") and irli.load(c.tmp / "g"), IndexFormatError,
     "not a directory"),
    ("load of a foreign directory", lambda c: ((c.tmp / "e").mkdir(), irli.load(c.tmp / "e")), IndexFormatError,
     "no manifest.json"),
    ("manifest not JSON", lambda c: c.corrupt(lambda p: (p / "manifest.json").write_text("{oops")),
     IndexFormatError, "corrupted manifest.json"),
    ("manifest not UTF-8", lambda c: c.corrupt(lambda p: (p / "manifest.json").write_bytes(b"\xff\xfe{}")),
     IndexFormatError, "corrupted manifest.json"),
    ("format_version -5", lambda c: c.corrupt(lambda p: edit_manifest(p, format_version=-5)), IndexFormatError,
     "format_version -5"),
    ("format_version true", lambda c: c.corrupt(lambda p: edit_manifest(p, format_version=True)),
     IndexFormatError, "format_version True"),
    ("format_version from the future", lambda c: c.corrupt(lambda p: edit_manifest(p, format_version=99)),
     IndexFormatError, "upgrade irli"),
    ("manifest naming ../outside.npy", lambda c: c.corrupt(_outside), IndexFormatError, "not a plain file"),
    ("manifest naming a symlink", lambda c: c.corrupt(_symlinked), IndexFormatError, "not a plain file"),
    ("truncated vectors.npy", lambda c: c.corrupt(_truncate), IndexFormatError, "truncated"),
    ("flipped byte, verified", lambda c: c.corrupt(_flip), IndexFormatError, "checksum mismatch"),
    ("crafted lists.npy, unverified", lambda c: c.corrupt(_crafted_lists, verify=False), IndexFormatError,
     "lists.npy holds entries outside"),
    ("crafted assign.npy, unverified", lambda c: c.corrupt(_crafted_assign, verify=False), IndexFormatError,
     "assign.npy holds entries outside"),
    ("NaN in centres.npy, unverified", lambda c: c.corrupt(
        lambda p: _rewrite(p, "centres", lambda a: a.__setitem__((0, 1, 2), np.nan)), verify=False),
     IndexFormatError, "centres holds NaN"),
    ("NaN in the codebooks, unverified", lambda c: c.corrupt(
        lambda p: _rewrite(p, "pq_books", lambda a: a.__setitem__((0, 1, 2, 0), np.inf)), verify=False),
     IndexFormatError, "pq_books holds NaN"),
    ("next_id a string", lambda c: c.corrupt(lambda p: edit_manifest(p, next_id="x"), verify=False),
     IndexFormatError, "next_id"),
    ("next_id below the ids", lambda c: c.corrupt(lambda p: edit_manifest(p, next_id=3), verify=False),
     IndexFormatError, "next_id 3"),
    ("history a list", lambda c: c.corrupt(lambda p: edit_manifest(p, history=[1]), verify=False),
     IndexFormatError, "history"),
    ("config of another version", lambda c: c.corrupt(lambda p: edit_manifest(p, **{"config.colour": 1}),
                                                       verify=False), IndexFormatError, "invalid config"),
    ("missing routers", lambda c: c.corrupt(lambda p: (p / "routers.safetensors").unlink()), IndexFormatError,
     "missing file routers.safetensors"),
    ("label manifest with n_buckets null", lambda c: c.corrupt_labels(
        lambda p: edit_manifest(p, **{"config.n_buckets": None})), IndexFormatError, "do not agree"),
    # label index
    ("label id 1.5", lambda c: LabelIndex(epochs=1).fit(c.lx[:3], [[1.5], [0], [1]]), InvalidInputError,
     "must be integers"),
    ("label id 1e9", lambda c: LabelIndex(epochs=1).fit(c.lx[:3], [[10**9], [0], [1]]), InvalidInputError,
     "number the labels"),
    ("negative label id", lambda c: LabelIndex(epochs=1).fit(c.lx[:3], [[-1], [0], [1]]), InvalidInputError,
     "negative label id"),
    ("labels for too few rows", lambda c: LabelIndex(epochs=1).fit(c.lx[:3], [[0], [1]]), InvalidInputError,
     "rows"),
    ("feature column 100000 of 50", lambda c: c.lab.predict(_csr(50, [100000])), InvalidInputError, "feature"),
    ("feature column -3", lambda c: c.lab.predict(_csr(50, [-3])), InvalidInputError, "feature"),
    ("features of the wrong width", lambda c: c.lab.predict(sp.csr_matrix((2, 7), dtype=np.float32)),
     InvalidInputError, "7 features"),
    ("label k beyond the labels", lambda c: c.lab.predict(c.lx[:2], k=10**6), InvalidInputError, "out of range"),
    ("unfitted label index", lambda c: LabelIndex().predict(c.lx[:2]), NotFittedError, "not fitted"),
]


def _csr(f, cols):
    """A CSR row whose column ids scipy never checked."""
    cols = np.asarray(cols)
    m = sp.csr_matrix((1, f), dtype=np.float32)
    m.data, m.indices, m.indptr = np.ones(len(cols), np.float32), cols, np.array([0, len(cols)])
    return m


def _outside(p: Path):
    m = json.loads((p / "manifest.json").read_text())
    np.save(p.parent / "outside.npy", np.zeros(3))
    m["files"]["../outside.npy"] = m["files"].pop("ids.npy")
    m["manifest_sha256"] = manifest_sha256(m)
    (p / "manifest.json").write_text(json.dumps(m))


def _symlinked(p: Path):
    os.rename(p / "ids.npy", p.parent / "ids-elsewhere.npy")
    os.symlink(p.parent / "ids-elsewhere.npy", p / "ids.npy")


def _truncate(p: Path):
    with open(p / "vectors.npy", "r+b") as f:
        f.truncate(200)


def _flip(p: Path):
    with open(p / "vectors.npy", "r+b") as f:
        f.seek(300)
        b = f.read(1)
        f.seek(300)
        f.write(bytes([b[0] ^ 0xFF]))


def _rewrite(p: Path, name: str, edit):
    a = np.load(p / f"{name}.npy")
    edit(a)
    np.save(p / f"{name}.npy", a)  # same size, checksum now wrong: only verify=False reads it


def _crafted_lists(p: Path):
    _rewrite(p, "lists", lambda a: a.__setitem__((0, 5), 10**6))


def _crafted_assign(p: Path):
    _rewrite(p, "assign", lambda a: a.__setitem__((0, 0, 3), 999))


class Ctx:
    def __init__(self, small, ivf, saved, labels, tmp):
        self.small, self.ivf, self.saved, self.tmp = small, ivf, saved, tmp
        self.q = small[1][:3]
        self.lab, self.lx, self.ly = labels
        self._labels_saved = None

    @property
    def fast(self):
        return irli.load(self.saved)

    @property
    def l2(self):
        return make(metric="l2", x=self.small[0])

    def fresh(self, metric="cosine"):
        return make(metric=metric, x=self.small[0])

    def corrupt(self, edit, verify=True):
        p = copy_of(self.saved, self.tmp)
        edit(p)
        return irli.load(p, verify=verify)

    def corrupt_labels(self, edit):
        p = self.tmp / "lab"
        self.lab.save(p)
        edit(p)
        return irli.load(p, verify=False)


@pytest.mark.parametrize("kind,call,error,words", CASES, ids=[c[0] for c in CASES])
def test_fault_table(kind, call, error, words, small, ivf, saved, labels, tmp_path):
    with pytest.raises(error) as e:
        call(Ctx(small, ivf, saved, labels, tmp_path))
    msg = str(e.value)
    assert msg and "\n" not in msg, msg
    assert words in msg, msg


def test_the_table_is_long_enough():
    assert len(CASES) + len(CLI_CASES) >= 60


# -- the same through the CLI (in-process, as `irli ...` runs it) ---------------------
CLI_CASES = [
    (["info", "{tmp}/nope"], 1, "no such index directory"),
    (["build", "{tmp}/nope.npy", "-o", "{tmp}/o"], 1, "no such file"),
    (["build", "{items}", "-o", "{tmp}/o", "--sample", "0"], 2, "must be a positive integer"),
    (["build", "{items}", "-o", "{tmp}/o", "--threads", "0"], 2, "must be a positive integer"),
    (["build", "{items}", "-o", "{tmp}/o", "--set", "n_buckets=0"], 1, "n_buckets must be"),
    (["build", "{nan}", "-o", "{tmp}/o", "--set", "n_buckets=4"], 1, "NaN"),
    (["build", "{xc}", "-o", "{tmp}/o"], 1, "not a UTF-8 text file"),
    (["search", "{idx}", "{items}", "-k", "0"], 1, "k must be a positive integer"),
    (["search", "{idx}", "{items}", "-k", "1000000000000"], 1, "out of range"),
    (["search", "{idx}", "{items}", "--threads", "-2"], 2, "must be a positive integer"),
    (["search", "{idx}", "{narrow}"], 1, "dimension"),
    (["eval", "{idx}", "{items}", "--threads", "0"], 2, "must be a positive integer"),
    (["eval", "{idx}", "{items}", "--probes", "a,b"], 1, "--probes expects integers"),
    (["info", "{emptied}"], 0, ""),
    (["search", "{emptied}", "{items}", "-k", "3"], 0, ""),
]


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, small, saved):
    d = tmp_path_factory.mktemp("cli-faults")
    np.save(d / "items.npy", small[1])
    bad = small[0][:50].copy()
    bad[7, 1] = np.nan
    np.save(d / "nan.npy", bad)
    np.save(d / "narrow.npy", small[1][:, :3])
    (d / "xc.txt").write_bytes(b"3 4 2\n\xff\xfe 0:1\n")
    index = irli.load(saved, mmap=False)
    index.remove(index.ids)
    index.compact()
    index.save(d / "emptied")
    return d


@pytest.mark.parametrize("args,code,words", CLI_CASES, ids=[" ".join(c[0][:1] + c[0][2:]) for c in CLI_CASES])
def test_cli_fault_table(args, code, words, cli_files, saved):
    d = cli_files
    argv = [a.format(tmp=d, items=d / "items.npy", idx=saved, nan=d / "nan.npy", narrow=d / "narrow.npy",
                     xc=d / "xc.txt", emptied=d / "emptied") for a in args]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse's own usage errors
            rc = e.code
    assert rc == code, err.getvalue()
    if code:
        line = err.getvalue().strip().splitlines()[-1]
        assert words in line and "Traceback" not in err.getvalue(), err.getvalue()


def test_cli_broken_pipe_is_not_an_error(saved, cli_files):
    cmd = f"{sys.executable} -m irli.cli search {saved} {cli_files / 'items.npy'} -k 5 | head -c 10"
    p = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert "error" not in p.stderr and "Broken pipe" not in p.stderr, p.stderr
    assert p.returncode == 0, p.stderr


# -- reproductions ------------------------------------------------------------------
def test_failed_add_changes_nothing_and_save_still_loads(small, tmp_path):
    """D1: an add that fails leaves the index as it was; saving it loses nothing."""
    x, q = small
    index = make("fast", metric="l2", x=x)
    index.save(tmp_path / "p")
    before = index.search(q, k=5)
    with pytest.raises(InvalidInputError, match="too large"):
        index.add(np.vstack([x[:3], np.full((1, D), 1e19, np.float32)]))
    with pytest.raises(InvalidInputError, match="already in the index"):
        index.add(x[:2], ids=[10**6, 5])
    assert len(index) == x.shape[0] and 10**6 not in index
    index.save(tmp_path / "p")
    again = irli.load(tmp_path / "p")
    np.testing.assert_array_equal(again.search(q, k=5).ids, before.ids)
    again.compact()
    again.add(x[:3])
    assert len(again) == x.shape[0] + 3


def test_replace_is_all_or_nothing(small):
    x, q = small
    index = make(x=x)
    with pytest.raises(InvalidInputError):
        index.add(np.full((2, D), np.nan, np.float32), ids=[3, 4], replace=True)
    np.testing.assert_allclose(index.get_vectors([3, 4]), make(x=x).get_vectors([3, 4]))
    index.add(x[10:12], ids=[3, 4], replace=True)
    assert len(index) == x.shape[0] and index.n_removed == 2


def test_cosine_rows_of_huge_values_are_stored_unit_length(small):
    """S2: norms are taken in float64, so a 1e38 row is not stored as zeros."""
    x = small[0].copy()
    x[5] = 1e38 * np.sign(x[5] + 1e-9)
    index = make(x=x)
    v = index.get_vectors([5])[0]
    assert abs(np.linalg.norm(v) - 1) < 1e-5
    ids, scores = index.search(x[5], k=1, probes=8)
    assert ids[0, 0] == 5 and abs(scores[0, 0] - 1) < 1e-4


def test_l2_search_scores_are_finite_up_to_the_limit(small):
    x, q = small
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow anywhere on the way (the library never warns)
        index = make("fast", metric="l2", x=x * 1e17)
        ids, scores = index.search(q * 1e17, k=3)
    assert np.isfinite(scores).all() and (ids >= 0).all()


@pytest.mark.parametrize("preset", ["ivf", "fast"])
def test_an_emptied_index_answers_and_grows(preset, small, tmp_path):
    """U1: remove everything: search gives -1 rows, compact and save work, new items are found."""
    x, q = small
    index = make(preset, x=x)
    index.remove(index.ids)
    for step in ("removed", "compacted", "loaded"):
        if step == "compacted":
            assert index.compact() == x.shape[0]
        if step == "loaded":
            index.save(tmp_path / "e")
            index = irli.load(tmp_path / "e")
        for _ in range(3):
            for rows in (q[:1], q[:16], q):
                ids, scores = index.search(rows, k=4)
                assert (ids == -1).all() and np.isneginf(scores).all() and len(index) == 0, step
        ids, _ = index.search(q, k=4, allow=[1, 2, 3])
        assert (ids == -1).all(), step
    index.add(x[:50], ids=np.arange(50) + 1000)
    ids, _ = index.search(x[:5], k=1, probes=8)
    np.testing.assert_array_equal(ids[:, 0], np.arange(5) + 1000)


def test_tiny_fast_index_builds_and_prints_nothing(small, capfd):
    """U2: fast on 5 to 500 rows: no FAISS error, nothing on stderr."""
    x, q = small
    for n in (5, 20, 300):
        index = irli.Index("fast", n_buckets=2).fit(x[:n])
        ids, _ = index.search(q, k=3, probes=2, refine=100)
        want = exact_knn(x[:n], q, 3, "cosine")[0]
        np.testing.assert_array_equal(ids, want)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_crafted_lists_never_reach_the_kernels(saved, tmp_path):
    """C3: positions out of range are refused at load even without checksums."""
    p = copy_of(saved, tmp_path)
    _crafted_lists(p)
    with pytest.raises(IndexFormatError, match="lists.npy"):
        irli.load(p, verify=False)
    rc = main(["info", str(p), "--no-verify"])
    assert rc == 1


def test_interrupted_saves_are_cleaned_up_by_the_next(saved, tmp_path):
    """Hygiene: a save whose process died leaves .NAME.tmp-*; the next save removes it."""
    path = tmp_path / "idx"
    index = irli.load(saved)
    index.save(path)
    code = ("import irli, os, sys; from irli.io import storage\n"
            "real = storage._swap_in\n"
            "storage._swap_in = lambda a, b: os._exit(9)\n"
            f"irli.load({str(saved)!r}).save({str(path)!r})\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 9, p.stderr
    stale = [c for c in tmp_path.iterdir() if c.name.startswith(".idx.tmp-")]
    assert len(stale) == 1
    irli.load(path)  # the earlier save is intact
    # a save in progress (its lock held) is never touched
    busy = tmp_path / ".idx.tmp-busy"
    busy.mkdir()
    from irli.io.locks import hold_save as _hold

    fd = _hold(busy)
    try:
        index.save(path)
        left = sorted(c.name for c in tmp_path.iterdir() if c.name.startswith("."))
        assert left == [".idx.tmp-busy"]
    finally:
        os.close(fd)
    index.save(path)
    assert not [c for c in tmp_path.iterdir() if c.name.startswith(".")]


def _saver(path: str, a: str, b: str, stop) -> None:
    ia, ib = irli.load(a, mmap=False), irli.load(b, mmap=False)
    i = 0
    while not stop.is_set():
        (ia if i % 2 else ib).save(path)
        i += 1


def test_loading_during_saves_never_mixes_versions(small, tmp_path):
    """S1: another process saves two different indexes to the path in turn;
    every load must give one of them whole: scores match the stored vectors."""
    x, q = small
    a, b = tmp_path / "a", tmp_path / "b"
    make(x=x).save(a)
    rng = np.random.default_rng(0)
    make(x=rng.standard_normal(x.shape).astype(np.float32), metric="cosine").save(b)
    path = tmp_path / "live"
    irli.load(a).save(path)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    proc = ctx.Process(target=_saver, args=(str(path), str(a), str(b), stop))
    proc.start()
    try:
        loads = 0
        for i in range(150):
            try:
                index = irli.load(path, mmap=bool(i % 2))
            except IndexFormatError as e:  # replaced three times in a row: said so, never mixed
                assert "replaced" in str(e)
                continue
            ids, scores = index.search(q[:5], k=3, probes=8)
            v = index.get_vectors(ids[:, 0])
            qn = q[:5] / np.linalg.norm(q[:5], axis=1, keepdims=True)
            np.testing.assert_allclose(np.einsum("ij,ij->i", v, qn), scores[:, 0], atol=1e-4)
            loads += 1
        assert loads >= 100
    finally:
        stop.set()
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()


# C1 (compact while another thread searches) is tested for every preset in
# test_search_modes.py::test_search_while_another_thread_adds_removes_and_compacts


def test_changes_from_several_threads_are_all_kept(small, tmp_path):
    """Adds, removes and saves from several threads run one at a time: none is lost."""
    x, q = small
    index = make("fast", x=x[:200])
    errors = []

    def adder(t):
        try:
            for s in range(6):
                lo = 200 + t * 120 + s * 20
                index.add(x[lo : lo + 20], ids=np.arange(lo, lo + 20) + 10_000)
                index.save(tmp_path / f"t{t}")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=adder, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    index.remove(np.arange(50))
    index.compact()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(index) == 200 - 50 + 360
    np.testing.assert_array_equal(index.ids, np.r_[np.arange(50, 200), np.arange(200, 560) + 10_000])
    for t in range(3):
        assert len(irli.load(tmp_path / f"t{t}")) > 150


def test_a_change_whose_save_fails_changes_nothing(small, tmp_path, monkeypatch):
    """save_to: the change is saved before it is applied; a full disk leaves
    the index in memory, what searches see and the saved directory as they
    were, with one SaveError naming the path; the retry then works."""
    import errno

    from irli.errors import SaveError

    x, q = small
    index = make("fast", x=x)
    path = index.save(tmp_path / "idx")
    index.remove([5])  # one removed item: compact has work to do
    index.save(path)
    before = index.search(q[:8], k=5)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("irli.io.storage.np.save", full_disk)
    changes = {"add": lambda: index.add(q[:3], save_to=path), "replace": lambda: index.add(
        q[:1], ids=[0], replace=True, save_to=path), "remove": lambda: index.remove([0, 1], save_to=path),
        "compact": lambda: index.compact(save_to=path)}
    for name, change in changes.items():
        with pytest.raises(SaveError, match=f"{path}: could not save the index \\(No space left on device"):
            change()
        assert len(index) == len(x) - 1 and index.n_removed == 1 and 0 in index and 1 in index, name
        after = index.search(q[:8], k=5)
        np.testing.assert_array_equal(after.ids, before.ids, err_msg=name)
        np.testing.assert_array_equal(after.scores, before.scores, err_msg=name)
    assert len(irli.load(path)) == len(x) - 1 and not list(tmp_path.glob(".idx.tmp-*"))
    monkeypatch.undo()
    index.add(q[:3], save_to=path)
    index.remove([0], save_to=path)
    assert index.compact(save_to=path) == 2
    saved = irli.load(path)
    assert len(saved) == len(index) == len(x) + 1 and saved.n_removed == 0 and 0 not in saved


def test_a_search_holds_its_id_map_while_ids_change(small):
    """The published state's id map is never changed in place: a search
    that took it before an add or remove keeps a consistent one."""
    x, q = small
    index = make(x=x)
    st = index._snapshot()
    keys, pos = st.idmap.keys.copy(), st.idmap.pos.copy()
    index.add(q[:4], ids=[10_000, 10_001, 10_002, 10_003])
    index.remove([2, 10_000])
    np.testing.assert_array_equal(st.idmap.keys, keys)
    np.testing.assert_array_equal(st.idmap.pos, pos)
    assert st.live.all() and index.n_removed == 2


def test_too_few_items_says_how_many_are_needed():
    with pytest.raises(InvalidInputError, match="1 item is too few: an index needs at least 2 items"):
        irli.Index("ivf").fit(np.ones((1, 100_000), np.float32))


@pytest.mark.parametrize("which", ["X", "Y"])
def test_a_sparse_matrix_with_an_index_past_its_shape_is_one_error(which):
    ok_x = sp.random(20, 10, density=0.3, format="csr", random_state=0, dtype=np.float32)
    ok_y = sp.csr_matrix(np.eye(20, 5, dtype=np.float32) + np.eye(20, 5, k=-5, dtype=np.float32))
    bad = (ok_x if which == "X" else ok_y).copy()
    bad.indices[0] = bad.shape[1] + 3  # scipy does not look; it would fail (or read) deep inside
    x, y = (bad, ok_y) if which == "X" else (ok_x, bad)
    with pytest.raises(InvalidInputError, match=f"{which}: column index {bad.shape[1] + 3} is out of range"):
        LabelIndex(n_reps=2, hidden=8, epochs=1).fit(x, y)
