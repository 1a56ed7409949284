"""Index directories on disk: write atomically, read back with checks.

Layout of a directory:
  manifest.json        format, versions, config, shapes, sha256 of every file
  vectors.npy          float32 (N, d) item vectors, grouped by repetition 0's buckets
  ids.npy              int64 (N,) the user id of each stored position
  offsets.npy          int64 (R, B+1) and lists.npy int32 (R, N): inverted lists
  sqnorms.npy          float32 (N,) squared norms (l2 indexes only)
  live.npy             bool (N,) False where an item was removed (only if any was)
  routers.safetensors  router weights, keys "<rep>.<name>"

Nothing is pickled. A save writes a hidden temporary sibling directory, fsyncs
it, and swaps it in with one atomic exchange (or two renames where the file
system cannot exchange), so an index saved earlier at the path is never left
half-written.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexFormatError

FORMAT = "irli-index"
# 2: indexes that had items removed hold live.npy (bool (N,)); a reader of
# version 1 would bring the removed items back, so it must refuse
# 3: PQ codes as pq_books.npy + pq_codes.npy (irli's own layout) instead of
# FAISS blobs codes<r>.npy; versions 1 and 2 still load
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
ROUTERS = "routers.safetensors"


def sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_index(path: str | os.PathLike, arrays: dict[str, np.ndarray],
                routers: dict[str, np.ndarray], manifest: dict[str, Any],
                staged: dict[str, Path] | None = None) -> Path:
    """Write an index directory at `path` atomically.

    `arrays` maps names ("vectors", ...) to arrays saved as <name>.npy;
    `staged` maps names to .npy files already written (by a streaming build,
    on the same file system as `path`), moved in as <name>.npy;
    `routers` maps "<rep>.<param>" to float32 arrays; `manifest` is completed
    with the format, file sizes and checksums. Refuses to replace anything at
    `path` that is not an irli index directory.
    """
    from safetensors.numpy import save_file

    dest = Path(path)
    if dest.exists():
        if not dest.is_dir():
            raise IndexFormatError(f"{dest}: exists and is not a directory; refusing to overwrite")
        if any(dest.iterdir()) and not (dest / MANIFEST).exists():
            raise IndexFormatError(f"{dest}: a non-empty directory that is not an irli index; refusing to overwrite")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
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
        for fname, meta in files.items():
            p = tmp / fname
            _fsync(p)
            meta["bytes"] = p.stat().st_size
            meta["sha256"] = sha256(p)
        full = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "files": files}
        with open(tmp / MANIFEST, "w") as fh:
            json.dump(full, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync(tmp)
        _swap_in(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


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


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The checked manifest of the index directory at `path`."""
    p = Path(path)
    if not p.exists():
        raise IndexFormatError(f"{p}: no such index directory")
    if not p.is_dir():
        raise IndexFormatError(f"{p}: not a directory; an irli index is a directory")
    mf = p / MANIFEST
    if not mf.exists():
        raise IndexFormatError(f"{p}: not an irli index (no {MANIFEST})")
    try:
        man = json.loads(mf.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise IndexFormatError(f"{p}: corrupted {MANIFEST} ({e})") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise IndexFormatError(f"{p}: {MANIFEST} is not an irli index manifest")
    if not isinstance(man.get("format_version"), int) or man["format_version"] > FORMAT_VERSION:
        raise IndexFormatError(
            f"{p}: index format version {man.get('format_version')!r} is not supported "
            f"(this irli reads up to {FORMAT_VERSION}); upgrade irli"
        )
    if not isinstance(man.get("files"), dict) or not isinstance(man.get("config"), dict):
        raise IndexFormatError(f"{p}: {MANIFEST} lacks its file list or config")
    return man


def read_index(path: str | os.PathLike, mmap: bool = True, verify: bool = True
               ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read the directory at `path`: (manifest, arrays by name, router tensors).

    Large arrays are memory-mapped when `mmap`. Every file must exist with the
    size the manifest records, and with `verify` its sha256 must match.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    p = Path(path)
    man = read_manifest(p)
    arrays: dict[str, np.ndarray] = {}
    routers: dict[str, np.ndarray] = {}
    for fname, meta in man["files"].items():
        f = p / fname
        if not f.is_file():
            raise IndexFormatError(f"{p}: missing file {fname}")
        if f.stat().st_size != meta.get("bytes"):
            raise IndexFormatError(
                f"{p}: {fname} has {f.stat().st_size} bytes, the manifest says {meta.get('bytes')} (truncated or replaced)"
            )
        if verify and sha256(f) != meta.get("sha256"):
            raise IndexFormatError(f"{p}: checksum mismatch in {fname} (corrupted)")
        try:
            if fname == ROUTERS:
                routers = load_file(str(f))
                continue
            arr = np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError, SafetensorError) as e:
            raise IndexFormatError(f"{p}: unreadable {fname} ({e})") from None
        if list(arr.shape) != meta.get("shape") or str(arr.dtype) != meta.get("dtype"):
            raise IndexFormatError(f"{p}: {fname} has shape {arr.shape} {arr.dtype}, manifest says {meta.get('shape')} {meta.get('dtype')}")
        arrays[fname[:-4]] = arr
    return man, arrays, routers
