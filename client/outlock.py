"""One run per output folder: a lock on ``OUT/.framestream.lock`` held for the whole run.

Two runs writing one OUT would replace each other's outputs and records, so a run takes the
lock before any work and a second run stops at once, naming the holder (its pid, host, start
time and command, which the holder writes into the lock file). Shards of one job
(``--shard I/N``, and ``--devices``, whose processes are shards) share OUT by design: each
takes the folder's lock shared and its own shard's lock (``OUT/.framestream/shard-I-of-N.lock``)
exclusively, so shards run side by side while an unsharded run, or a second copy of a shard,
is refused. Taking the lock is also the probe that OUT is writable, before anything is decoded.

``fcntl.flock``: the kernel releases the lock when its holder ends, however it ends (SIGKILL
included), so a lock never outlives its run. Files are opened below OUT with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import OutputBusyError, OutputError, UsageError
from .outfiles import OutTree, sweep_temporaries
from .resume import STATE_DIR
from .shards import Shard

log = logging.getLogger(__name__)

__all__ = ["hold_out", "open_lock", "LOCK_NAME"]

LOCK_NAME = ".framestream.lock"
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
_NAME_WAIT_S = 2.0  # how long a refused run waits for the holder's name (written right after its lock)


def open_lock(tree: OutTree, parts: tuple[str, ...], *, probe: bool = False) -> int:
    """The descriptor of the lock file at ``parts`` below OUT (made if missing, with its folder),
    never through a link; OSError or OutputError when it cannot be. ``probe``: also create and
    remove a file of this process beside it, so the folder is known writable, not merely the lock."""
    d = tree.open_dir(parts[:-1], create=True)
    try:
        fd = os.open(parts[-1], os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=d)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OutputError(f"{tree.path(parts)} is not a regular file; remove it")
            if probe:
                name, probe_fd = tree.create_hidden("probe", d)
                os.close(probe_fd)
                os.unlink(name, dir_fd=d)
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(d)
    return fd


def _open_lock(tree: OutTree, parts: tuple[str, ...]) -> int:
    """:func:`open_lock` with the probe, its failures as UsageError (the run has not started:
    exit 1, one line)."""
    where = tree.path(parts)
    try:
        return open_lock(tree, parts, probe=True)
    except OutputError as e:
        raise UsageError(f"cannot use the output folder {tree.out}: {e}") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UsageError(f"{where} is a symlink; remove it (framestream never writes through it)") from e
        raise UsageError(f"cannot write to the output folder {tree.out}: {e.strerror or e}; "
                         "make it writable or choose another --out") from e


def _try_lock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in _BUSY:
            return False
        raise
    return True


def _read_holder(fd: int) -> object:
    try:
        return json.loads(os.pread(fd, 65536, 0) or b"null")
    except (OSError, ValueError):
        return None


def _describe(fd: int) -> str:
    """Who holds a lock, as its holder wrote it into the file. The holder writes its name just
    after it takes the lock, so a refused run that looks in between waits a moment for it."""
    deadline = time.monotonic() + _NAME_WAIT_S
    holder = _read_holder(fd)
    while not isinstance(holder, dict) and time.monotonic() < deadline:
        time.sleep(0.02)
        holder = _read_holder(fd)
    if not isinstance(holder, dict):
        return "a framestream run that has not written its name yet"
    shard = f"shard {holder['shard']}, " if holder.get("shard") else ""
    return (f"{shard}pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')} "
            f"({holder.get('command')})")


def _write_holder(fd: int, shard: Shard | None) -> None:
    """Say who holds the lock (best effort: the lock itself is what excludes)."""
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv),
              "shard": f"{shard.index}/{shard.count}" if shard is not None else None}
    with suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)


def _clear_holder(fd: int) -> None:
    with suppress(OSError):
        os.ftruncate(fd, 0)


def _shard_holders(tree: OutTree) -> list[str]:
    """The shards running on OUT now: their lock files that are held."""
    try:
        d = tree.open_dir((STATE_DIR,), create=False)
    except (OSError, OutputError):
        return []
    held = []
    try:
        for name in sorted(os.listdir(d)):
            if not (name.startswith("shard-") and name.endswith(".lock")):
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
            except OSError:
                continue
            try:
                if not _try_lock(fd, fcntl.LOCK_SH):
                    held.append(_describe(fd))
            finally:
                os.close(fd)
    finally:
        os.close(d)
    return held


def _busy(out: Path, whom: str) -> OutputBusyError:
    return OutputBusyError(f"{out} is in use by another framestream run: {whom}; wait for it to end "
                           "or choose another --out")


@contextmanager
def hold_out(out: Path, shard: Shard | None = None) -> Iterator[None]:
    """Hold OUT for one run (or one shard of a job) until the block ends; OutputBusyError at once
    when another run holds it, UsageError when OUT cannot be written. An unsharded run, alone on
    OUT, also removes the temporaries that killed runs left there."""
    tree = OutTree(Path(out))
    fd = _open_lock(tree, (LOCK_NAME,))
    fds = [fd]
    try:
        if not _try_lock(fd, fcntl.LOCK_EX if shard is None else fcntl.LOCK_SH):
            if shard is None and _try_lock(fd, fcntl.LOCK_SH):  # held shared: shards of a job run
                fcntl.flock(fd, fcntl.LOCK_UN)
                raise _busy(out, "; ".join(_shard_holders(tree)) or "shards of a job")
            raise _busy(out, _describe(fd))
        own = fd
        if shard is not None:
            own = _open_lock(tree, (STATE_DIR, f"{shard.name}.lock"))
            fds.append(own)
            if not _try_lock(own, fcntl.LOCK_EX):
                raise _busy(out, _describe(own))
        _write_holder(own, shard)
        if shard is None:
            removed = sweep_temporaries(tree.out)
            if removed:
                log.info("removed %d temporary file(s) that interrupted runs left in %s", removed, out)
        try:
            yield
        finally:
            _clear_holder(own)
    finally:
        for f in reversed(fds):
            os.close(f)  # releases its lock
