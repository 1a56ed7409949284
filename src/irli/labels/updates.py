"""Changing a LabelIndex's labels without retraining: `add` (new training
points, carrying labels known or new) and `remove` (labels no longer
predicted).

Labels that already have training points keep their buckets and scorer (a
removed one that the points carry is predicted again, as it was). A label
with none so far (an id past the last one, a column never seen in training)
is placed and learned from the points given: in every repetition it goes to
the least loaded of the top-K buckets of its representative, the sum of the
router's bucket probabilities over its points (as in re-partitioning,
irli.learn.labels.place_labels), and its scorer is a logistic regression on
the routers' frozen hidden layer, against the other points given and a
sample of the training set kept with the model (learn_new_scorers). The
routers and the other labels do not change.

Limits: without the scorer (scorer=False) labels are ranked by their
buckets' probabilities alone, and a new label, sitting in the buckets its
points route to, ties with or outranks the labels trained there (on a
planted set, old labels' P@1 fell from 0.70 to 0.42): refit such a model
instead. An index saved before labels could be added keeps no training
sample; its new labels are learned against the added points only and show
up more often on other points.

Each change is checked in full before anything changes, builds a new
LabelModel beside the published one (saved first with `save_to`) and
publishes it in one assignment: a prediction in another thread sees the
index as it was before the change or after it, never a mix.
"""

from __future__ import annotations

import os
from typing import Self

import numpy as np

from ..errors import InvalidInputError
from ..index.updates import append
from ..learn.labels import learn_new_scorers, place_labels
from ..threads import UpdateLock, limit
from ..validation import as_ids
from .xcformat import label_matrix

# label ids an add may allocate beyond the new labels it names (the gaps are
# never predicted until points carrying them are added)
_GAP = 1024
_MAX_COLUMNS = 2**31 - 1


class LabelChanges(UpdateLock):
    """LabelIndex's `add` and `remove`, and its update lock."""

    _transient = ("_update_lock", "_buffers")

    def add(self, X, Y, save_to: str | os.PathLike | None = None, threads: int | None = None) -> Self:
        """Add training points without retraining.

        X: CSR / dense (n, F) features; Y: their label sets, CSR / dense
        (n, L') 0/1 or n lists of label ids (as for `fit`). Ids from
        n_labels on are new labels (n_labels grows to the largest + 1).
        Labels with no training point so far (new, or never seen) are placed
        in every repetition by the router's scores on their points and get a
        scorer learned from them; labels already trained keep their buckets
        and scorer (removed ones that Y names are predicted again).
        Everything is checked before anything changes: an InvalidInputError
        leaves the index as it was. With `save_to` (a directory), the
        changed index is saved there before it is published; a failed save
        (irli.errors.SaveError, IndexFormatError) changes nothing.
        Predictions in other threads see the index before or after the add.
        `threads` pins the libraries for the call (see irli.threads).
        Returns self.
        """
        with self._lock, limit(threads):
            self._check_fitted()
            m = self.model_
            x = self._features(X, fitting=True)
            if x.shape[1] != m.n_features:
                raise InvalidInputError(f"X has {x.shape[1]} features, the index was fitted on {m.n_features}")
            y = _label_rows(Y, x.shape[0], m.n_labels)
            if y.nnz == 0:
                raise InvalidInputError("Y holds no labels; nothing to add")
            n, L, cols = x.shape[0], m.n_labels, y.shape[1]
            named = np.unique(y.indices[y.indices >= L]).size  # checked before any (L',) array is made
            if cols - L - named > max(_GAP, 16 * named):
                raise InvalidInputError(f"label id {cols - 1} would add {cols - L} label columns for {named} new "
                                        f"label(s); number new labels from {L} on")
            count = np.bincount(y.indices, minlength=cols).astype(np.int64)
            live = np.zeros(cols, dtype=bool)
            live[:L] = True if m.live is None else m.live
            old = np.zeros(cols, dtype=np.int64)
            old[:L] = self.label_counts_
            fresh = np.flatnonzero((count > 0) & (old == 0))
            # checked: from here on nothing can fail on the input; the new model is built aside
            model, bufs = self._added(m, x, y, fresh, live)
            counts = old + count
            n_train = self.n_train_ + n
            if save_to is not None:
                self._write(save_to, model, counts, n_train)
            self.__dict__["_buffers"] = bufs
            self.label_counts_, self.n_train_ = counts, n_train
            self.model_ = model  # published last, in one step
            return self

    def _added(self, m, x, y, fresh: np.ndarray, live: np.ndarray):
        """The model after adding points x (CSR, scaled) with labels y (CSR
        (n, L')) whose labels `fresh` int64 (f,) are placed and learned anew;
        `live` bool (L',) before the add (every label y names is live after
        it). Returns (model, growth buffers)."""
        cfg = self.fitted_config_
        L, cols = m.n_labels, y.shape[1]
        h = m.hidden(x)
        live = live | (np.diff(y.tocsc().indptr) > 0)
        staying = live[:L].copy()  # the labels that keep their buckets
        staying[fresh[fresh < L]] = False
        seed = cfg.seed + self.n_train_  # a different draw for each add
        assign, v, c, bufs = m.assign, m.v, m.c, self.__dict__.get("_buffers") or {}
        if fresh.size:
            loads = np.stack([np.bincount(m.assign[r][staying], minlength=m.n_buckets) for r in range(m.n_reps)])
            yl = y[:, fresh].T.tocsr()  # (f, n): the points of each fresh label
            assign = np.zeros((m.n_reps, cols), dtype=np.int32)  # columns never seen sit in bucket 0, not live
            assign[:, :L] = m.assign
            assign[:, fresh] = place_labels(m, h, yl, loads, cfg, seed)
        if fresh.size and m.v is not None:
            bg = m.background
            weight = self.n_train_ / bg.shape[0] if bg is not None and bg.shape[0] else 0.0
            vf, cf = learn_new_scorers(h, yl, bg, weight, cfg)
            v, c, bufs = self._scorer_rows(m, cols, fresh, vf, cf)
        return m.changed(assign=assign, v=v, c=c, live=None if live.all() else live,
                         background=_reservoir(m.background, h, self.n_train_, seed)), bufs

    def _scorer_rows(self, m, cols: int, fresh: np.ndarray, vf: np.ndarray, cf: np.ndarray):
        """v (L', D) and c (L',) with rows `fresh` set to vf, cf (others of the
        new columns zero), never writing rows a published model reads: new
        rows go past the end of a growth buffer (appends copy O(total) in
        all), and a change to old rows copies. Returns (v, c, buffers)."""
        L = m.n_labels
        if fresh.size and fresh.min() < L:
            v = np.zeros((cols, m.v.shape[1]), dtype=np.float32)
            c = np.zeros(cols, dtype=np.float32)
            v[:L], c[:L] = m.v, m.c
            v[fresh], c[fresh] = vf, cf
            return v, c, {}
        bufs = dict(self.__dict__.get("_buffers") or {})
        out = []
        for name, view, rows in (("v", m.v, vf), ("c", m.c, cf)):
            block = np.zeros((cols - L,) + view.shape[1:], dtype=view.dtype)
            block[fresh - L] = rows
            out.append(append(bufs, name, view, block))
        return out[0], out[1], bufs

    def remove(self, labels, save_to: str | os.PathLike | None = None) -> int:
        """Stop predicting `labels` (label ids, int (k,)): they are never
        returned again (unless `add` brings points carrying them: they come
        back with their buckets and scorer). An id that is not in the index (out of range, already
        removed, or never seen) is an InvalidInputError and nothing changes.
        With `save_to`, saved there first (as for `add`). Returns the
        number of labels removed."""
        with self._lock:
            self._check_fitted()
            m = self.model_
            raw = np.asarray(labels)
            if raw.dtype.kind in "iu" and raw.size and raw.min() < 0:
                raise InvalidInputError(f"label {int(raw.min())} is not in the index (label ids are >= 0)")
            want = as_ids(labels, name="labels")
            live = np.ones(m.n_labels, dtype=bool) if m.live is None else np.array(m.live, dtype=bool)
            out = (want >= m.n_labels) | ~live[np.minimum(want, m.n_labels - 1)]
            if out.any():
                raise InvalidInputError(f"label {int(want[np.argmax(out)])} is not in the index")
            want = np.unique(want)
            if not want.size:
                return 0
            live[want] = False
            model = m.changed(live=live)
            if save_to is not None:
                self._write(save_to, model, self.label_counts_, self.n_train_)
            self.model_ = model
            return int(want.size)


def _label_rows(Y, n: int, n_labels: int):
    """Y as CSR float32 (n, max(L, largest id + 1)) of 0/1 (label_matrix's
    checks; list ids are not held to the label-space rule of a new index,
    which counts the labels of the whole training set)."""
    import scipy.sparse as sp

    if sp.issparse(Y) or (isinstance(Y, np.ndarray) and Y.ndim == 2):
        y = label_matrix(Y, n_rows=n)
    else:
        y = label_matrix(Y, n_rows=n, n_labels=_MAX_COLUMNS)
    cols = max(n_labels, int(y.indices.max()) + 1 if y.nnz else 0)
    if y.shape[1] != cols:
        y = sp.csr_matrix((y.data, y.indices, y.indptr), shape=(n, cols))
    return y


def _reservoir(bg: np.ndarray | None, h: np.ndarray, n_before: int, seed: int) -> np.ndarray | None:
    """The training sample `bg` (S, D) after adding n points with hidden
    layer h (n, D) to the n_before it stood for: a share n / (n_before + n)
    of its rows, at random, replaced by random new rows (a new array)."""
    if bg is None or not bg.shape[0]:
        return bg
    s, n = bg.shape[0], h.shape[0]
    k = min(n, s, round(s * n / max(n_before + n, 1)))
    rng = np.random.default_rng([seed, 0xB6A])
    out = np.array(bg, dtype=np.float32)
    out[rng.choice(s, k, replace=False)] = h[rng.choice(n, k, replace=False)]
    return out
