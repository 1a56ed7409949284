"""Sharded indexes on disk: which part owns which bucket, and the parts.

A sharded index directory (manifest task "sharded") holds
  manifest.json        config, shapes, n_shards, the assignment rule, and
                       "parts": {"part-<s>": {"sha256": of its manifest}}
  owner.npy            int32 (R, B) the part that owns bucket b of repetition r
  offsets.npy          int64 (R, B+1) live entries per bucket, as offsets (what a
                       query reads, counted on the driver)
  routers.safetensors  the routers ("<rep>.<name>"), which the driver runs
  part-0 .. part-<S-1> one index directory each (irli.io.storage), holding only
                       the items with an entry in a bucket it owns: their
                       vectors, ids, codes and lists over its own positions,
                       plus the routers; its manifest says "part":
                       {"shard": s, "n_shards": S}. A part loads (memory-
                       mapped) on its own and is read-only.

An item spilled to, or placed by another repetition in, buckets of two
parts is stored in both. Buckets go to parts by locality (balanced k-means
over the bucket centroids, weighted by their entries, so a query's probed
buckets fall in few parts) or by b mod S ("modulo").

A path may be an fsspec URL ("memory://...", "s3://..." with s3fs installed,
"gs://..." with gcsfs): the directory is written locally and uploaded file by
file, the top manifest last, and a part is downloaded to a local temporary
directory before it is memory-mapped. "file://" URLs are local paths.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import IndexConfig
from ..errors import IndexFormatError, InvalidInputError
from ..io.storage import MANIFEST, read_index, write_index
from ..kernels.scoring import prepare, query_error
from ..model.repetitions import Repetitions
from ..model.routers import Routing
from ..validation import as_matrix
from ..version import __version__

ASSIGNMENTS = ("locality", "modulo")
# a shard may hold this much more than an equal share of the entries
SLACK = 0.05


# -- which part owns which bucket ----------------------------------------------------
def assign_buckets(centroids: np.ndarray, sizes: np.ndarray, n_shards: int, assignment: str = "locality",
                   seed: int = 0, iters: int = 25, probed: np.ndarray | None = None) -> np.ndarray:
    """The part that owns each bucket: int32 (R, B) in [0, n_shards).

    centroids: float32 (R, B, d) bucket centroids; sizes: int (R, B) entries per
    bucket. "modulo": b mod S. "locality": balanced k-means over the R x B
    centroids (all repetitions together, so one part holds the neighbouring
    buckets of every repetition), each part holding at most (1 + SLACK) /
    S of the entries (+1 per bucket, so empty buckets spread too), plus one
    bucket where the buckets do not pack; then, given `probed` (int (R, n,
    m), the buckets sample queries open), buckets move between parts while
    a move cuts the parts those queries reach (see `refine_by_queries`)."""
    reps, b, d = centroids.shape
    if assignment not in ASSIGNMENTS:
        raise InvalidInputError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")
    if n_shards == 1 or assignment == "modulo":
        return np.ascontiguousarray(np.broadcast_to(np.arange(b, dtype=np.int32) % n_shards, (reps, b)))
    pts = np.asarray(centroids, dtype=np.float64).reshape(reps * b, d)
    w = np.asarray(sizes, dtype=np.float64).ravel() + 1.0
    cap = w.sum() / n_shards * (1 + SLACK)
    rng = np.random.default_rng([seed, 0x5A4D])
    cent = pts[rng.choice(pts.shape[0], size=n_shards, replace=False, p=w / w.sum())]
    owner = np.full(pts.shape[0], -1, dtype=np.int64)
    for _ in range(iters):
        dist = (pts**2).sum(1)[:, None] - 2 * pts @ cent.T + (cent**2).sum(1)[None, :]
        new = _balanced(dist, w, cap)
        if np.array_equal(new, owner):
            break
        owner = new
        for s in range(n_shards):
            mine = owner == s
            cent[s] = np.average(pts[mine], axis=0, weights=w[mine])
    owner = owner.reshape(reps, b).astype(np.int32)
    if probed is not None:
        owner = refine_by_queries(owner, probed, w.reshape(reps, b), cap)
    return owner


def refine_by_queries(owner: np.ndarray, probed: np.ndarray, weights: np.ndarray, cap: float,
                      passes: int = 6) -> np.ndarray:
    """Local search on the bucket -> part table: move a bucket to the part
    that most reduces the sum over sample queries of the parts each reaches,
    where the target part stays under `cap` (in `weights`, float (R, B)),
    until a pass moves nothing. owner int (R, B); probed int (R, n, m).
    Returns the new int32 (R, B) table."""
    reps, b = owner.shape
    _, n, m = probed.shape
    s = int(owner.max()) + 1
    own = owner.ravel().astype(np.int64).copy()
    w = weights.ravel()
    g = (probed + (np.arange(reps) * b)[:, None, None]).transpose(1, 0, 2).reshape(n, reps * m)  # global bucket ids
    counts = np.zeros((n, s), dtype=np.int32)  # probed buckets of each query in each part
    np.add.at(counts, (np.repeat(np.arange(n), reps * m), own[g.ravel()]), 1)
    order = np.argsort(g.ravel(), kind="stable")
    queries = (np.arange(g.size) // (reps * m))[order]
    start = np.concatenate([[0], np.cumsum(np.bincount(g.ravel(), minlength=reps * b))])
    load = np.bincount(own, weights=w, minlength=s)
    for _ in range(passes):
        moved = 0
        for j in range(reps * b):
            q = queries[start[j]:start[j + 1]]
            if q.size == 0:
                continue
            p = own[j]
            c = counts[q]
            gain = (c[:, p] == 1).sum() - (c == 0).sum(axis=0)  # parts reached, fewer after a move to each part
            gain[p] = 0
            room = load + w[j] <= cap
            room[p] = False
            if not room.any():
                continue
            to = int(np.argmax(np.where(room, gain, np.iinfo(np.int64).min)))
            if gain[to] > 0:
                counts[q, p] -= 1
                counts[q, to] += 1
                load[p] -= w[j]
                load[to] += w[j]
                own[j] = to
                moved += 1
        if not moved:
            break
    return own.reshape(reps, b).astype(np.int32)


def _balanced(dist: np.ndarray, w: np.ndarray, cap: float) -> np.ndarray:
    """Greedy balanced assignment: (point, shard) pairs nearest first, each
    point to the first shard with room for its weight; then every shard is
    given at least one point. int64 (n,)."""
    n, s = dist.shape
    owner = np.full(n, -1, dtype=np.int64)
    load = np.zeros(s)
    for flat in np.argsort(dist, axis=None, kind="stable"):
        i, j = divmod(int(flat), s)
        if owner[i] < 0 and load[j] + w[i] <= cap:
            owner[i], load[j] = j, load[j] + w[i]
    for i in np.flatnonzero(owner < 0):  # did not fit anywhere: the least loaded shard
        j = int(np.argmin(load))
        owner[i], load[j] = j, load[j] + w[i]
    for j in range(s):  # a shard with nothing takes its nearest point from a shard holding two or more
        if not (owner == j).any():
            counts = np.bincount(owner, minlength=s)
            donors = np.flatnonzero(counts[owner] > 1)
            owner[donors[np.argmin(dist[donors, j])]] = j
    return owner


def shards_touched(owner: np.ndarray, probed: np.ndarray) -> np.ndarray:
    """Parts each query reaches: int64 (n,), from owner int (R, B) and the
    probed buckets int (R, n, m)."""
    reps, n, m = probed.shape
    parts = owner[np.arange(reps)[:, None, None], probed]  # (R, n, m)
    flat = np.moveaxis(parts, 1, 0).reshape(n, reps * m)
    flat = np.sort(flat, axis=1)
    return 1 + (np.diff(flat, axis=1) != 0).sum(axis=1)


# -- the parts of a fitted index -------------------------------------------------------
def _entries(index, owner: np.ndarray, s: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per repetition, the live entries of part s's buckets: (positions,
    buckets), in list order."""
    off, lists, live = index.lists_.offsets, index.lists_.lists, np.asarray(index.live_)
    out = []
    for r in range(off.shape[0]):
        sizes = np.diff(off[r])
        bucket = np.repeat(np.arange(sizes.size, dtype=np.int32), sizes)
        pos = np.asarray(lists[r, : off[r, -1]])
        keep = (owner[r][bucket] == s) & live[pos]
        out.append((pos[keep], bucket[keep]))
    return out


def part_arrays(index, owner: np.ndarray, s: int) -> tuple[dict, dict, dict]:
    """What part s of `index` writes: (arrays, router tensors, manifest) as
    `Index.to_arrays` gives them, restricted to the items with a live entry
    in a bucket that `owner` (int (R, B)) gives to s."""
    arrays, routers, man = index.to_arrays()
    entries = _entries(index, owner, s)
    positions = np.unique(np.concatenate([e for e, _ in entries])).astype(np.int64)
    reps, b = owner.shape
    n = positions.size
    dtype = np.int32 if n < 2**31 else np.int64
    width = max(e.size for e, _ in entries)
    lists = np.zeros((reps, width), dtype=dtype)
    offsets = np.zeros((reps, b + 1), dtype=np.int64)
    for r, (e, bk) in enumerate(entries):
        lists[r, : e.size] = np.searchsorted(positions, e)
        offsets[r, 1:] = np.cumsum(np.bincount(bk, minlength=b))
    out = {"vectors": np.asarray(index.vectors_[positions]), "ids": np.asarray(index.ids_[positions]),
           "offsets": offsets, "lists": lists, "assign": np.ascontiguousarray(index.assign_[:, :, positions]),
           "centres": arrays["centres"]}
    if "sqnorms" in arrays:
        out["sqnorms"] = np.asarray(index.sqnorms_[positions])
    if "pq_codes" in arrays:
        out["pq_books"] = arrays["pq_books"]
        out["pq_codes"] = np.ascontiguousarray(arrays["pq_codes"][:, :, positions])
    n_shards = int(owner.max()) + 1 if owner.size else 1
    man = {**man, "n_items": int(n), "n_slots": int(n), "part": {"shard": s, "n_shards": n_shards}}
    return out, routers, man


def live_offsets(index) -> np.ndarray:
    """int64 (R, B+1): the live entries of each bucket as offsets."""
    off, lists, live = index.lists_.offsets, index.lists_.lists, np.asarray(index.live_)
    out = np.zeros_like(np.asarray(off))
    for r in range(off.shape[0]):
        sizes = np.diff(off[r])
        bucket = np.repeat(np.arange(sizes.size), sizes)
        alive = live[np.asarray(lists[r, : off[r, -1]])]
        out[r, 1:] = np.cumsum(np.bincount(bucket[alive], minlength=sizes.size))
    return out


def check_shards(index, n_shards) -> int:
    if type(n_shards) is not int or not 1 <= n_shards <= index.n_buckets:
        raise InvalidInputError(f"shards must be an integer between 1 and {index.n_buckets} "
                                f"(the buckets), got {n_shards!r}")
    return n_shards


def sharded_arrays(index, n_shards: int, assignment: str = "locality") -> tuple[dict, dict, dict, np.ndarray]:
    """The top directory of a sharded `index`: (arrays, router tensors,
    manifest, owner int32 (R, B))."""
    index.check_fitted()
    check_shards(index, n_shards)
    offsets = live_offsets(index)
    owner = assign_buckets(np.asarray(index.centroids_), np.diff(offsets, axis=1), n_shards, assignment,
                           seed=index.config.seed, probed=sample_probes(index) if assignment == "locality" else None)
    routers = index.reps_.router_tensors()
    man = {"task": "sharded", "irli_version": __version__, "preset": index.preset,
           "config": index.config.to_dict(), "n_items": len(index), "dim": index.dim,
           "n_buckets": index.n_buckets, "n_reps": index.n_reps, "router": index.reps_.kind,
           "n_shards": n_shards, "assignment": assignment,
           "saved_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return {"owner": owner, "offsets": offsets}, routers, man, owner


def sample_probes(index, n: int = 20_000) -> np.ndarray:
    """The buckets a seeded sample of the index's own items opens at the
    index's probes, as queries: int32 (R, n, m). What the locality
    assignment learns from (the items stand in for the queries, as in
    training)."""
    alive = index.idmap_.pos
    rng = np.random.default_rng([index.config.seed, 0x5A4E])
    rows = np.sort(rng.choice(alive, size=min(n, alive.size), replace=False))
    return index.route(np.asarray(index.vectors_[rows]), probes=index.config.probes)


def part_name(s: int) -> str:
    return f"part-{s}"


def save_sharded(index, path: str | os.PathLike, n_shards: int, assignment: str = "locality") -> Path | str:
    """Write `index` as a sharded index directory at `path` (a local path,
    atomically, or an fsspec URL); one part is held in memory at a time.
    Returns the path."""
    arrays, routers, man, owner = sharded_arrays(index, n_shards, assignment)
    parts = {part_name(s): (lambda s=s: part_arrays(index, owner, s)) for s in range(n_shards)}
    url = remote(path)
    if url is None:
        return write_index(_local(path), arrays, routers, man, parts=parts)
    fs, root = url
    with tempfile.TemporaryDirectory(prefix="irli-upload-") as tmp:
        local = write_index(Path(tmp) / "index", arrays, routers, man, parts=parts)
        files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != ".saving")
        top = local / MANIFEST
        for f in [f for f in files if f != top] + [top]:  # the top manifest last: it commits the save
            dest = f"{root}/{f.relative_to(local).as_posix()}"
            fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(f), dest)
    return str(path)


# -- reading -----------------------------------------------------------------------------
def remote(path) -> tuple[Any, str] | None:
    """(fsspec file system, root) for a URL other than file://; None for a local path."""
    text = os.fspath(path)
    if "://" not in text or text.startswith("file://"):
        return None
    try:
        import fsspec
    except ImportError:
        raise InvalidInputError(f"{text}: URLs need fsspec (pip install fsspec)") from None
    try:
        fs, root = fsspec.core.url_to_fs(text)
    except (ImportError, ValueError) as e:
        raise InvalidInputError(f"{text}: {e}") from None
    return fs, root.rstrip("/")


def _local(path) -> Path:
    text = os.fspath(path)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def _download(fs, root: str, dest: Path, recursive: bool) -> None:
    if not fs.exists(root):
        raise IndexFormatError(f"{root}: no such index directory")
    files = fs.find(root) if recursive else [e["name"] for e in fs.ls(root, detail=True) if e["type"] == "file"]
    base = root.lstrip("/")
    for f in files:
        rel = f.lstrip("/")[len(base):].lstrip("/")
        if not rel or ".." in rel.split("/"):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f, str(dest / rel))


def fetched(path, recursive: bool):
    """A local copy of the directory at `path`: (local path, temporary
    directory to delete after reading or None)."""
    url = remote(path)
    if url is None:
        return _local(path), None
    tmp = Path(tempfile.mkdtemp(prefix="irli-fetch-"))
    try:
        _download(*url, tmp, recursive)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp, tmp


@dataclass
class Layout:
    """What the driver of a sharded index holds: the routers and the bucket
    -> part table, never the items. Of the index's Repetitions it holds the
    routers only (read through Repetitions.read_routers, as an Index reads
    them): the assignments, lists and centroids live in the parts.

    config, preset; routers (one per repetition) and `routing`, their
    compiled form; owner int32 (R, B); offsets int64 (R, B+1) live entries
    per bucket; dim, n_items, n_shards, assignment; parts: where each part
    is (a local path or URL) and the sha256 of its manifest."""

    config: IndexConfig
    preset: str
    routers: list
    routing: Routing
    owner: np.ndarray
    offsets: np.ndarray
    dim: int
    n_items: int
    n_shards: int
    assignment: str
    parts: list[tuple[str, str | None]]

    @property
    def n_buckets(self) -> int:
        return self.owner.shape[1]

    @classmethod
    def of_index(cls, index, n_shards: int, assignment: str = "locality") -> "Layout":
        """The layout of `index` cut into `n_shards` parts (not written)."""
        arrays, _, man, owner = sharded_arrays(index, n_shards, assignment)
        return cls(index.config, index.preset, list(index.routers_), index.routing_, owner, arrays["offsets"],
                   index.dim, len(index), n_shards, assignment, [(f"<part {s}>", None) for s in range(n_shards)])

    @classmethod
    def read(cls, path: str | os.PathLike, verify: bool = True) -> "Layout":
        """The layout of the sharded index directory at `path` (local or URL),
        checked; its parts are not read."""
        local, tmp = fetched(path, recursive=False)
        try:
            man, arrays, tensors = read_index(local, mmap=False, verify=verify)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        if man.get("task") != "sharded":
            raise IndexFormatError(f"{path}: not a sharded index (load it with irli.load)")
        try:
            config = IndexConfig.from_dict(man["config"])
        except Exception as e:
            raise IndexFormatError(f"{path}: invalid config in manifest ({e})") from None
        owner, offsets = arrays.get("owner"), arrays.get("offsets")
        s, b, reps = man.get("n_shards"), man.get("n_buckets"), config.n_reps
        parts = man.get("parts")
        names = [part_name(i) for i in range(s)] if type(s) is int and s >= 1 else None
        if (names is None or owner is None or offsets is None or owner.shape != (reps, b) or offsets.shape != (reps, b + 1)
                or owner.size and (owner.min() < 0 or owner.max() >= s) or not isinstance(parts, dict)
                or sorted(parts) != sorted(names) or type(man.get("dim")) is not int):
            raise IndexFormatError(f"{path}: sharded manifest, owner.npy and offsets.npy do not agree (corrupted)")
        routers = Repetitions.read_routers(path, tensors, man.get("router"), reps, config.metric, b, man["dim"])
        base = os.fspath(path).rstrip("/")
        where = [(f"{base}/{n}", parts[n].get("sha256") if isinstance(parts[n], dict) else None) for n in names]
        return cls(config, man.get("preset", "custom"), routers, Routing.from_routers(routers),
                   np.ascontiguousarray(owner, dtype=np.int32), np.asarray(offsets), man["dim"],
                   int(man.get("n_items", 0)), s, str(man.get("assignment", "locality")), where)

    def prepare(self, queries) -> np.ndarray:
        """Queries checked and prepared as an Index prepares them: float32 (n, d)."""
        raw = as_matrix(queries, "queries", dim=self.dim, allow_1d=True, finite=False)
        q, bad = prepare(raw, self.config.metric_type.cosine)
        if bad >= 0:
            raise query_error(raw, bad)
        return q
