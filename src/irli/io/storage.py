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
  centres.npy          float32 (R, B, d) bucket centroids (spilling, residual codes)
  sqnorms.npy          float32 (N,) squared norms (l2 indexes only)
  live.npy             bool (N,) False where an item was removed (only if any was)
  pq_books.npy         float32 (R, M, 16, d / M) and pq_codes.npy uint8 (R, c or 1,
                       N, ceil(M / 2)): 4-bit PQ codes (scan="pq4" only)
  routers.safetensors  router weights, keys "<rep>.<name>"
A label index directory (task "xml") holds w1, b1, w2, b2, assign int32 (R, L),
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

import contextlib
import ctypes
import errno
import fcntl
import glob
import hashlib
import json
import mmap
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexFormatError, IndexLockedError, IrliError, SaveError
from ..validation import first_duplicate

FORMAT = "irli-index"
# 3: the first format this irli reads (live.npy for removed items, PQ codes
# as pq_books.npy + pq_codes.npy); directories of versions 1 and 2, written
# during development, must be rebuilt
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
ROUTERS = "routers.safetensors"
# what a manifest may name: plain files of the index directory itself
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.(npy|safetensors)")
_LOCK = ".saving"


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
    guard = _save_guard(dest)
    try:
        return _write(dest, arrays, routers, manifest, staged, parts)
    except OSError as e:
        if isinstance(e, IrliError):
            raise
        raise save_error(dest, e) from None
    finally:
        if guard is not None:
            os.close(guard)


def save_error(dest: Path, e: OSError) -> SaveError:
    """A one-line SaveError for an OSError met while saving to `dest`."""
    reason = e.strerror or str(e) or type(e).__name__
    if e.errno in (None, errno.ENOSPC, errno.EDQUOT):  # numpy says "N requested and M written" on a full disk
        try:
            reason += f"; {shutil.disk_usage(dest.parent).free:,} bytes free there"
        except OSError:
            pass
    return SaveError(f"{dest}: could not save the index ({reason}); what was saved there before is unchanged")


def _write(dest: Path, arrays, routers, manifest, staged, parts) -> Path:
    from safetensors.numpy import save_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(dest)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    lock = _hold(tmp)
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
            os.unlink(dest / _LOCK)
        except OSError:  # pragma: no cover
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        os.close(lock)
    return dest


def _unlocked(f: Path) -> bool:
    """Whether no process holds a lock on the file `f` (False if unreadable)."""
    try:
        fd = os.open(f, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


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


def _writer_file(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.writer"


def _key(dest: Path) -> str:
    return os.path.realpath(dest)


class WriterLock:
    """The right to change the index directory at `path`, held by one
    writer at a time: an exclusive lock on the sibling file `.NAME.writer`
    that dies with its process. While it is held, saves to the path are
    refused with IndexLockedError, but those made inside `lock.saving()`
    by the holder. Acquiring waits up to `wait_s` for saves in progress,
    then raises IndexLockedError naming the holder.

    >>> lock = WriterLock(path)
    >>> with lock.saving():
    ...     index.add(x, save_to=path)
    >>> lock.release()
    """

    _held: dict[str, "WriterLock"] = {}
    _guard = threading.Lock()
    _active = threading.local()  # the lock whose holder saves in this thread

    def __init__(self, path: str | os.PathLike, wait_s: float = 10.0, holder: str = "") -> None:
        self.path = Path(path)
        file = _writer_file(self.path)
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    who = _holder(fd)
                    os.close(fd)
                    raise IndexLockedError(
                        f"{self.path}: another writer holds this index ({who or 'a save in progress'}); "
                        "stop it first, or open the index read-only") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        self.holder = f"pid {os.getpid()}{', ' + holder if holder else ''}"
        os.write(fd, self.holder.encode())
        self._fd: int | None = fd
        with WriterLock._guard:
            WriterLock._held[_key(self.path)] = self

    @contextlib.contextmanager
    def saving(self):
        """Saves to the path in this thread, within the block, are the holder's."""
        WriterLock._active.lock = self
        try:
            yield self
        finally:
            WriterLock._active.lock = None

    def release(self) -> None:
        """Let other writers in (also on exit of a `with` block)."""
        with WriterLock._guard:
            if WriterLock._held.get(_key(self.path)) is self:
                del WriterLock._held[_key(self.path)]
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WriterLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:  # pragma: no cover
        return ""


def _save_guard(dest: Path) -> int | None:
    """Before a save to `dest`: None for the holder of its WriterLock
    saving within `saving()`, or where no writer ever held one; else an fd
    holding a shared lock on `.NAME.writer` for the save's duration (so no
    writer takes the path mid-save). Raises IndexLockedError while another
    writer holds it."""
    held = WriterLock._held.get(_key(dest))
    if held is not None:
        if getattr(WriterLock._active, "lock", None) is held:
            return None
        raise IndexLockedError(f"{dest}: another writer holds this index ({held.holder}); refusing to save over "
                               "its changes")
    try:
        fd = os.open(_writer_file(dest), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        who = _holder(fd)
        os.close(fd)
        raise IndexLockedError(f"{dest}: another writer holds this index ({who}); refusing to save over "
                               "its changes") from None
    return fd


def _hold(tmp: Path) -> int:
    """Mark `tmp` as being written by this process: an exclusively locked
    file `.saving` in it (locked before it gets its name, so no other
    process sees it unlocked). The lock dies with the process."""
    staging = tmp / f"{_LOCK}.{uuid.uuid4().hex[:8]}"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(staging, tmp / _LOCK)
    return fd


def stage_file(dest: Path, kind: str) -> tuple[Path, int]:
    """A new, empty staging file for a save to `dest` (a streamed build
    writes its vectors and codes there before they are moved in):
    `.NAME.stage-KIND-TAG.npy` beside `dest`, locked by the returned fd
    (close it when done; the lock dies with the process, and a later save
    to `dest` then deletes the file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    making = dest.parent / f".{dest.name}.staging-{tag}"
    fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # locked before it gets a name remove_abandoned looks for
    final = dest.parent / f".{dest.name}.stage-{kind}-{tag}.npy"
    os.rename(making, final)
    return final, fd


def preallocate(fd: int, size: int, dest: Path) -> None:
    """Reserve `size` bytes for the file open as `fd`, so that writing it
    through a memory map cannot meet a full disk (a SIGBUS): SaveError
    naming `dest` if the space is not there."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # pragma: no cover - no fallocate here
            return
        raise save_error(dest, OSError(e.errno, f"{e.strerror}: {size:,} bytes needed for staging")) from None


def remove_abandoned(dest: Path) -> list[Path]:
    """Delete the temporary directories of saves to `dest`, and the staging
    files of builds of it, whose process died: those nobody holds locked
    (a directory's `.saving` file, the staging file itself). Directories
    without a `.saving` file are left alone (they cannot be proven
    abandoned). Returns what was removed."""
    gone = []
    try:
        for f in dest.parent.glob(f".{glob.escape(dest.name)}.stage-*.npy"):
            if _unlocked(f):
                with contextlib.suppress(OSError):
                    f.unlink()
                    gone.append(f)
        siblings = list(dest.parent.glob(f".{glob.escape(dest.name)}.tmp-*"))
    except OSError:
        return gone
    for d in siblings:
        try:
            fd = os.open(d / _LOCK, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a save in progress
            os.close(fd)
            continue
        try:
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
        finally:
            os.close(fd)
    return gone


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


# -- what an index directory must hold -----------------------------------------------
def router_states(tensors: dict[str, np.ndarray], n_reps: int) -> list[dict[str, np.ndarray]]:
    """The router weights of routers.safetensors ("<rep>.<name>") as one
    state dict per repetition."""
    states: list[dict[str, np.ndarray]] = [{} for _ in range(n_reps)]
    for key, v in tensors.items():
        rep, _, name = key.partition(".")
        if rep.isdigit() and int(rep) < n_reps:
            states[int(rep)][name] = v
    return states


def check_vector_index(path, man: dict[str, Any], n_reps: int, copies: int, l2: bool, pq: bool,
                       arrays: dict[str, np.ndarray], tensors: dict[str, np.ndarray]) -> None:
    """Refuse (IndexFormatError) a vector index directory whose arrays miss,
    disagree in shape with each other or the manifest, point outside their
    range (list positions, bucket ids), hold NaN in the small float arrays
    (vectors are left to the checksums), or whose ids, live mask, next_id or
    history are malformed. Checks what a crafted directory could use to read
    out of bounds even when checksums are not verified."""
    need = ["vectors", "ids", "offsets", "lists", "assign", "centres"]
    part = man.get("part") is not None  # one part of a sharded index: only its buckets' entries are listed
    need += ["sqnorms"] if l2 else []
    need += ["pq_books", "pq_codes"] if pq else []
    _require(path, arrays, need)
    n, d = arrays["vectors"].shape
    reps, b1 = arrays["offsets"].shape
    width = arrays["lists"].shape[1] if arrays["lists"].ndim == 2 else -1
    if (arrays["ids"].shape != (n,) or arrays["lists"].shape != (reps, width)
            or width != copies * n and not (part and width <= copies * n)
            or arrays["assign"].shape != (reps, copies, n) or arrays["centres"].shape != (reps, b1 - 1, d)
            or reps != n_reps or b1 - 1 != man.get("n_buckets")):
        raise IndexFormatError(f"{path}: array shapes do not agree with each other or the manifest")
    offsets = np.asarray(arrays["offsets"])
    ends = offsets[:, -1]
    if ((offsets[:, 0] != 0).any() or (np.diff(offsets, axis=1) < 0).any()
            or ((ends > width) if part else (ends != width)).any()):
        raise IndexFormatError(f"{path}: inverted-list offsets are inconsistent")
    for name, hi in (("lists", n), ("assign", b1 - 1)):
        a = np.asarray(arrays[name])
        if a.size and (a.min() < 0 or a.max() >= hi):
            raise IndexFormatError(f"{path}: {name}.npy holds entries outside [0, {hi}) (corrupted)")
    small = {name: arrays[name] for name in ("centres", "sqnorms", "pq_books") if name in arrays}
    _check_finite(path, {**small, **tensors})
    live = arrays.get("live")
    if live is not None and (live.shape != (n,) or live.dtype != bool):
        raise IndexFormatError(f"{path}: live.npy must be bool ({n},), got {live.dtype} {live.shape}")
    ids = np.asarray(arrays["ids"])
    alive = ids if live is None else ids[np.asarray(live)]
    if alive.size and (alive.min() < 0 or first_duplicate(alive) is not None):
        raise IndexFormatError(f"{path}: item ids are negative or repeat (corrupted ids.npy)")
    next_id = man.get("next_id")
    if next_id is not None:
        if type(next_id) is not int or not 0 <= next_id <= 2**63:
            raise IndexFormatError(f"{path}: next_id in the manifest must be an integer >= 0, got {next_id!r}")
        if alive.size and next_id <= int(alive.max()):
            raise IndexFormatError(f"{path}: next_id {next_id} is not above the largest id {int(alive.max())}")
    history = man.get("history", {})
    if not isinstance(history, dict) or any(type(history.get(c, 0)) is not int for c in ("added", "removed")) \
            or not isinstance(history.get("drift_at_fit", {}), dict):
        raise IndexFormatError(f"{path}: history in the manifest is malformed (corrupted)")


def check_label_index(path, man: dict[str, Any], scorer: bool, n_buckets: int | None, probes: int | None,
                      loss: str, arrays: dict[str, np.ndarray]) -> None:
    """Refuse (IndexFormatError) a label index directory whose arrays miss,
    disagree in shape with each other or the manifest, hold bucket ids out
    of range or NaN."""
    _require(path, arrays, ("w1", "b1", "w2", "b2", "assign", "label_counts") + (("v", "c") if scorer else ()))
    a = arrays
    f, d = a["w1"].shape
    reps, h, b = a["w2"].shape
    n_labels = a["assign"].shape[1] if a["assign"].ndim == 2 else -1
    ok = (a["b1"].shape == (d,) and d == reps * h and a["b2"].shape == (reps, b)
          and a["assign"].shape == (reps, n_labels) and n_labels == man.get("n_labels")
          and b == man.get("n_buckets") and f == man.get("n_features")
          and a["label_counts"].shape == (n_labels,)
          and (not scorer or (a["v"].shape == (n_labels, d) and a["c"].shape == (n_labels,))))
    ok = ok and n_buckets == b and probes is not None and 1 <= probes <= b
    ok = ok and man.get("loss", loss) in ("sigmoid", "softmax") and type(man.get("n_train", 0)) is int
    assign = np.asarray(a["assign"])
    if not ok or assign.size and (assign.min() < 0 or assign.max() >= b):
        raise IndexFormatError(f"{path}: array shapes or bucket ids do not agree with each other or the manifest")
    _check_finite(path, a)


def _require(path, arrays: dict[str, np.ndarray], names) -> None:
    for name in names:
        if name not in arrays:
            raise IndexFormatError(f"{path}: missing {name}.npy")


def _check_finite(path, arrays: dict[str, np.ndarray]) -> None:
    """Refuse float arrays holding NaN or inf."""
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise IndexFormatError(f"{path}: {name} holds NaN or inf (corrupted)")
