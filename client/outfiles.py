"""Files under OUT: names the file system accepts, no symlink followed, durable renames.

Everything framestream writes below OUT goes through here. Directories are walked one
component at a time with ``dir_fd`` and ``O_NOFOLLOW``, so a symlink placed inside OUT (at an
output's place or on the way to it) is refused instead of written through; OUT itself is
the user's choice and may be a symlink. OS errors are translated at this boundary: a full,
read-only or vanished OUT is an :class:`OutputStorageError` (the run stops), anything else an
:class:`OutputError` (that video fails).

Temporaries are per process: ``.NAME.<pid>-<random>.tmp``, created with ``O_EXCL``, so two
processes never write (or remove) each other's, and a link planted at a guessed name is never
followed. A file is first *staged* (written and fsynced under its temporary, :class:`Staged`)
and *committed* (renamed into place) only when everything it belongs with is ready.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import OutputError, OutputStorageError

__all__ = ["Output", "OutTree", "HashingFile", "Staged", "translate", "boundary", "display_rel", "summary_rel",
           "DIGEST", "write_atomically", "temp_name", "is_temp_name", "sweep_temporaries"]

DIGEST = "sha256"
# Room left in every file name for what any output adds to a video's name: the longest is
# the temporary of a sidecar, "." + NAME + ".meta.json" + ".<pid>-<6 hex>.tmp" (a pid has at
# most 7 digits on Linux): 30 bytes.
NAME_RESERVE = 32
_TEMP = re.compile(r"\..+\.(\d{1,7})-[0-9a-f]{6}\.tmp")
_HASH_CHARS = 12  # of the full relative path, in a shortened name: 48 bits, collision-free in practice
_KEPT_EXTENSION = 16  # a video extension up to this many bytes stays visible in a shortened name
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Output:
    """A complete output: where it is, and the size and digest the resume check verifies."""

    path: Path
    size: int
    sha256: str


def display_rel(rel: str) -> str:
    """A relative path as valid UTF-8 text: bytes that are not UTF-8 (a Linux name like
    b"caf\\xe9.mp4", which Python holds as surrogate escapes) are written as ``\\xe9``."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def summary_rel(path: Path, out: Path) -> str:
    """An output's path relative to OUT, as summary.json lists it (valid UTF-8 text)."""
    return display_rel(path.relative_to(out).as_posix())


def translate(e: OSError, what: str, out: Path | None = None) -> OutputError:
    """The one place OS errors become output errors; ``what`` names the file or folder, ``out``
    the output folder, whose disappearance is a storage error too."""
    if isinstance(e, OutputError):
        return e
    reason = e.strerror or str(e)
    if e.errno == errno.ENOENT and out is not None and not out.is_dir():
        return OutputStorageError(f"cannot write {what}: the output folder {out} no longer exists; "
                                  "recreate it (or choose another --out) and rerun to resume")
    if e.errno in _STORAGE_ERRNOS:
        return OutputStorageError(f"cannot write {what}: {reason}; free space or choose another --out, "
                                  "then rerun to resume")
    return OutputError(f"cannot write {what}: {reason}")


@contextmanager
def boundary(what: str, out: Path | None = None) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise translate(e, what, out) from e


def _fit(name: str, limit: int, key: str, *, keep_extension: bool) -> str:
    """``name`` if its encoded length fits ``limit``, else a truncated name + a hash of ``key``."""
    if len(os.fsencode(name)) <= limit:
        return name
    digest = hashlib.sha256(os.fsencode(key)).hexdigest()[:_HASH_CHARS]
    stem, dot, ext = name.rpartition(".")
    tail = f".{ext}" if keep_extension and dot and stem and len(os.fsencode(ext)) < _KEPT_EXTENSION else ""
    head = stem if tail else name
    room = limit - len(f"~{digest}{tail}")
    while len(os.fsencode(head)) > room:  # by characters: a multi-byte one is never split
        head = head[:-1]
    return f"{head}~{digest}{tail}"


class OutTree:
    """The output folder: safe names for a video's outputs, and directory handles below it."""

    def __init__(self, out: Path, *, name_max: int | None = None) -> None:
        self.out = Path(out)
        self._name_max = name_max  # None: asked of the file system when first needed

    @property
    def name_max(self) -> int:
        """The file system's longest name in bytes, asked of OUT (or its nearest existing parent)."""
        if self._name_max is None:
            probe = self.out
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            try:
                self._name_max = min(255, os.pathconf(probe, "PC_NAME_MAX"))
            except (OSError, ValueError):
                self._name_max = 255
        return self._name_max

    def stem(self, rel: str, *, dataset: bool = False) -> tuple[str, ...]:
        """The components of a video's output stem: each fits the name limit, the file name
        with room for any suffix (``NAME_RESERVE``). A shortened component ends with a hash of
        the relative path up to it, so two long names never share an output. ``dataset``: no
        component starts with '_' (dataset readers skip those), escaped as '%_' ('%' as '%%')."""
        parts = rel.split("/")
        if dataset:
            parts = [f"%{p}" if p[:1] in ("_", "%") else p for p in parts]
        fitted = [_fit(p, self.name_max, "/".join(parts[: i + 1]), keep_extension=False)
                  for i, p in enumerate(parts[:-1])]
        fitted.append(_fit(parts[-1], self.name_max - NAME_RESERVE, rel, keep_extension=True))
        return tuple(fitted)

    def path(self, parts: tuple[str, ...]) -> Path:
        return self.out.joinpath(*parts)

    def open_dir(self, parts: tuple[str, ...], *, create: bool) -> int:
        """A file descriptor of ``OUT/parts`` (the caller closes it), made when ``create``.

        Raises FileNotFoundError when a part is missing and not ``create``; OutputError when one
        is a symlink or not a folder; OutputStorageError when OUT itself is gone.
        """
        try:
            fd = os.open(self.out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise OutputStorageError(f"the output folder {self.out} no longer exists; "
                                     "recreate it (or choose another --out) and rerun to resume") from e
        try:
            for i, name in enumerate(parts):
                created = False
                if create:
                    try:
                        os.mkdir(name, dir_fd=fd)
                        created = True
                    except FileExistsError:
                        pass
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise self.refusal(parts[: i + 1], fd, name) from e
                    raise
                if created:
                    os.fsync(fd)  # the new folder's entry is durable before files appear in it
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def refusal(self, parts: tuple[str, ...], dir_fd: int, name: str) -> OutputError:
        """Why ``name`` (in ``dir_fd``) cannot be used: a symlink, or not what it should be."""
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "in the way (not a regular file or folder)"
        return OutputError(f"{self.path(parts)} is {kind}; remove it (framestream never writes through it)")

    def check_replaceable(self, parts: tuple[str, ...], dir_fd: int) -> None:
        """Refuse an output's place that holds a symlink or anything but a regular file."""
        try:
            st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(st.st_mode):
            raise self.refusal(parts, dir_fd, parts[-1])

    def create_hidden(self, name: str, dir_fd: int) -> tuple[str, int]:
        """A fresh temporary of this process for ``name`` in ``dir_fd`` (:func:`temp_name`),
        opened read-write; ``O_EXCL``: never another's file, never through a link."""
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(8):
            tmp = temp_name(name)
            try:
                return tmp, os.open(tmp, flags, 0o666, dir_fd=dir_fd)
            except FileExistsError:  # taken (a leftover, or planted): draw another name
                continue
        raise FileExistsError(errno.EEXIST, f"no free temporary name for {name}")

    def write_file(self, parts: tuple[str, ...], data: bytes) -> Output:
        """Write a small file below OUT whole or not at all (:func:`write_atomically`), with its
        size and digest."""
        path = write_atomically(self, parts, lambda f: f.write(data))
        return Output(path, len(data), hashlib.sha256(data).hexdigest())

    def stage_file(self, parts: tuple[str, ...], data: bytes) -> "Staged":
        """``data`` staged beside ``parts`` (:meth:`stage`)."""
        return self.stage(parts, lambda f: f.write(data))

    def stage(self, parts: tuple[str, ...], write: Callable[[BinaryIO], object]) -> "Staged":
        """A file written by ``write`` (into a seekable binary file object) and fsynced under a
        temporary beside ``parts``, not yet in place: :meth:`Staged.commit` puts it there. A
        symlink or non-file at the place is refused now; on any failure the temporary is removed
        and the error raised (OS errors translated)."""
        path = self.path(parts)
        with boundary(str(path), self.out):
            d = self.open_dir(parts[:-1], create=True)
            try:
                self.check_replaceable(parts, d)
                tmp, fd = self.create_hidden(parts[-1], d)
                try:
                    with os.fdopen(fd, "w+b") as f:
                        write(f)
                        f.flush()
                        os.fsync(f.fileno())
                        size, digest = _measure(f)
                except BaseException:
                    with suppress(OSError):
                        os.unlink(tmp, dir_fd=d)
                    raise
            finally:
                os.close(d)
        return Staged(self, parts, tmp, Output(path, size, digest))

    def link_aside(self, name: str, dir_fd: int) -> str | None:
        """A hidden hard link (a temporary of this process) to the file ``name`` in ``dir_fd``, so
        that the file a rename is about to replace can be put back; None when there is none."""
        for _ in range(8):
            aside = temp_name(name)
            try:
                os.link(name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                return aside
            except FileNotFoundError:
                return None
            except FileExistsError:  # taken (a leftover, or planted): draw another name
                continue
        raise FileExistsError(errno.EEXIST, f"no free temporary name for {name}")

    def open_regular(self, parts: tuple[str, ...]):
        """A regular file below OUT opened for reading, or None if missing, a symlink or unreadable."""
        try:
            d = self.open_dir(parts[:-1], create=False)
        except (OSError, OutputError):
            return None
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
        except OSError:
            return None
        finally:
            os.close(d)
        f = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            f.close()
            return None
        return f

    def remove(self, parts: tuple[str, ...]) -> bool:
        """Remove a regular file below OUT if there is one; never follows a link. True if removed."""
        try:
            d = self.open_dir(parts[:-1], create=False)
        except FileNotFoundError:
            return False
        except OutputError:
            return False  # a symlink on the way: what lies behind it is not ours to remove
        try:
            st = os.stat(parts[-1], dir_fd=d, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                return False
            os.unlink(parts[-1], dir_fd=d)
            return True
        except FileNotFoundError:
            return False
        finally:
            os.close(d)


class HashingFile:
    """A temporary output being written: buffered, hashed and counted as it goes."""

    def __init__(self, fd: int) -> None:
        self._f = os.fdopen(fd, "w+b", buffering=1 << 16)
        self._hash = hashlib.sha256()
        self.size = 0

    @property
    def raw(self):
        """The file object, for writers (pyarrow) that write themselves; call ``rehash`` after."""
        return self._f

    def write(self, data: bytes) -> None:
        self._f.write(data)
        self._hash.update(data)
        self.size += len(data)

    def rehash(self) -> None:
        """Hash what is in the file, once, when another library wrote it."""
        self._f.flush()
        self._f.seek(0)
        self._hash, self.size = hashlib.sha256(), 0
        for chunk in iter(lambda: self._f.read(1 << 20), b""):
            self._hash.update(chunk)
            self.size += len(chunk)

    def sync_close(self) -> str:
        """Flush, fsync and close; the digest of the bytes written."""
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        return self._hash.hexdigest()

    def close_quietly(self) -> bool:
        """Close after a failure; False if buffered bytes could not be written (the file is short).
        The descriptor is closed either way (the buffered file closes its raw file in a finally)."""
        if self._f.closed:
            return True
        try:
            self._f.close()
            return True
        except OSError:
            return False


@dataclass
class Staged:
    """A file written under its temporary, waiting to be renamed into place (or dropped)."""

    tree: OutTree
    parts: tuple[str, ...]
    tmp: str
    output: Output
    state: str = "staged"  # "committed" or "discarded" after
    aside: str | None = None  # the file the commit replaces, kept by keep_earlier until release or restore

    def _rename(self, src: str, dst: str) -> None:
        d = self.tree.open_dir(self.parts[:-1], create=False)
        try:
            os.replace(src, dst, src_dir_fd=d, dst_dir_fd=d)
            os.fsync(d)
        finally:
            os.close(d)

    def commit(self) -> None:
        """Rename into place, durably (the folder fsynced); OutputError on failure."""
        with boundary(str(self.output.path), self.tree.out):
            self._rename(self.tmp, self.parts[-1])
        self.state = "committed"

    def discard(self) -> None:
        """Drop the temporary (never raises): nothing of it reaches its place."""
        if self.state == "staged":
            with suppress(OSError, OutputError):
                self.tree.remove((*self.parts[:-1], self.tmp))
            self.release()
        self.state = "discarded"

    def keep_earlier(self) -> None:
        """Before :meth:`commit`: keep the file it will replace (if any) under a hidden link, so
        that :meth:`restore` can put it back; OutputError on failure."""
        with boundary(str(self.output.path), self.tree.out):
            d = self.tree.open_dir(self.parts[:-1], create=False)
            try:
                self.aside = self.tree.link_aside(self.parts[-1], d)
            finally:
                os.close(d)

    def restore(self) -> None:
        """Undo a commit (never raises): the earlier file kept by :meth:`keep_earlier` goes back
        in place, or, when there was none, the committed file is removed."""
        if self.state != "committed":
            return
        self.state = "discarded"
        with suppress(OSError, OutputError):
            if self.aside is None:
                self.tree.remove(self.parts)
                return
            self._rename(self.aside, self.parts[-1])
            self.aside = None

    def release(self) -> None:
        """Drop the earlier file kept aside (never raises): the commit stands."""
        if self.aside is not None:
            with suppress(OSError, OutputError):
                self.tree.remove((*self.parts[:-1], self.aside))
            self.aside = None


def temp_name(name: str) -> str:
    """This process's temporary for ``name``: hidden, with the pid and a random token."""
    return f".{name}.{os.getpid()}-{secrets.token_hex(3)}.tmp"


def is_temp_name(name: str) -> bool:
    return _TEMP.fullmatch(name) is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, not ours to signal
    return True


def sweep_temporaries(out: Path) -> int:
    """Remove the temporaries interrupted runs left below OUT (a SIGKILL leaves them). Called
    only by a run holding OUT's lock exclusively, so no other run is writing there; a temporary
    whose pid is alive on this host is left alone all the same (another tool's, or a reused pid).
    Regular files only, no link followed; returns how many were removed."""
    removed = 0
    for _, _, files, dir_fd in os.fwalk(out):  # by folder descriptors, no link to a folder followed
        for name in files:
            m = _TEMP.fullmatch(name)
            if m is None or int(m[1]) == os.getpid() or _alive(int(m[1])):
                continue
            with suppress(OSError):
                if stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    os.unlink(name, dir_fd=dir_fd)
                    removed += 1
    return removed


def write_atomically(tree: OutTree, parts: tuple[str, ...], write: Callable[[BinaryIO], object]) -> Path:
    """A whole file below OUT, or nothing: ``write`` fills a hidden temporary (a binary file
    object, seekable), which is fsynced and renamed into place only if ``write`` returns; on
    any failure the temporary is removed and the error raised (OS errors translated)."""
    staged = tree.stage(parts, write)
    try:
        staged.commit()
    except BaseException:
        staged.discard()
        raise
    return staged.output.path


def _measure(f: BinaryIO) -> tuple[int, str]:
    """The size and digest of what ``f`` holds (read back: ``write`` may have seeked)."""
    f.seek(0)
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()
