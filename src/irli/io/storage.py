"""Index directories on disk: write atomically, read back with checks.

Layout of a vector index directory (R repetitions, B buckets, N stored
items of dimension d, c = 1 + spill buckets per item and repetition):
  manifest.json        format, versions, config, shapes, history, sha256 of every file
                       and of the manifest itself (manifest_sha256)
  vectors.npy          float32 (N, d) item vectors, grouped by repetition 0's buckets
  ids.npy              int64 (N,) the user id of each stored position
  assign.npy           int32 (R, c, N) the buckets of each stored position
  offsets.npy          int64 (R, B+1) and lists.npy int32 (R, c N) (int64 past
                       2^31 items): inverted lists of positions
  centres.npy          float32 (R, B, d) bucket centroids (spilling, residual codes; older file name kept)
  sqnorms.npy          float32 (N,) squared norms (l2 indexes only)
  live.npy             bool (N,) False where an item was removed (only if any was)
  pq_books.npy         float32 (R, M, 16, d / M) and pq_codes.npy uint8 (R, c or 1,
                       N, ceil(M / 2)): 4-bit PQ codes (scan="pq4" only)
  routers.safetensors  router weights, keys "<rep>.<name>"
A label index directory (task "labels") holds w1, b1, w2, b2, assign int32 (R, L),
label_counts and, with a scorer, v and c (see irli.model.labels).

Nothing is pickled. A save writes a hidden temporary sibling directory
(`.NAME.tmp-*`, locked while written), fsyncs it, and swaps it in with one
atomic exchange (or two renames where the file system cannot exchange), so
an index saved earlier at the path is never left half-written; a later save
deletes the temporary directories of saves whose process died. A save that
fails (disk full, no permission) raises SaveError naming the path and the
cause, and leaves the path as it was. A long-lived writer (a service that
adds and removes items) holds the path's WriterLock (`.NAME.writer`, a
sibling file): saves from anyone else are refused while it lives. A read pins
the directory and opens each file once, so it never mixes two saves. A
manifest may name only plain files inside its directory.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import mmap
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexFormatError, IrliError
from .locks import SAVE_MARK, hold_save, remove_abandoned, save_error, save_guard

FORMAT = "irli-index"
# 3: the first format this irli reads (live.npy for removed items, PQ codes
# as pq_books.npy + pq_codes.npy); directories of versions 1 and 2, written
# during development, must be rebuilt
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
ROUTERS = "routers.safetensors"
# what a manifest may name: plain files of the index directory itself
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.(npy|safetensors)")


def sha256(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return _sha256_fd(fd)
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_index(path: str | os.PathLike, arrays: dict[str, np.ndarray],
                routers: dict[str, np.ndarray], manifest: dict[str, Any],
                staged: dict[str, Path] | None = None, parts: dict[str, Any] | None = None) -> Path:
    """Write an index directory at `path` atomically.

    `arrays` maps names ("vectors", ...) to arrays saved as <name>.npy;
    `staged` maps names to .npy files already written (by a streaming build,
    on the same file system as `path`), moved in as <name>.npy;
    `routers` maps "<rep>.<param>" to float32 arrays; `manifest` is completed
    with the format, file sizes and checksums. `parts` maps sub-directory
    names to (arrays, routers, manifest) triples, or to callables returning
    one (so a sharded index holds one part in memory at a time), each
    written as an index directory inside this one (the parts of a sharded
    index; the manifest lists them under "parts" with the sha256 of their
    manifests). Refuses to replace anything at `path` that is not an irli
    index directory, or a path whose WriterLock another writer holds.
    """
    dest = Path(path)
    if dest.exists():
        if not dest.is_dir():
            raise IndexFormatError(f"{dest}: exists and is not a directory; refusing to overwrite")
        if any(dest.iterdir()) and not (dest / MANIFEST).exists():
            raise IndexFormatError(f"{dest}: a non-empty directory that is not an irli index; refusing to overwrite")
    guard = save_guard(dest)
    try:
        return _write(dest, arrays, routers, manifest, staged, parts)
    except OSError as e:
        if isinstance(e, IrliError):
            raise
        raise save_error(dest, e) from None
    finally:
        if guard is not None:
            os.close(guard)


def _write(dest: Path, arrays, routers, manifest, staged, parts) -> Path:
    from safetensors.numpy import save_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(dest)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    lock = hold_save(tmp)
    try:
        files: dict[str, dict[str, Any]] = {}
        for name, arr in arrays.items():
            f = tmp / f"{name}.npy"
            np.save(f, arr, allow_pickle=False)
            files[f.name] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
        for name, src in (staged or {}).items():
            f = tmp / f"{name}.npy"
            os.rename(src, f)
            head = np.load(f, mmap_mode="r", allow_pickle=False)
            files[f.name] = {"shape": list(head.shape), "dtype": str(head.dtype)}
            del head
        save_file({k: np.ascontiguousarray(v) for k, v in routers.items()}, str(tmp / ROUTERS))
        files[ROUTERS] = {}
        written = {}
        for name, part in (parts or {}).items():
            if not _FILE_NAME.fullmatch(name + ".npy"):
                raise ValueError(f"part name {name!r} is not a plain directory name")
            write_index(tmp / name, *(part() if callable(part) else part))
            written[name] = {"sha256": sha256(tmp / name / MANIFEST)}
        if parts is not None:
            manifest = {**manifest, "parts": written}
        for fname, meta in files.items():
            p = tmp / fname
            _fsync(p)
            meta["bytes"] = p.stat().st_size
            meta["sha256"] = sha256(p)
        full = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "files": files}
        full["manifest_sha256"] = manifest_sha256(full)
        with open(tmp / MANIFEST, "w") as fh:
            json.dump(full, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync(tmp)
        _swap_in(tmp, dest)
        try:  # not part of the index (its lock is held until the end)
            os.unlink(dest / SAVE_MARK)
        except OSError:  # pragma: no cover
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        os.close(lock)
    return dest


def release(x: np.ndarray) -> None:
    """Drop the resident pages of the file mapping under `x` (a memory map or
    a view of one) from this process; later reads fault them back in from
    the page cache. A no-op for arrays in memory."""
    base = x
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "_mmap", None) if isinstance(base, np.memmap) and base._mmap is not None \
            else getattr(base, "base", None)
    if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        try:
            base.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # pragma: no cover - platform dependent
            pass


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _swap_in(tmp: Path, dest: Path) -> None:
    """Put the finished directory `tmp` at `dest`; the old one is deleted last."""
    if not dest.exists():
        os.rename(tmp, dest)
    elif _exchange(tmp, dest):
        shutil.rmtree(tmp)  # tmp now holds the previous index
    else:
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(dest, old)
        os.rename(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    _fsync(dest.parent)


def _valid_version(v) -> bool:
    return type(v) is int and v == FORMAT_VERSION


def manifest_sha256(man: dict[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON, without its own checksum."""
    body = {k: v for k, v in man.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# What an index directory holds, as its manifest's "task" says; directories
# written before said "ann" (or nothing) for a vector index and "xml" for a
# label index, read as the names now used.
TASKS = ("vectors", "labels", "sharded")
_OLD_TASKS = {"ann": "vectors", "xml": "labels"}


def _parse_manifest(p: Path, text: bytes) -> dict[str, Any]:
    try:
        man = json.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise IndexFormatError(f"{p}: corrupted {MANIFEST} ({e})") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise IndexFormatError(f"{p}: {MANIFEST} is not an irli index manifest")
    if not _valid_version(man.get("format_version")):
        v = man.get("format_version")
        if type(v) is int and v > FORMAT_VERSION:
            raise IndexFormatError(f"{p}: index format version {v} is not supported "
                                   f"(this irli reads up to {FORMAT_VERSION}); upgrade irli")
        if type(v) is int and 1 <= v < FORMAT_VERSION:
            raise IndexFormatError(f"{p}: index format version {v} is older than this irli reads "
                                   f"({FORMAT_VERSION}); rebuild the index")
        raise IndexFormatError(f"{p}: {MANIFEST} has an invalid format_version {v!r} (corrupted)")
    if "manifest_sha256" in man and man["manifest_sha256"] != manifest_sha256(man):
        raise IndexFormatError(f"{p}: {MANIFEST} does not match its checksum (corrupted or edited)")
    task = man.get("task", "vectors")
    man["task"] = _OLD_TASKS.get(task, task)
    if man["task"] not in TASKS:
        raise IndexFormatError(f"{p}: {MANIFEST} names an unknown task {task!r} (not one of {', '.join(TASKS)})")
    files = man.get("files")
    if not isinstance(files, dict) or not isinstance(man.get("config"), dict):
        raise IndexFormatError(f"{p}: {MANIFEST} lacks its file list or config")
    for fname, meta in files.items():
        if not _FILE_NAME.fullmatch(fname) or not isinstance(meta, dict):
            raise IndexFormatError(f"{p}: {MANIFEST} names a file {fname!r} that is not a plain file "
                                   "of the index directory (corrupted or crafted)")
    return man


def _open_dir(p: Path) -> int:
    if not p.exists():
        raise IndexFormatError(f"{p}: no such index directory")
    if not p.is_dir():
        raise IndexFormatError(f"{p}: not a directory; an irli index is a directory")
    return os.open(p, os.O_RDONLY | os.O_DIRECTORY)


def _read_at(dfd: int, p: Path, name: str, missing: str | None = None) -> int:
    """An fd of the file `name` in the directory held by `dfd` (no links);
    `missing` is the error when it is not there (default: "missing file")."""
    try:
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
    except FileNotFoundError:
        if _replaced(dfd, p):
            raise _Replaced() from None
        raise IndexFormatError(f"{p}: {missing or f'missing file {name}'}") from None
    except OSError as e:
        raise IndexFormatError(f"{p}: cannot open {name} ({e.strerror}); not a plain file") from None


def _replaced(dfd: int, p: Path) -> bool:
    """Whether `p` no longer names the directory held open by `dfd`."""
    try:
        now, held = os.stat(p), os.fstat(dfd)
    except OSError:
        return True
    return (now.st_ino, now.st_dev) != (held.st_ino, held.st_dev)


class _Replaced(Exception):
    """The directory was swapped for a newer save while it was being read."""


def _read_all(fd: int) -> bytes:
    with os.fdopen(os.dup(fd), "rb") as fh:
        return fh.read()


def _open_manifest(dfd: int, p: Path) -> int:
    """An fd of the manifest in the directory held by `dfd`."""
    return _read_at(dfd, p, MANIFEST, missing=f"not an irli index (no {MANIFEST})")


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The checked manifest of the index directory at `path`."""
    p = Path(path)
    dfd = _open_dir(p)
    try:
        fd = _open_manifest(dfd, p)
        try:
            return _parse_manifest(p, _read_all(fd))
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def _sha256_fd(fd: int, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    off = 0
    while block := os.pread(fd, chunk, off):
        h.update(block)
        off += len(block)
    return h.hexdigest()


def _load_npy(fd: int, mmap: bool) -> np.ndarray:
    """The array in the .npy file open as `fd`, memory-mapped from that very
    file (not re-opened by name) when `mmap`."""
    fmt = np.lib.format
    with os.fdopen(os.dup(fd), "rb") as fh:
        version = fmt.read_magic(fh)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unsupported .npy version {version}")
        reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = reader(fh)
        if dtype.hasobject:
            raise ValueError("object arrays are not allowed")
        if not mmap:
            fh.seek(0)
            return fmt.read_array(fh, allow_pickle=False)
        offset = fh.tell()
        order = "F" if fortran else "C"
        if int(np.prod(shape)) == 0:
            return np.zeros(shape, dtype=dtype, order=order)
        return np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)


def read_index(path: str | os.PathLike, mmap: bool = True, verify: bool = True
               ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read the directory at `path`: (manifest, arrays by name, router tensors).

    Large arrays are memory-mapped when `mmap`. Every file must exist with the
    size the manifest records, and with `verify` its sha256 must match. The
    directory is pinned by a file descriptor and each file opened once, so
    a save that replaces the directory meanwhile cannot mix two versions:
    the read starts over on the new one (up to 3 times).
    """
    p = Path(path)
    for _ in range(3):
        try:
            return _read_pinned(p, mmap, verify)
        except _Replaced:
            continue
    raise IndexFormatError(f"{p}: the index was replaced 3 times while being read (another process "
                           "saving to it?); try again")


def _read_pinned(p: Path, mmap: bool, verify: bool):
    from safetensors import SafetensorError
    from safetensors.numpy import load as load_safetensors

    dfd = _open_dir(p)
    fds: dict[str, int] = {}
    try:
        fds[MANIFEST] = _open_manifest(dfd, p)
        man = _parse_manifest(p, _read_all(fds[MANIFEST]))
        for fname in man["files"]:  # open them all first: this pins one version of the index
            fds[fname] = _read_at(dfd, p, fname)
        if _replaced(dfd, p):
            raise _Replaced()
        arrays: dict[str, np.ndarray] = {}
        routers: dict[str, np.ndarray] = {}
        for fname, meta in man["files"].items():
            fd = fds[fname]
            size = os.fstat(fd).st_size
            if size != meta.get("bytes"):
                raise IndexFormatError(f"{p}: {fname} has {size} bytes, the manifest says {meta.get('bytes')} "
                                       "(truncated or replaced)")
            if verify and _sha256_fd(fd) != meta.get("sha256"):
                raise IndexFormatError(f"{p}: checksum mismatch in {fname} (corrupted)")
            try:
                if fname == ROUTERS:
                    routers = load_safetensors(_read_all(fd))
                    continue
                arr = _load_npy(fd, mmap)
            except (ValueError, OSError, EOFError, SafetensorError) as e:
                raise IndexFormatError(f"{p}: unreadable {fname} ({e})") from None
            if list(arr.shape) != meta.get("shape") or str(arr.dtype) != meta.get("dtype"):
                raise IndexFormatError(f"{p}: {fname} has shape {arr.shape} {arr.dtype}, manifest says "
                                       f"{meta.get('shape')} {meta.get('dtype')}")
            arrays[fname[:-4]] = arr
        return man, arrays, routers
    finally:
        for fd in fds.values():
            os.close(fd)
        os.close(dfd)
