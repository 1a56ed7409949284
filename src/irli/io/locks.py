"""Who may write an index directory: the WriterLock of a long-lived writer,
the lock a save holds on its temporary directory, the staging files of a
streamed build, and the clean-up of those whose process died (see
irli.io.storage for the directory layout and the atomic save)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

from ..errors import IndexLockedError, SaveError

SAVE_MARK = ".saving"  # the file a save in progress holds locked inside its temporary directory


def save_error(dest: Path, e: OSError) -> SaveError:
    """A one-line SaveError for an OSError met while saving to `dest`."""
    reason = e.strerror or str(e) or type(e).__name__
    if e.errno in (None, errno.ENOSPC, errno.EDQUOT):  # numpy says "N requested and M written" on a full disk
        try:
            reason += f"; {shutil.disk_usage(dest.parent).free:,} bytes free there"
        except OSError:
            pass
    return SaveError(f"{dest}: could not save the index ({reason}); what was saved there before is unchanged")


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


def save_guard(dest: Path) -> int | None:
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


def hold_save(tmp: Path) -> int:
    """Mark `tmp` as being written by this process: an exclusively locked
    file `.saving` in it (locked before it gets its name, so no other
    process sees it unlocked). The lock dies with the process."""
    staging = tmp / f"{SAVE_MARK}.{uuid.uuid4().hex[:8]}"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(staging, tmp / SAVE_MARK)
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
            fd = os.open(d / SAVE_MARK, os.O_RDONLY | os.O_NOFOLLOW)
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
