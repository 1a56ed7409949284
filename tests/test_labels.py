"""Extreme classification: the XC text format, P@k / nDCG@k / PSP@k, and the
LabelIndex on a planted problem (generated data only)."""

import numpy as np
import pytest
import scipy.sparse as sp

import irli
from irli import LabelIndex
from irli.cli import main
from irli.errors import IndexFormatError, InvalidInputError, NotFittedError
from irli.io.datasets import synthetic_labels
from irli.labels.xcformat import (
    label_matrix,
    looks_like_xc,
    read_sparse,
    read_xc,
    read_xc_split,
    write_sparse,
    write_xc,
)
from irli.metrics import (
    label_coverage,
    ndcg_at_k,
    precision_at_k,
    propensity,
    propensity_from_counts,
    psp_at_k,
)

FAST = dict(n_reps=3, hidden=64, epochs=8, repartition_every=3, lr=0.01, batch_size=128, seed=1)


@pytest.fixture(scope="module")
def planted():
    """Train/test split of a planted set: 120 labels in 11 groups."""
    x, y = synthetic_labels(3000, 120, n_features=600, signature=8, keep=0.7, noise=2, seed=3)
    return (x[:2500], y[:2500]), (x[2500:], y[2500:])


@pytest.fixture(scope="module")
def fitted(planted):
    (x, y), _ = planted
    return LabelIndex(**FAST).fit(x, y)


# -- format -------------------------------------------------------------------------
def _random_xy(rng, n=40, f=30, lab=12):
    x = sp.random(n, f, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    x.data = np.round(x.data * 100) / 100 + 0.01
    y = (sp.random(n, lab, density=0.15, format="csr", random_state=rng) > 0).astype(np.float32)
    y = sp.csr_matrix(y)
    return x, y


def test_xc_round_trip_with_empty_label_rows(tmp_path):
    rng = np.random.default_rng(0)
    x, y = _random_xy(rng)
    y = sp.lil_matrix(y)
    y[0, :] = 0
    y[5, :] = 0
    y = sp.csr_matrix(y)
    p = write_xc(tmp_path / "d.txt", x, y)
    assert looks_like_xc(p)
    lines = p.read_text().split("\n")
    assert lines[0] == f"{x.shape[0]} {x.shape[1]} {y.shape[1]}" and lines[1].startswith(" ")
    x2, y2 = read_xc(p)
    assert x2.shape == x.shape and y2.shape == y.shape
    assert abs(x2 - x).max() < 1e-5 and (y2 != y).nnz == 0
    assert np.diff(y2.indptr)[[0, 5]].tolist() == [0, 0]


def test_split_format_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x, y = _random_xy(rng)
    write_sparse(tmp_path / "X.txt", x)
    write_sparse(tmp_path / "Y.txt", y)
    x2, y2 = read_xc_split(tmp_path / "X.txt", tmp_path / "Y.txt")
    assert abs(x2 - x).max() < 1e-5 and (y2 != y).nnz == 0
    assert read_sparse(tmp_path / "X.txt").shape == x.shape


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ("2 3\n0 0:1\n1 1:1\n", "header must be 3"),
    ("2 3 4\n0 0:1\n", "header says 2 rows but the file has 1"),
    ("1 3 4\n7 0:1\n", "label id 7 out of range"),
    ("1 3 4\n0 5:1\n", "feature id 5 out of range"),
    ("1 3 4\n0 1-1\n", "malformed feature pair '1-1'"),
    ("1 3 4\n0 1:x\n", "malformed feature pair '1:x'"),
    ("1 3 4\na,1 0:1\n", "malformed label id 'a'"),
    ("1 3 4\n0 1:nan\n", "malformed feature pair"),
])
def test_malformed_xc_files(tmp_path, text, message):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(InvalidInputError, match=message):
        read_xc(p)


def test_split_format_errors(tmp_path):
    (tmp_path / "X.txt").write_text("2 3\n0:1\n1:1\n")
    (tmp_path / "Y.txt").write_text("3 2\n0:1\n1:1\n0:1\n")
    with pytest.raises(InvalidInputError, match="has 2 rows but"):
        read_xc_split(tmp_path / "X.txt", tmp_path / "Y.txt")
    (tmp_path / "Z.txt").write_text("1 2\n4:1\n")
    with pytest.raises(InvalidInputError, match="column id 4 out of range"):
        read_sparse(tmp_path / "Z.txt")
    with pytest.raises(InvalidInputError, match="no such file"):
        read_sparse(tmp_path / "missing.txt")


def test_label_matrix_from_lists_and_errors():
    m = label_matrix([[0, 2], [], [1, 1]])
    assert m.shape == (3, 3) and m.toarray().tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    with pytest.raises(InvalidInputError, match="negative label id"):
        label_matrix([[0, -1]])
    with pytest.raises(InvalidInputError, match="out of range for 2 labels"):
        label_matrix([[0, 2]], n_labels=2)
    with pytest.raises(InvalidInputError, match="only 0 and 1"):
        label_matrix(np.array([[0, 2.0]]))
    with pytest.raises(InvalidInputError, match="Y has 1 rows but X has 2"):
        label_matrix([[0]], n_rows=2)


# -- metrics ------------------------------------------------------------------------
def test_precision_ndcg_by_hand():
    y = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=np.float32))
    pred = np.array([[0, 2, 1], [3, 0, -1], [1, 2, 3]])
    assert precision_at_k(pred, y, 1) == pytest.approx(2 / 3)
    assert precision_at_k(pred, y, 3) == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)  # divided by k, not min(k, |y|)
    d = 1 / np.log2(np.arange(2, 5))
    row0 = (d[0] + d[2]) / (d[0] + d[1])
    assert ndcg_at_k(pred, y, 3) == pytest.approx((row0 + 1.0 + 0.0) / 3)
    with pytest.raises(InvalidInputError, match="k=4 out of range"):
        precision_at_k(pred, y, 4)


def test_propensity_and_psp():
    ytr = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 0, 1]] * 5, dtype=np.float32))
    p = propensity(ytr)
    assert p[0] > p[1] and np.allclose(p[1], p[2])  # frequent labels are more likely to be observed
    assert np.allclose(p, propensity_from_counts([20, 5, 5], 20))
    y = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 1]], dtype=np.float32))
    perfect = np.array([[1, 0], [2, 0]])
    assert psp_at_k(perfect, y, 1, p) == pytest.approx(1.0)
    common_first = np.array([[0, 1], [2, 0]])  # the rare label ranked second costs PSP@1 but not P@1
    assert precision_at_k(common_first, y, 1) == 1.0
    assert psp_at_k(common_first, y, 1, p) < 1.0
    raw = psp_at_k(perfect, y, 1, p, normalize=False)
    assert raw == pytest.approx((1 / p[1] + 1 / p[2]) / 2)
    assert label_coverage(np.array([[0, 1], [0, 1]]), y, 2) == pytest.approx(2 / 3)


# -- the label index ------------------------------------------------------------------
def test_planted_labels_are_recovered(planted, fitted):
    (x, y), (xt, yt) = planted
    ids, scores = fitted.predict(xt, k=5)
    assert ids.shape == (xt.shape[0], 5) and ids.dtype == np.int64
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    # majority-label baseline for reference; the planted structure is far more informative
    top = np.argsort(-np.asarray(y.sum(0)).ravel())[:5]
    base = precision_at_k(np.tile(top, (xt.shape[0], 1)), yt, 1)
    p1 = precision_at_k(ids, yt, 1)
    assert p1 >= 0.8 and p1 > base + 0.4
    assert precision_at_k(ids, yt, 5) >= 0.35


def test_router_alone_ranks_labels(planted, fitted):
    """Summed bucket probabilities, without the scorer, still beat chance."""
    _, (xt, yt) = planted
    ids, _ = fitted.predict(xt, k=1, rerank=False, probes=fitted.fitted_config_.n_buckets)
    assert precision_at_k(ids, yt, 1) >= 0.4


def test_repartition_moves_labels_and_keeps_load(fitted):
    cfg = fitted.fitted_config_
    moved = [h["moved"] for h in fitted.history_ if "moved" in h]
    assert moved and max(max(m) for m in moved) > 0
    sizes = np.diff(fitted.model_.offsets, axis=1)
    cap = int(np.ceil(cfg.max_load * fitted.n_labels / cfg.n_buckets))
    assert sizes.max() <= cap and sizes.sum(axis=1).tolist() == [fitted.n_labels] * cfg.n_reps


def test_more_probes_more_candidates(planted, fitted):
    _, (xt, _) = planted
    _, _, c1 = fitted.predict_with_counts(xt, k=3, probes=1)
    _, _, c4 = fitted.predict_with_counts(xt, k=3, probes=4)
    _, _, c4v = fitted.predict_with_counts(xt, k=3, probes=4, min_votes=2)
    assert c1.mean() < c4.mean() and (c4v <= c4).all() and c4v.mean() < c4.mean()


def test_points_without_labels_and_dense_input(planted):
    (x, y), (xt, _) = planted
    y = sp.lil_matrix(y[:600])
    y[:50, :] = 0
    index = LabelIndex(**{**FAST, "epochs": 2}).fit(x[:600].toarray(), sp.csr_matrix(y))
    ids, _ = index.predict(xt[:10].toarray(), k=3)
    assert ids.shape == (10, 3) and (ids >= 0).all()


def test_save_load_same_predictions(tmp_path, planted, fitted):
    _, (xt, _) = planted
    fitted.save(tmp_path / "lab")
    again = irli.load(tmp_path / "lab")
    assert isinstance(again, LabelIndex)
    a, sa = fitted.predict(xt, k=5)
    b, sb = again.predict(xt, k=5)
    assert (a == b).all() and np.allclose(sa, sb)
    with pytest.raises(IndexFormatError, match="label index"):
        irli.Index.load(tmp_path / "lab")
    import json

    from irli.io.storage import MANIFEST, manifest_sha256

    man = json.loads((tmp_path / "lab" / MANIFEST).read_text())
    assert man["task"] == "labels"
    man["task"] = "xml"  # the name directories written before used
    man["manifest_sha256"] = manifest_sha256(man)
    (tmp_path / "lab" / MANIFEST).write_text(json.dumps(man))
    assert (irli.load(tmp_path / "lab").predict(xt, k=5)[0] == a).all()
    w = tmp_path / "lab" / "w2.npy"
    w.write_bytes(w.read_bytes()[:-8])
    with pytest.raises(IndexFormatError, match="truncated"):
        LabelIndex.load(tmp_path / "lab")


def test_bad_input_errors(planted, fitted):
    (x, y), (xt, _) = planted
    with pytest.raises(NotFittedError, match="not fitted"):
        LabelIndex().predict(xt)
    with pytest.raises(InvalidInputError, match="features, the index was fitted on 600"):
        fitted.predict(xt[:, :100])
    with pytest.raises(InvalidInputError, match="k must be a positive integer, got 0"):
        fitted.predict(xt, k=0)
    with pytest.raises(InvalidInputError, match="probes must be a positive integer, got 0"):
        fitted.predict(xt, probes=0)
    with pytest.raises(InvalidInputError, match="min_votes=9 exceeds the 3 repetitions"):
        fitted.predict(xt, min_votes=9)
    # the rule of every index (irli.params): probes beyond B are clamped, k beyond the labels pads with -1
    b = fitted.fitted_config_.n_buckets
    np.testing.assert_array_equal(fitted.predict(xt[:5], probes=99)[0], fitted.predict(xt[:5], probes=b)[0])
    ids, scores = fitted.predict(xt[:2], k=fitted.n_labels + 3, probes=b)
    assert (ids[:, -3:] == -1).all() and np.isneginf(scores[:, -3:]).all()
    bad = xt[:5].toarray()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        fitted.predict(bad)
    with pytest.raises(InvalidInputError, match="no labels at all"):
        LabelIndex(**FAST).fit(x[:20], sp.csr_matrix(y[:20].shape, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="Y has 10 rows but X has 20"):
        LabelIndex(**FAST).fit(x[:20], y[:10])
    with pytest.raises(InvalidInputError, match="X has no rows"):
        LabelIndex(**FAST).fit(x[:0], y[:0])
    with pytest.raises(irli.ConfigError, match="unknown label-index option 'bogus'"):
        LabelIndex(bogus=1)


def test_one_point_per_call_equals_its_row_of_a_batch(planted, fitted):
    _, (xt, _) = planted
    ids, scores, cand = fitted.predict_with_counts(xt, k=5, threads=1)
    for i in range(40):
        a, s, c = fitted.predict_with_counts(xt[i], k=5)  # one CSR row
        np.testing.assert_array_equal(a[0], ids[i])
        np.testing.assert_array_equal(s[0], scores[i])
        assert c[0] == cand[i]
    dense = fitted.predict(xt[:3].toarray(), k=5)
    np.testing.assert_array_equal(dense[0], ids[:3])
    # rows that are not yet unit length, or stored in float64 / unsorted, give the same answers
    scaled = sp.csr_matrix(xt[:20].multiply(3.5), dtype=np.float64)
    np.testing.assert_array_equal(fitted.predict(scaled, k=5)[0], ids[:20])


def test_predictions_do_not_depend_on_threads(planted, fitted):
    _, (xt, _) = planted
    one = fitted.predict_with_counts(xt, k=5, threads=1)
    for t in (2, 3, None):
        many = fitted.predict_with_counts(xt, k=5, threads=t)
        for a, b in zip(one, many):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("col", [600, 100_000, -3])
def test_feature_ids_out_of_range_are_refused(fitted, col):
    """scipy builds such matrices without checking; a prediction must refuse
    them (it once read past the weights: NaN scores or a crash)."""
    m = sp.csr_matrix((np.ones(1, np.float32), np.array([col]), np.array([0, 1])), shape=(1, 600))
    with pytest.raises(InvalidInputError, match=r"X row 0: a feature index outside \[0, 600\)"):
        fitted.predict(m)
    rows = sp.vstack([sp.csr_matrix((1, 600), dtype=np.float32)] * 3 + [m]).tocsr()
    rows.indices[-1] = col  # vstack may check: put the bad index back
    with pytest.raises(InvalidInputError, match="X row 3"):
        fitted.predict(rows)


def test_cli_build_eval_info(tmp_path, planted, capsys):
    (x, y), (xt, yt) = planted
    write_xc(tmp_path / "train.txt", x[:800], y[:800])
    write_xc(tmp_path / "test.txt", xt, yt)
    out = tmp_path / "idx"
    assert main(["build", str(tmp_path / "train.txt"), "-o", str(out), "-q", "--set", "epochs=3",
                 "--set", "hidden=32", "--set", "lr=0.01"]) == 0
    assert main(["eval", str(out), str(tmp_path / "test.txt"), "--probes", "1,2"]) == 0
    text = capsys.readouterr().out
    assert "label index" not in text and "P@1" in text and "PSP@5" in text
    rows = [line.split() for line in text.splitlines() if line.strip().split()[:1] in (["1"], ["2"])]
    assert len(rows) == 2 and all(0 <= float(v) <= 100 for r in rows for v in r[1:-1])
    assert main(["info", str(out)]) == 0
    assert "label index" in capsys.readouterr().out
    (tmp_path / "bad.txt").write_text("1 3 4\n9 0:1\n")
    assert main(["build", str(tmp_path / "bad.txt"), "-o", str(tmp_path / "x"), "-q"]) == 1
    assert "label id 9 out of range" in capsys.readouterr().err


def test_sparse_optimiser_and_sampled_scorer_path(planted):
    """The path big models take (sparse Adam, sampled scorer negatives) also learns."""
    (x, y), (xt, yt) = planted
    index = LabelIndex(**{**FAST, "sparse_above": 1, "full_scorer_labels": 10}).fit(x, y)
    ids, _ = index.predict(xt, k=1)
    assert precision_at_k(ids, yt, 1) >= 0.6
