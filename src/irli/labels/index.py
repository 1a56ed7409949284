"""`LabelIndex`: IRLI for extreme multi-label classification.

The items are labels, which have no vectors: a label index learns from
(features, label set) pairs which buckets each label belongs in and which
buckets a new point should open, then ranks the labels found there.

    from irli import LabelIndex
    index = LabelIndex().fit(X, Y)          # X: CSR (n, F) or dense; Y: CSR 0/1 or lists
    ids, scores = index.predict(X_test, k=5)
    index.add(X_new, Y_new)                 # new points, new labels (see irli.labels.updates)
    index.remove([3, 17])                   # labels no longer predicted
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LabelConfig
from ..errors import IndexFormatError, InvalidInputError, NotFittedError
from ..io.checks import check_label_index
from ..io.storage import read_index, write_index
from ..model.labels import LabelModel
from ..params import SearchParams
from ..progress import Callback
from ..result import SearchResult
from .updates import LabelChanges
from .xcformat import as_csr, label_matrix

TASK = "labels"


def _csr_fast(x):
    """x itself when it is already a canonical float32 CSR matrix (the common
    case when serving one point at a time), else None."""
    import scipy.sparse as sp

    if isinstance(x, (sp.csr_matrix, sp.csr_array)) and x.dtype == np.float32 and x.has_canonical_format:
        return x
    return None


class LabelIndex(LabelChanges):
    """Extreme multi-label classifier built as an IRLI index over labels.

    `fit(X, Y)`: X CSR / dense (n, F) features, Y CSR (n, L) 0/1 or a list of
    label-id lists. `predict(X, k)`: (ids int64 (n, k), scores float32 (n, k)),
    best first, padded with -1 / -inf. `add(X, Y)` / `remove(labels)`
    change the labels without retraining (irli.labels.updates).
    """

    def __init__(self, config: LabelConfig | None = None, **options: Any) -> None:
        base = config.to_dict() if config is not None else {}
        base.update(options)
        self.config = LabelConfig.from_dict(base)
        self.model_: LabelModel | None = None
        self.history_: list[dict] = []

    # -- fitting ---------------------------------------------------------------
    def fit(self, X, Y, callback: Callback = None) -> "LabelIndex":
        """Learn buckets, routers and scorer from features X and label sets Y."""
        from ..learn.labels import learn_labels

        with self._lock:
            x = self._features(X, fitting=True)
            y = label_matrix(Y, n_rows=x.shape[0])
            if y.shape[1] < 2:
                raise InvalidInputError(f"Y has {y.shape[1]} label column(s); a label index needs at least 2")
            if y.nnz == 0:
                raise InvalidInputError("Y has no labels at all; nothing to learn")
            cfg = self.config.for_labels(y.shape[1])
            model, self.history_ = learn_labels(x, y, cfg, callback=callback)
            self.fitted_config_ = cfg
            self.label_counts_ = np.bincount(y.indices, minlength=y.shape[1]).astype(np.int64)
            self.n_train_ = int(y.shape[0])
            self.__dict__.pop("_buffers", None)
            self.model_ = model  # published last: predictions read model_ once
        return self

    def _features(self, X, fitting: bool = False, model: LabelModel | None = None):
        """X as CSR float32, checked (against `model`, default model_, unless
        fitting); rows scaled to unit length (when the config says so) only
        for fitting: prediction scales inside its kernel."""
        x = _csr_fast(X) if not fitting else None
        if not fitting:
            self._check_fitted()
            model = model if model is not None else self.model_
        if x is not None:
            if x.shape[1] != model.n_features:
                raise InvalidInputError(f"X has {x.shape[1]} features, the index was fitted on {model.n_features}")
            if x.shape[0] == 0:
                raise InvalidInputError("X has no rows")
            return x
        x = as_csr(X)
        if x.shape[0] == 0:
            raise InvalidInputError("X has no rows")
        if not fitting:
            f = model.n_features
            if x.shape[1] != f:
                raise InvalidInputError(f"X has {x.shape[1]} features, the index was fitted on {f}")
        elif x.shape[1] == 0:
            raise InvalidInputError("X has no feature columns")
        if self.config.normalize and fitting:
            norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
            norms[norms == 0] = 1.0
            x = x.multiply(1.0 / norms[:, None]).tocsr().astype(np.float32)
        return x

    def _check_fitted(self) -> None:
        if self.model_ is None:
            raise NotFittedError("this LabelIndex is not fitted yet; call fit(X, Y) first")

    # -- prediction ------------------------------------------------------------
    def predict(self, X, k: int = 5, probes: int | None = None, min_votes: int | None = None,
                rerank: bool | None = None, threads: int | None = None) -> SearchResult:
        """Top-k labels of each row of X: a SearchResult (ids int64 (n, k),
        scores float32 (n, k), best first, padded with -1 / -inf; candidates
        int64 (n,), labels scored). Rows are predicted in blocks, one
        compiled call per block (and per single point); blocks run on
        `threads` (None: all cores, see irli.threads), with the same results
        for any value."""
        ids, scores, cand = self.predict_with_counts(X, k, probes, min_votes, rerank, threads)
        return SearchResult(ids, scores, cand)

    def search(self, queries, k: int = 5, probes: int | None = None, min_votes: int | None = None,
               threads: int | None = None) -> SearchResult:
        """`predict` under the name every irli index answers to
        (irli.Searchable's search): queries are feature rows, ids are label ids."""
        return self.predict(queries, k=k, probes=probes, min_votes=min_votes, threads=threads)

    def predict_with_counts(self, X, k: int = 5, probes: int | None = None, min_votes: int | None = None,
                            rerank: bool | None = None,
                            threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`predict` plus the number of candidate labels scored per point, int64 (n,)."""
        self._check_fitted()
        model = self.model_  # read once: an add or remove in another thread publishes a new model
        cfg = self.fitted_config_
        k, probes, votes, _, _ = SearchParams.resolve(cfg, model.n_labels, cfg.n_buckets, k, probes, min_votes)
        x = self._features(X, model=model)
        return model.predict(x, int(k), int(probes), int(votes),
                             rerank=cfg.scorer if rerank is None else bool(rerank), blend=cfg.blend,
                             normalize=self.config.normalize, threads=threads)

    def __len__(self) -> int:
        """The labels a prediction may return (removed ones and ids never
        seen in training do not count)."""
        return 0 if self.model_ is None else self.model_.n_live

    def search_params(self, k=5, probes=None, min_votes=None) -> SearchParams:
        """The checked parameters of a prediction (irli.params: the rule of
        every index; k beyond the labels pads rows with -1)."""
        self._check_fitted()
        return SearchParams.resolve(self.fitted_config_, self.model_.n_labels, self.fitted_config_.n_buckets, k,
                                    probes, min_votes)

    @property
    def n_labels(self) -> int:
        """The label ids 0 .. n_labels - 1 (the columns of Y), removed ones included."""
        self._check_fitted()
        return self.model_.n_labels

    def model_bytes(self) -> int:
        """Bytes of the arrays a prediction uses."""
        self._check_fitted()
        return int(sum(a.nbytes for name, a in self.model_.arrays().items() if name != "background"))

    # -- persistence -----------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index directory at `path` atomically (see storage.py);
        returns its path."""
        self._check_fitted()
        with self._lock:
            return self._write(path, self.model_, self.label_counts_, self.n_train_)

    def _write(self, path, m: LabelModel, label_counts: np.ndarray, n_train: int) -> Path:
        """Write model `m` with its training label counts int64 (L,) and
        number of training points (save, and add / remove with save_to)."""
        manifest = {"task": TASK, "config": self.fitted_config_.to_dict(), "n_labels": m.n_labels,
                    "n_features": m.n_features, "n_buckets": m.n_buckets, "loss": m.loss}
        manifest["n_train"] = int(n_train)
        return write_index(path, {**m.arrays(), "label_counts": label_counts}, {}, manifest)

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = False, verify: bool = True) -> "LabelIndex":
        """Read a directory written by `save`; checks shapes and (with
        `verify`) checksums. With `mmap`, the weights stay on disk,
        memory-mapped."""
        man, arrays, _ = read_index(path, mmap=mmap, verify=verify)
        if man.get("task") != TASK:
            raise IndexFormatError(f"{path}: a nearest-neighbour index, not a label index; load it with irli.Index.load")
        try:
            cfg = LabelConfig.from_dict(man["config"])
        except Exception as e:
            raise IndexFormatError(f"{path}: invalid config in manifest ({e})") from None
        check_label_index(path, man, cfg.scorer, cfg.n_buckets, cfg.probes, cfg.loss, arrays)
        a = arrays
        self = cls(cfg)
        self.fitted_config_ = cfg
        live, bg = a.get("live"), a.get("background")
        if live is not None and (live.dtype != np.bool_ or live.shape != a["assign"].shape[1:]) or \
                bg is not None and (bg.dtype != np.float32 or bg.ndim != 2 or bg.shape[1] != a["w1"].shape[1]):
            raise IndexFormatError(f"{path}: live or background do not agree with the labels or the routers")
        self.model_ = LabelModel.build(w1=a["w1"], b1=a["b1"], w2=a["w2"], b2=a["b2"], assign=a["assign"],
                                       loss=man.get("loss", cfg.loss), v=a.get("v"), c=a.get("c"), live=live,
                                       background=bg)
        self.label_counts_ = a["label_counts"].astype(np.int64)
        self.n_train_ = int(man.get("n_train", 0))
        return self

    def propensities(self, a: float = 0.55, b: float = 1.5) -> np.ndarray:
        """Label propensities (L,) from the training label counts (for PSP@k)."""
        from ..metrics import propensity_from_counts

        self._check_fitted()
        return propensity_from_counts(self.label_counts_, self.n_train_, a, b)

    def evaluate(self, X, Y, ks=(1, 3, 5), **predict_options) -> dict[str, float]:
        """P@k, nDCG@k and PSP@k (normalised) for each k in `ks`, label
        coverage at the largest k, and prediction milliseconds per point."""
        import time

        from ..metrics import label_coverage, ndcg_at_k, precision_at_k, psp_at_k

        y = label_matrix(Y, n_rows=as_csr(X).shape[0], n_labels=self.n_labels)
        kmax = max(ks)
        t = time.perf_counter()
        ids, _ = self.predict(X, k=kmax, **predict_options)
        ms = (time.perf_counter() - t) * 1e3 / y.shape[0]
        prop = self.propensities()
        out: dict[str, float] = {}
        for k in ks:
            out[f"P@{k}"] = precision_at_k(ids, y, k)
        for k in ks:
            out[f"nDCG@{k}"] = ndcg_at_k(ids, y, k)
        for k in ks:
            out[f"PSP@{k}"] = psp_at_k(ids, y, k, prop)
        out[f"coverage@{kmax}"] = label_coverage(ids, y, kmax)
        out["ms_per_point"] = ms
        return out
