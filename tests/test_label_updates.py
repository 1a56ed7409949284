"""LabelIndex.add / remove on a planted problem (generated data only): the
index is fitted on the points of labels 0 .. 119, then the points of labels
120 .. 149 are added; the planted label sets are the truth."""

import copy

import numpy as np
import pytest
import scipy.sparse as sp

from irli import LabelIndex
from irli.errors import InvalidInputError, IrliError, NotFittedError
from irli.io.datasets import synthetic_labels
from irli.metrics import precision_at_k

FAST = {"n_reps": 3, "hidden": 64, "epochs": 8, "repartition_every": 3, "lr": 0.01, "batch_size": 128, "seed": 1}
L0, L = 120, 150  # labels at fit, labels after the add


@pytest.fixture(scope="module")
def split():
    """(fit, add, old test, new test) as (X, Y) pairs: the fit points carry
    only labels < L0, the added and new test points at least one label >= L0."""
    x, y = synthetic_labels(3000, L, n_features=600, signature=8, keep=0.7, noise=2, seed=3)
    y = y.tocsr()
    new = np.asarray(y[:, L0:].sum(axis=1)).ravel() > 0
    tr, te = np.arange(2400), np.arange(2400, 3000)
    parts = (tr[~new[tr]], tr[new[tr]], te[~new[te]], te[new[te]])
    return [(x[p], y[p]) for p in parts]


@pytest.fixture(scope="module")
def base(split):
    (x, y), *_ = split
    return LabelIndex(**FAST).fit(x, y[:, :L0])


@pytest.fixture(scope="module")
def grown(base, split):
    """`base` after adding the points of the new labels (a copy)."""
    _, (xa, ya), _, _ = split
    return copy.deepcopy(base).add(xa, ya, threads=1)


def _new_label_recall(ids, y, k=5):
    """Share of the (point, label >= L0) pairs of y whose label is in the point's top k."""
    found = total = 0
    for i in range(y.shape[0]):
        truth = y.indices[y.indptr[i]:y.indptr[i + 1]]
        truth = truth[truth >= L0]
        found += np.isin(truth, ids[i, :k]).sum()
        total += truth.size
    return found / total


def _everything(index, x):
    """Predict with every bucket probed and k = all labels: the labels found."""
    res = index.predict(x, k=index.n_labels, probes=index.fitted_config_.n_buckets)
    return set(np.unique(res.ids[res.ids >= 0]).tolist())


def test_added_labels_are_found_and_old_ones_still_are(base, grown, split):
    _, (xa, ya), (xo, yo), (xn, yn) = split
    assert base.n_labels == L0 and grown.n_labels == L == len(grown)
    assert (base.predict(xn, k=5).ids < L0).all()  # nothing to find before the add
    assert _new_label_recall(grown.predict(xn, k=5).ids, yn) >= 0.8  # held-out points (0.93 measured)
    assert _new_label_recall(grown.predict(xa, k=5).ids, ya) >= 0.9  # their own points (0.97)
    assert precision_at_k(grown.predict(xn, k=1).ids, yn, 1) >= 0.8
    before = precision_at_k(base.predict(xo, k=1).ids, yo, 1)
    after = precision_at_k(grown.predict(xo, k=1).ids, yo, 1)
    assert before >= 0.65 and after >= before - 0.05


def test_known_labels_keep_buckets_and_scorer(base, grown, split):
    a, b = base.model_, grown.model_
    np.testing.assert_array_equal(b.assign[:, :L0], a.assign)
    np.testing.assert_array_equal(b.v[:L0], a.v)
    np.testing.assert_array_equal(b.c[:L0], a.c)
    assert ((b.assign >= 0) & (b.assign < b.n_buckets)).all()
    counts = np.bincount(split[1][1].indices, minlength=L)
    np.testing.assert_array_equal(grown.label_counts_[L0:], counts[L0:])
    assert grown.n_train_ == base.n_train_ + split[1][0].shape[0]
    # power of K choices under the load cap: no bucket past max_load x the mean
    cap = np.ceil(grown.fitted_config_.max_load * L / b.n_buckets)
    assert max(np.bincount(b.assign[r], minlength=b.n_buckets).max() for r in range(b.n_reps)) <= cap


def test_adding_labels_to_a_model_without_scorer(split):
    (x, y), (xa, ya), _, (xn, yn) = split
    index = LabelIndex(**FAST, scorer=False).fit(x, y[:, :L0])
    index.add(xa, ya, threads=1)
    assert index.model_.v is None and index.n_labels == L
    assert _new_label_recall(index.predict(xn, k=5).ids, yn) >= 0.5  # 0.75 measured


def test_adding_to_a_model_saved_without_a_training_sample(base, split):
    """Indexes saved before add existed keep no background sample: the new
    labels are then learned against the added points only, and still found."""
    _, (xa, ya), _, (xn, yn) = split
    index = copy.deepcopy(base)
    index.model_ = index.model_.changed(background=None)
    index.add(xa, ya, threads=1)
    assert index.model_.background is None and index.n_labels == L
    assert _new_label_recall(index.predict(xn, k=5).ids, yn) >= 0.8


def test_add_never_writes_what_a_published_model_reads(base, split):
    """A prediction in another thread may hold the old model: two adds (the
    second appending into the first's growth buffer) and a remove leave
    every array of the earlier models as it was."""
    _, (xa, ya), _, _ = split
    index = copy.deepcopy(base)
    half = xa.shape[0] // 2
    models = [index.model_]
    for rows in (slice(0, half), slice(half, None)):
        index.add(xa[rows], ya[rows], threads=1)
        models.append(index.model_)
    index.remove([L0, 5])
    models.append(index.model_)
    assert index.n_labels == L and len({id(m) for m in models}) == 4
    frozen = [{k: np.array(a) for k, a in m.arrays().items()} | {"offsets": m.offsets.copy(),
                                                               "members": m.members.copy()} for m in models]
    index.remove([6])
    index.add(xa[:50], ya[:50], threads=1)
    for m, arrays in zip(models, frozen):
        now = m.arrays() | {"offsets": m.offsets, "members": m.members}
        for name, a in arrays.items():
            np.testing.assert_array_equal(now[name], a, err_msg=name)


def test_remove_labels_never_come_back(grown, split):
    _, _, (xo, _), (xn, _) = split
    index = copy.deepcopy(grown)
    x = sp.vstack([xo, xn]).tocsr()
    top = np.bincount(index.predict(x, k=1).ids[:, 0], minlength=L)
    gone = [int(i) for i in np.argsort(-top)[:3]] + [L0 + 1]  # the most predicted, and a new one
    assert index.remove(gone) == 4 and len(index) == L - 4 and index.n_labels == L
    seen = _everything(index, x)
    assert not seen & set(gone)
    assert seen == set(range(L)) - set(gone)  # every other label is still found
    assert not set(index.predict(x, k=5).ids.ravel().tolist()) & set(gone)


def test_remove_checks_every_id_first(grown):
    index = copy.deepcopy(grown)
    model = index.model_
    for bad, word in (([3, L], f"label {L} "), ([-1], "label -1 "), ([2, 10**9], "label 1000000000 "),
                      (["a"], "integers"), ([1.5], "integers"), ([[1, 2]], "1-D")):
        with pytest.raises(InvalidInputError, match=word) as e:
            index.remove(bad)
        assert "\n" not in str(e.value)
        assert index.model_ is model  # all or nothing: label 3, 2 are still there
    assert index.remove([3, 3]) == 1
    with pytest.raises(InvalidInputError, match="label 3 is not in the index"):
        index.remove([3])  # already removed
    assert index.remove([]) == 0
    with pytest.raises(NotFittedError):
        LabelIndex().remove([1])


def test_a_removed_label_comes_back_when_its_points_are_added(base, split):
    (x, y), _, _, _ = split
    index = copy.deepcopy(base)
    label = int(np.argmax(np.bincount(y.indices, minlength=L0)))  # the most common
    rows = np.flatnonzero(np.asarray(y[:, label].todense()).ravel())[:40]
    found = (index.predict(x[rows], k=3).ids == label).any(axis=1).mean()
    index.remove([label])
    assert label not in _everything(index, x[rows])
    index.add(x[rows], y[rows][:, :L0], threads=1)
    assert index.label_counts_[label] == base.label_counts_[label] + rows.size and len(index) == L0
    np.testing.assert_array_equal(index.model_.assign, base.model_.assign)  # as it was
    assert found >= 0.8 and (index.predict(x[rows], k=3).ids == label).any(axis=1).mean() == found


BAD = {
    "features": (lambda xa, ya: (xa[:, :599], ya), "599 features"),
    "nan": (lambda xa, ya: (sp.csr_matrix(np.where(np.arange(600) == 3, np.nan, 1.0)[None]), [[L0]]), "NaN"),
    "no rows": (lambda xa, ya: (xa[:0], ya[:0]), "no rows"),
    "negative id": (lambda xa, ya: (xa[:2], [[L0], [-3]]), "negative label id -3"),
    "float id": (lambda xa, ya: (xa[:2], [[L0], [2.5]]), "integers"),
    "rows differ": (lambda xa, ya: (xa[:3], ya[:2]), "Y has 2 rows but X has 3"),
    "no labels": (lambda xa, ya: (xa[:2], [[], []]), "no labels"),
    "not 0/1": (lambda xa, ya: (xa[:2], 2 * ya[:2]), "only 0 and 1"),
    "far id": (lambda xa, ya: (xa[:2], [[L0], [10**8]]), "label id 100000000"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_leaves_the_index_unchanged(base, split, case, tmp_path):
    _, (xa, ya), (xo, _), _ = split
    index = copy.deepcopy(base)
    make, word = BAD[case]
    before = index.predict(xo, k=5)
    model, counts, n_train = index.model_, index.label_counts_.copy(), index.n_train_
    with pytest.raises(InvalidInputError, match=word) as e:
        index.add(*make(xa, ya), save_to=tmp_path / "saved")
    assert "\n" not in str(e.value)
    assert index.model_ is model and index.n_train_ == n_train and index.n_labels == L0
    np.testing.assert_array_equal(index.label_counts_, counts)
    np.testing.assert_array_equal(index.predict(xo, k=5).ids, before.ids)
    assert not (tmp_path / "saved").exists()


def test_add_on_an_unfitted_index():
    with pytest.raises(NotFittedError):
        LabelIndex().add(np.ones((2, 3)), [[0], [1]])


@pytest.mark.parametrize("mmap", [False, True])
def test_added_and_removed_labels_survive_save_and_load(grown, split, tmp_path, mmap):
    _, (xa, ya), (xo, _), (xn, _) = split
    index = copy.deepcopy(grown)
    index.remove([L0 + 2, 7])
    x = sp.vstack([xo, xn]).tocsr()
    want = index.predict(x, k=10)
    again = LabelIndex.load(index.save(tmp_path / "i"), mmap=mmap)
    assert again.n_labels == L and len(again) == L - 2
    got = again.predict(x, k=10)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
    np.testing.assert_array_equal(again.label_counts_, index.label_counts_)
    assert again.n_train_ == index.n_train_
    assert not _everything(again, x) & {L0 + 2, 7}
    # a loaded (memory-mapped) index takes further changes; the files are not written
    rows = np.flatnonzero(np.asarray(ya[:, [7, L0 + 2]].sum(axis=1)).ravel() == 0)[:30]
    again.add(xa[rows], ya[rows], threads=1)
    again.remove([L0 + 3])
    assert not _everything(again, x) & {L0 + 2, L0 + 3, 7}
    np.testing.assert_array_equal(LabelIndex.load(tmp_path / "i").predict(x, k=10).ids, want.ids)


def test_save_to_saves_before_publishing(base, split, tmp_path):
    _, (xa, ya), _, (xn, _) = split
    index = copy.deepcopy(base)
    index.add(xa, ya, save_to=tmp_path / "a", threads=1)
    np.testing.assert_array_equal(LabelIndex.load(tmp_path / "a").predict(xn, k=5).ids,
                                  index.predict(xn, k=5).ids)
    assert index.remove([L0], save_to=tmp_path / "b") == 1
    assert L0 not in _everything(LabelIndex.load(tmp_path / "b"), xn)
    # a save that cannot be made changes nothing
    (tmp_path / "file").write_text("not an index")
    model = index.model_
    with pytest.raises(IrliError):
        index.add(xa[:20], [[L + 1]] * 20, save_to=tmp_path / "file", threads=1)
    with pytest.raises(IrliError):
        index.remove([L0 + 1], save_to=tmp_path / "file")
    assert index.model_ is model and index.n_labels == L and L0 + 1 in _everything(index, xn)
