"""One run per ledger: an exclusive ``flock`` on the ledger file itself, held for the run.

Why the file itself and not a lock file beside it: the lock must follow the file, not the
name. A symlink, a hard link, ``./x`` and ``x``, or a bind mount are different paths to one
inode; a lock file named after the path let two runs share a ledger through two such paths,
and one reconciled the other's live in-flight records away (duplicates). ``flock`` locks the
open file (the inode), so every path to it excludes every other.

Why ``flock`` and not ``fcntl``/``lockf``: SQLite takes POSIX (``fcntl``) locks on the same
file, and POSIX locks belong to the process: closing *any* descriptor of the file drops all
of them, and a lock of ours would be dropped when SQLite closes its descriptors. On Linux,
``flock`` locks are a separate kind, tied to our own open file description, and neither kind
sees the other. One rule keeps SQLite's locks intact: our descriptor is closed only after
SQLite's connection is closed (closing it would drop the process's POSIX locks on the file).
(On NFS, Linux emulates ``flock`` with POSIX locks; SQLite's WAL mode does not work on NFS
either, so a ledger there is unsupported anyway.)

The kernel drops the lock when the process dies, even on ``kill -9``.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from pipeline.errors import ConfigError, LedgerError

_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def check_ledger_path(path: str) -> None:
    """Refuse names SQLite would not take as a plain file: the ledger must outlive the run.

    ``:memory:`` (and ``""``, a temporary database) would keep the ledger in memory: the next
    run would not know what was sent and would send everything again. ``file:`` URIs could
    say the same thing in other words (``mode=memory``).
    """
    if not path.strip():
        raise ConfigError("configuration error: --ledger: must be a file path, not empty")
    if path == ":memory:" or path.startswith("file:"):
        raise ConfigError(
            f"configuration error: --ledger: {path!r} is not a file path; the ledger must be "
            "a file, since it is the memory of what was sent (a rerun reads it)"
        )


class LedgerLock:
    """The held lock; :meth:`release` only after the ledger's SQLite connection is closed."""

    def __init__(self, fd: int, path: str) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, path: str) -> LedgerLock:
        """Create the ledger file if it does not exist yet (mode 0600), then lock it."""
        target = Path(path)
        fd = _open_for_writing(target, path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _check_same_file(fd, target, path)
        except BlockingIOError:
            holder = _holder(os.fstat(fd))
            os.close(fd)
            raise LedgerError(
                f"ledger {path} is in use by another run ({holder}); an SQLite ledger takes "
                "one process at a time: for many workers use a postgresql:// ledger"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _open_for_writing(target: Path, path: str) -> int:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"configuration error: --ledger: cannot create the directory of {path}: {exc.strerror}"
        ) from None
    # WAL mode creates <ledger>-wal and -shm beside the file: a writable file in a read-only
    # directory would fail at the first write, once the run has started. Say so now.
    directory = target.resolve().parent
    if not os.access(directory, os.W_OK):
        raise ConfigError(
            f"configuration error: --ledger: directory {directory} is read-only; a run needs "
            f"to create {target.name} and its -wal and -shm files there (status can read it)"
        )
    try:
        # 0600 before SQLite ever opens it: the ledger holds feedback text. SQLite gives its
        # -wal and -shm files the database file's permissions.
        return os.open(target, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except IsADirectoryError:
        raise ConfigError(f"configuration error: --ledger: {path} is a directory") from None
    except OSError as exc:
        if exc.errno in _READ_ONLY:
            raise ConfigError(
                f"configuration error: --ledger: {path} is read-only ({exc.strerror}); a run "
                "writes every outcome there (status can still read it)"
            ) from None
        raise ConfigError(f"configuration error: --ledger: cannot open {path}: {exc}") from None


def _check_same_file(fd: int, target: Path, path: str) -> None:
    """The path still names the locked file (it was not replaced between open and lock)."""
    locked = os.fstat(fd)
    try:
        now = os.stat(target)
    except OSError:
        now = None
    if now is None or (now.st_dev, now.st_ino) != (locked.st_dev, locked.st_ino):
        raise LedgerError(f"ledger {path} was replaced while it was being opened; run again")
    if locked.st_nlink > 1:
        # The lock covers every name, but SQLite keeps its -wal file beside the name it opened:
        # after a kill -9 through one name, a run through another would not see the last
        # commits (claims in flight among them) and would send those records again.
        raise ConfigError(
            f"configuration error: --ledger: {path} has {locked.st_nlink} hard links; use one "
            "name for a ledger (a symlink is fine): SQLite's -wal file follows the name"
        )


def lock_holder(path: str) -> str | None:
    """Which process holds the ledger ``path`` for a run now (``pid N``), None if none seems
    to (or it cannot be told: no /proc/locks). Reads only; never takes the lock, which could
    make a run starting at that moment fail."""
    try:
        found = _holder(os.stat(path))
    except OSError:
        return None
    return None if found == "pid unknown" else found


def _holder(locked: os.stat_result) -> str:
    """Which process holds the lock, from /proc/locks (Linux); best effort, for the message.

    Matched on the inode number alone: the device there is the kernel's, which need not be
    the one ``stat`` reports (overlay file systems).
    """
    wanted_ino = str(locked.st_ino)
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "pid unknown"
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; "->" marks a blocked waiter.
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[2] == "->":
            continue
        _, _, ino = fields[5].rpartition(":")
        if ino == wanted_ino:
            return f"pid {fields[4]}"
    return "pid unknown"
