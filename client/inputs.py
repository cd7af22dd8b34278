"""What a run reads: a directory, video files, globs, or a list of paths (``--from-list``).

Every input becomes a path relative to one ``root``, and each video's outputs are named by
that relative path (``OUT/<rel>.jsonl``), so names are stable and never collide:

- one directory: ``root`` is that directory, exactly as the directory-only framestream named
  outputs (an earlier run's outputs and resume records keep their names);
- anything else: ``root`` is the deepest folder holding every input (a file's own folder,
  a directory itself). One file ``clips/a.mp4`` writes ``OUT/a.mp4.jsonl``; ``x/a.mp4`` and
  ``y/a.mp4`` write ``OUT/x/a.mp4.jsonl`` and ``OUT/y/a.mp4.jsonl``; ``DIR/*.mp4`` names its
  files as ``DIR`` does.

A path that does not exist, a glob that matches nothing, or a list naming missing files is a
:class:`~client.errors.UsageError` raised before anything is written.
"""

from __future__ import annotations

import errno
import glob
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

__all__ = ["Inputs", "resolve_inputs", "read_list"]

_GLOB_CHARS = frozenset("*?[")
_LISTED_MISSING = 3  # missing paths named in the one error line; the rest are counted


@dataclass(frozen=True)
class Inputs:
    """The resolved inputs: directories walked recursively, files taken as given."""

    root: Path  # outputs are named by paths relative to it
    dirs: tuple[Path, ...] = ()
    files: tuple[Path, ...] = ()

    def describe(self) -> str:
        parts = [f"{len(self.dirs)} director{'y' if len(self.dirs) == 1 else 'ies'}" if self.dirs else "",
                 f"{len(self.files)} file{'' if len(self.files) == 1 else 's'}" if self.files else ""]
        return f"{' and '.join(p for p in parts if p)} under {self.root}"


def absolute(inputs: "Inputs | Path") -> "Inputs | Path":
    """The same inputs with absolute paths (for processes whose working folders differ)."""
    if isinstance(inputs, Inputs):
        return Inputs(root=Path(os.path.abspath(inputs.root)), dirs=tuple(Path(os.path.abspath(d)) for d in inputs.dirs),
                      files=tuple(Path(os.path.abspath(f)) for f in inputs.files))
    return Path(os.path.abspath(inputs))


def resolve_inputs(paths: Sequence[str | Path], from_list: str | Path | None = None) -> Inputs:
    """The run's inputs from the command line's paths and ``--from-list`` (``-``: stdin)."""
    given = [str(p) for p in paths]
    if from_list is not None:
        given += read_list(str(from_list))
    if not given:
        raise UsageError("no input: give a directory of videos, video files, a glob or --from-list FILE")
    if len(given) == 1 and from_list is None and os.path.isdir(given[0]):
        return Inputs(root=Path(given[0]), dirs=(Path(given[0]),))  # the directory run, named as always
    dirs: list[str] = []
    files: list[str] = []
    for text in given:
        for path in _expand(text):
            (dirs if os.path.isdir(path) else files).append(os.path.abspath(path))
    dirs = _outermost(sorted(set(dirs)))
    files = sorted(set(files))
    root = os.path.commonpath([*dirs, *(os.path.dirname(f) for f in files)])
    return Inputs(root=Path(root), dirs=tuple(map(Path, dirs)), files=tuple(map(Path, files)))


def _expand(text: str) -> list[str]:
    """A path that exists, or the paths a glob pattern matches (sorted); else a UsageError."""
    if os.path.exists(text):
        _check_kind(text)
        return [text]
    if _GLOB_CHARS & set(text):
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise UsageError(f"{text}: no file matches this pattern")
        for m in matches:
            _check_kind(m)
        return matches
    if os.path.islink(text):
        raise UsageError(f"{text}: a broken symlink; point it at a video or leave it out")
    raise UsageError(f"{text}: not a directory or a file; give a directory of videos, video files, "
                     "a glob or --from-list FILE")


def _check_kind(path: str) -> None:
    if not (os.path.isdir(path) or os.path.isfile(path)):
        raise UsageError(f"{path}: {not_regular(path)}; give a directory of videos or video files")


_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"))


def not_regular(path: str | Path) -> str:
    """What ``path`` is, when it is neither a regular file nor a directory (symlinks followed):
    "not a regular file (FIFO)", "not a regular file (a symlink to a character device)",
    "broken symlink", ... so that a skipped entry says why in words a person can act on."""
    link = os.path.islink(path)
    try:
        st = os.stat(path)
    except OSError as e:
        if not link:
            return f"cannot read: {e.strerror or e}"
        if e.errno == errno.ELOOP:
            return "symlink loop"
        return "broken symlink" if e.errno == errno.ENOENT else f"symlink that cannot be followed ({e.strerror or e})"
    kind = next((name for test, name in _KINDS if test(st.st_mode)), "special file")
    return f"not a regular file ({'a symlink to a ' if link else ''}{kind})"


def _outermost(dirs: list[str]) -> list[str]:
    """Sorted directories without those inside another one (walking the outer finds them)."""
    kept: list[str] = []
    for d in dirs:
        if not any(os.path.commonpath([k, d]) == k for k in kept):
            kept.append(d)
    return kept


def read_list(source: str) -> list[str]:
    """The paths of ``--from-list`` (one a line, as bytes: any name the file system allows;
    blank lines ignored; relative paths from the current directory). Every listed path must
    exist: the missing ones are named in one UsageError, so a run never starts on part of a list."""
    try:
        if source == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(source, "rb") as f:
                data = f.read()
    except OSError as e:
        raise UsageError(f"--from-list {source}: cannot read it ({e.strerror or e})") from e
    lines = [(n, os.fsdecode(line.rstrip(b"\r"))) for n, line in enumerate(data.split(b"\n"), 1)]
    paths = [(n, p) for n, p in lines if p.strip()]
    if not paths:
        raise UsageError(f"--from-list {source}: lists no paths, so no videos found (one path a line)")
    missing = [(n, p) for n, p in paths if not os.path.exists(p)]
    if missing:
        named = ", ".join(f"line {n}: {p!r}" for n, p in missing[:_LISTED_MISSING])
        more = f" and {len(missing) - _LISTED_MISSING} more" if len(missing) > _LISTED_MISSING else ""
        raise UsageError(f"--from-list {source}: {len(missing)} of {len(paths)} paths do not exist ({named}{more}); "
                         "fix or remove them and rerun")
    return [p for _, p in paths]
