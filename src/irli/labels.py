"""`LabelIndex`: IRLI for extreme multi-label classification.

The items are labels, which have no vectors: a label index learns from
(features, label set) pairs which buckets each label belongs in and which
buckets a new point should open, then ranks the labels found there.

    from irli import LabelIndex
    index = LabelIndex().fit(X, Y)          # X: CSR (n, F) or dense; Y: CSR 0/1 or lists
    ids, scores = index.predict(X_test, k=5)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from .errors import ConfigError, IndexFormatError, InvalidInputError, NotFittedError
from .label_model import LabelModel
from .progress import Callback
from .storage import read_index, write_index
from .xcformat import as_csr, label_matrix

TASK = "xml"


@dataclass
class LabelConfig:
    """Settings of a label index (defaults measured on bibtex and delicious
    with a validation split of the training data; see BENCHMARKS.md)."""

    n_reps: int = 4              # R repetitions
    n_buckets: int | None = None  # B; default: about 8 labels per bucket, 16..8192, a power of two
    hidden: int = 256            # hidden units per router
    epochs: int = 20
    repartition: bool = True     # IRLI's power-of-K re-partitioning between rounds
    repartition_every: int = 10  # epochs per round
    k_choices: int = 2           # K in power-of-K choices
    max_load: float | None = 2.0  # no bucket above max_load * L / B labels
    loss: str = "sigmoid"        # router loss: "sigmoid" (authors' code) or "softmax"
    lr: float = 1e-2
    batch_size: int = 256
    dropout: float = 0.5         # on the routers' hidden layer, while training
    scorer: bool = True          # learn a per-label scorer on the routers' hidden layer
    full_scorer_labels: int = 8192  # above this many labels, the scorer trains on sampled negatives
    sparse_above: int = 20_000_000  # feature and label weights above this many: sparse (lazy) Adam
    blend: float = 0.0           # final score: (1 - blend) * scorer + blend * mean bucket probability
    probes: int | None = None    # buckets opened per repetition; default: about sqrt(B) / 3, at least 2
    min_votes: int = 1           # keep candidates found in at least this many repetitions
    val_fraction: float = 0.05   # training points held out to pick the best epoch (by P@1)
    normalize: bool = True       # scale each feature row to unit L2 norm
    seed: int = 0
    device: str = "auto"         # "cpu", "cuda" or "auto" (torch training)

    def validate(self, n_labels: int | None = None) -> "LabelConfig":
        for name in ("n_reps", "hidden", "epochs", "repartition_every", "k_choices", "batch_size",
                     "min_votes", "full_scorer_labels", "sparse_above"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        for name in ("n_buckets", "probes"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1):
                raise ConfigError(f"{name} must be a positive integer or None, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        if self.loss not in ("sigmoid", "softmax"):
            raise ConfigError(f"loss must be 'sigmoid' or 'softmax', got {self.loss!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"device must be 'cpu', 'cuda' or 'auto', got {self.device!r}")
        if not 0 <= self.dropout < 1 or not 0 <= self.val_fraction < 1 or not 0 <= self.blend <= 1:
            raise ConfigError("dropout and val_fraction must lie in [0, 1), blend in [0, 1]")
        if not self.lr > 0 or (self.max_load is not None and not self.max_load >= 1):
            raise ConfigError("lr must be > 0 and max_load >= 1 (or None)")
        if self.min_votes > self.n_reps:
            raise ConfigError(f"min_votes={self.min_votes} exceeds n_reps={self.n_reps}")
        if n_labels is not None and self.n_buckets is not None and self.n_buckets > n_labels:
            raise ConfigError(f"n_buckets={self.n_buckets} exceeds the {n_labels} labels")
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LabelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown label-index option {unknown[0]!r}")
        return cls(**d).validate()


def default_label_buckets(n_labels: int) -> int:
    """About 8 labels per bucket, a power of two in [16, 8192] (the cap keeps
    a CPU router's output layer cheap), at most L."""
    b = 1 << max(4, int(round(np.log2(max(n_labels, 1) / 8))))
    return int(min(b, 8192, max(n_labels, 1)))


def default_label_probes(n_buckets: int) -> int:
    """Buckets opened per repetition: about sqrt(B) / 3, at least 2 (2 of 16,
    4 of 128, 11 of 1024, 43 of 16384), so candidates grow as sqrt(L)."""
    return int(max(2, round(np.sqrt(n_buckets) / 3)))


def _csr_fast(x):
    """x itself when it is already a canonical float32 CSR matrix (the common
    case when serving one point at a time), else None."""
    import scipy.sparse as sp

    if isinstance(x, (sp.csr_matrix, sp.csr_array)) and x.dtype == np.float32 and x.has_canonical_format:
        return x
    return None


class LabelIndex:
    """Extreme multi-label classifier built as an IRLI index over labels.

    `fit(X, Y)`: X CSR / dense (n, F) features, Y CSR (n, L) 0/1 or a list of
    label-id lists. `predict(X, k)`: (ids int64 (n, k), scores float32 (n, k)),
    best first, padded with -1 / -inf.
    """

    def __init__(self, config: LabelConfig | None = None, **options: Any) -> None:
        base = asdict(config) if config is not None else {}
        base.update(options)
        self.config = LabelConfig.from_dict(base)
        self.model_: LabelModel | None = None
        self.history_: list[dict] = []

    # -- fitting ---------------------------------------------------------------
    def fit(self, X, Y, callback: Callback = None) -> "LabelIndex":
        """Learn buckets, routers and scorer from features X and label sets Y."""
        from .label_training import learn_labels

        x = self._features(X, fitting=True)
        y = label_matrix(Y, n_rows=x.shape[0])
        if y.shape[1] < 2:
            raise InvalidInputError(f"Y has {y.shape[1]} label column(s); a label index needs at least 2")
        if y.nnz == 0:
            raise InvalidInputError("Y has no labels at all; nothing to learn")
        cfg = LabelConfig(**asdict(self.config)).validate(y.shape[1])
        cfg.n_buckets = cfg.n_buckets or default_label_buckets(y.shape[1])
        cfg.probes = min(cfg.probes or default_label_probes(cfg.n_buckets), cfg.n_buckets)
        self.model_, self.history_ = learn_labels(x, y, cfg, callback=callback)
        self.fitted_config_ = cfg
        self.label_counts_ = np.bincount(y.indices, minlength=y.shape[1]).astype(np.int64)
        self.n_train_ = int(y.shape[0])
        return self

    def _features(self, X, fitting: bool = False):
        """X as CSR float32, checked; rows scaled to unit length (when the
        config says so) only for fitting: prediction scales inside its kernel."""
        x = _csr_fast(X) if not fitting else None
        if x is not None:
            self._check_fitted()
            if x.shape[1] != self.model_.n_features:
                raise InvalidInputError(f"X has {x.shape[1]} features, the index was fitted on {self.model_.n_features}")
            if x.shape[0] == 0:
                raise InvalidInputError("X has no rows")
            return x
        x = as_csr(X)
        if x.shape[0] == 0:
            raise InvalidInputError("X has no rows")
        if not fitting:
            self._check_fitted()
            f = self.model_.n_features
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
                rerank: bool | None = None, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k labels of each row of X: (ids int64 (n, k), scores float32 (n, k)).
        One point costs one compiled call; batches run on `threads` (None:
        all cores, see irli.threads), with the same results for any value."""
        ids, scores, _ = self.predict_with_counts(X, k, probes, min_votes, rerank, threads)
        return ids, scores

    def predict_with_counts(self, X, k: int = 5, probes: int | None = None, min_votes: int | None = None,
                            rerank: bool | None = None,
                            threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`predict` plus the number of candidate labels scored per point, int64 (n,)."""
        self._check_fitted()
        cfg = self.fitted_config_
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.model_.n_labels:
            raise InvalidInputError(f"k={k!r} out of range: need 1 <= k <= {self.model_.n_labels} labels")
        probes = cfg.probes if probes is None else probes
        if isinstance(probes, bool) or not isinstance(probes, (int, np.integer)) or not 1 <= probes <= cfg.n_buckets:
            raise InvalidInputError(f"probes={probes!r} out of range: need 1 <= probes <= {cfg.n_buckets} buckets")
        votes = cfg.min_votes if min_votes is None else min_votes
        if not isinstance(votes, (int, np.integer)) or not 1 <= votes <= cfg.n_reps:
            raise InvalidInputError(f"min_votes={votes!r} out of range: need 1 <= min_votes <= {cfg.n_reps}")
        x = self._features(X)
        return self.model_.predict(x, int(k), int(probes), int(votes),
                                   rerank=cfg.scorer if rerank is None else bool(rerank), blend=cfg.blend,
                                   normalize=self.config.normalize, threads=threads)

    def __len__(self) -> int:
        return 0 if self.model_ is None else self.model_.n_labels

    @property
    def n_labels(self) -> int:
        self._check_fitted()
        return self.model_.n_labels

    def model_bytes(self) -> int:
        """Bytes of the arrays a prediction uses."""
        self._check_fitted()
        return int(sum(a.nbytes for a in self.model_.arrays().values()))

    # -- persistence -----------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the index directory at `path` atomically (see storage.py)."""
        self._check_fitted()
        m = self.model_
        manifest = {"task": TASK, "config": asdict(self.fitted_config_), "n_labels": m.n_labels,
                    "n_features": m.n_features, "n_buckets": m.n_buckets, "loss": m.loss}
        manifest["n_train"] = self.n_train_
        write_index(path, {**m.arrays(), "label_counts": self.label_counts_}, {}, manifest)

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True) -> "LabelIndex":
        """Read a directory written by `save`; checks shapes and checksums."""
        man, arrays, _ = read_index(path, mmap=False, verify=verify)
        if man.get("task") != TASK:
            raise IndexFormatError(f"{path}: a nearest-neighbour index, not a label index; load it with irli.Index.load")
        try:
            cfg = LabelConfig.from_dict(man["config"])
        except Exception as e:
            raise IndexFormatError(f"{path}: invalid config in manifest ({e})") from None
        for name in ("w1", "b1", "w2", "b2", "assign", "label_counts") + (("v", "c") if cfg.scorer else ()):
            if name not in arrays:
                raise IndexFormatError(f"{path}: missing {name}.npy")
        a = {k: np.asarray(v) for k, v in arrays.items()}
        f, d = a["w1"].shape
        reps, h, b = a["w2"].shape
        n_labels = a["assign"].shape[1] if a["assign"].ndim == 2 else -1
        ok = (a["b1"].shape == (d,) and d == reps * h and a["b2"].shape == (reps, b)
              and a["assign"].shape == (reps, n_labels) and n_labels == man.get("n_labels")
              and b == man.get("n_buckets") and f == man.get("n_features")
              and a["label_counts"].shape == (n_labels,)
              and (not cfg.scorer or (a["v"].shape == (n_labels, d) and a["c"].shape == (n_labels,))))
        ok = ok and cfg.n_buckets == b and cfg.probes is not None and 1 <= cfg.probes <= b
        ok = ok and man.get("loss", cfg.loss) in ("sigmoid", "softmax") and type(man.get("n_train", 0)) is int
        if not ok or a["assign"].size and (a["assign"].min() < 0 or a["assign"].max() >= b):
            raise IndexFormatError(f"{path}: array shapes or bucket ids do not agree with each other or the manifest")
        for name, arr in a.items():
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise IndexFormatError(f"{path}: {name}.npy holds NaN or inf (corrupted)")
        self = cls(cfg)
        self.fitted_config_ = cfg
        self.model_ = LabelModel(w1=a["w1"], b1=a["b1"], w2=a["w2"], b2=a["b2"], assign=a["assign"],
                                 loss=man.get("loss", cfg.loss), v=a.get("v"), c=a.get("c"))
        self.label_counts_ = a["label_counts"].astype(np.int64)
        self.n_train_ = int(man.get("n_train", 0))
        return self

    def propensities(self, a: float = 0.55, b: float = 1.5) -> np.ndarray:
        """Label propensities (L,) from the training label counts (for PSP@k)."""
        from .metrics import propensity_from_counts

        self._check_fitted()
        return propensity_from_counts(self.label_counts_, self.n_train_, a, b)

    def evaluate(self, X, Y, ks=(1, 3, 5), **predict_options) -> dict[str, float]:
        """P@k, nDCG@k and PSP@k (normalised) for each k in `ks`, label
        coverage at the largest k, and prediction milliseconds per point."""
        import time

        from .metrics import label_coverage, ndcg_at_k, precision_at_k, psp_at_k

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
