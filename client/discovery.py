"""Find the videos under a directory: recursive, loops detected, probed by content.

Symlinks: a symlink to a FILE is followed wherever it points (one link names one file the
user chose to put there, e.g. a folder of links to videos kept elsewhere). A symlink to a
DIRECTORY is followed only while its target stays inside the root; one that leads out
(a link to ``/`` or a whole disk) is listed as skipped unless ``follow_links`` is set
(``--follow-links``), because the walk would not be bounded by the DIR the user named.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av

from .decode.checks import video_info
from .decode.container import NotAllowedFormat, describe_stream, open_input, video_stream
from .inputs import not_regular
from .terminal import printable

log = logging.getLogger(__name__)

# Files with these extensions that FFmpeg cannot open are damaged videos (an error), not
# other files (skipped). Anything else is recognised by probing its content.
VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .ts .m2ts .mts .mpg .mpeg .flv .wmv .3gp .ogv .h264 .h265 .hevc .ivf".split()
)


@dataclass(frozen=True)
class Candidate:
    path: Path  # as found under the root (symlinks not resolved)
    rel: str  # relative to the root, with '/' separators
    frames: int = 0  # frame count from the container (or duration x rate); 0 if unknown
    duration_s: float = 0.0


@dataclass
class Discovery:
    videos: list[Candidate] = field(default_factory=list)
    skipped: list[tuple[Candidate, str]] = field(default_factory=list)  # not videos: not an error
    errors: list[tuple[Candidate, str]] = field(default_factory=list)  # looked like videos, unusable


@dataclass(frozen=True)
class _Walk:
    root: Path  # as given: candidates' paths and ``rel`` are under it
    top: Path  # the directory walked (the root, or one of several inputs below it)
    real_top: str  # ``top`` with symlinks resolved, the bound for directory links
    follow_links: bool
    exclude: tuple[int, int] | None = None  # (device, inode) of a directory never walked into (OUT)
    excluded: list[Path] = field(default_factory=list)  # where it was met


def _dir_key(path: Path | None) -> tuple[int, int] | None:
    """A directory's (device, inode), or None when there is none (not given, not there yet)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def discover(root: Path, *, dirs: Sequence[Path] | None = None, files: Sequence[Path] = (),
             follow_links: bool = False, exclude: Path | None = None) -> Discovery:
    """Walk ``root`` in sorted order; hidden entries are ignored, each directory entered once.

    Directory symlinks whose target lies outside the walked directory are skipped unless
    ``follow_links``; file symlinks are always followed (see the module docstring). Every
    other entry is listed too: a FIFO, socket or device as skipped, saying what it is.

    Several inputs (:mod:`client.inputs`): ``dirs`` (default: ``root`` itself) are walked, each
    the bound of its own directory links, and ``files`` probed as given (a hidden file named
    explicitly is taken); all lie below ``root``, which names them. A path found twice is
    listed once.

    ``exclude``: a directory not to walk into however it is reached, said once in the log
    (OUT inside DIR: the run's own outputs, rendered videos among them, are never its inputs).
    """
    found = Discovery()
    seen_dirs: set[tuple[int, int]] = set()
    excluded: list[Path] = []
    for top in (root,) if dirs is None else dirs:
        walk = _Walk(root=root, top=top, real_top=os.path.realpath(top), follow_links=follow_links,
                     exclude=_dir_key(exclude), excluded=excluded)
        _walk(walk, top, seen_dirs, found)
    if excluded:
        log.info("not searching %s for videos: it is the output folder (--out)", printable(str(excluded[0])))
    listed = {c.rel for c in found.videos} | {c.rel for c, _ in (*found.skipped, *found.errors)}
    for path in files:
        candidate = _candidate(root, path)
        if candidate.rel not in listed:
            listed.add(candidate.rel)
            _classify(candidate, found)
    return found


def _walk(walk: _Walk, directory: Path, seen_dirs: set[tuple[int, int]], found: Discovery) -> None:
    root = walk.root
    try:
        st = directory.stat()
    except OSError as e:
        found.errors.append((_candidate(root, directory), f"cannot read directory: {e.strerror}"))
        return
    key = (st.st_dev, st.st_ino)
    if key == walk.exclude and directory != walk.top:
        walk.excluded.append(directory)
        return
    if key in seen_dirs:
        found.skipped.append((_candidate(root, directory), "directory already visited (a symlink loop, or a second link to it)"))
        return
    seen_dirs.add(key)
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as e:
        found.errors.append((_candidate(root, directory), f"cannot list directory: {e.strerror}"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
            is_file = entry.is_file(follow_symlinks=True)
        except OSError:
            is_dir = is_file = False
        if is_dir and entry.is_symlink() and not walk.follow_links and not _inside(walk.real_top, path):
            found.skipped.append((_candidate(root, path), f"symlink to a directory outside {walk.top} "
                                  f"({os.path.realpath(path)}); pass --follow-links to include it"))
        elif is_dir:
            _walk(walk, path, seen_dirs, found)
        elif is_file:
            _classify(_candidate(root, path), found)
        else:  # a FIFO, socket or device, a link to one, or a link to nothing: listed, not lost
            found.skipped.append((_candidate(root, path), not_regular(path)))


def _classify(candidate: Candidate, found: Discovery) -> None:
    verdict, frames, duration_s = probe(candidate.path)
    if verdict is None:
        found.videos.append(Candidate(candidate.path, candidate.rel, frames, duration_s))
    elif candidate.path.suffix.lower() in VIDEO_EXTENSIONS and verdict != "no video stream":
        found.errors.append((candidate, verdict))
    else:
        found.skipped.append((candidate, verdict))


def probe(path: Path) -> tuple[str | None, int, float]:
    """(None, frames, seconds) for a file FFmpeg opens with a video stream, else (why not, 0, 0).

    Opened as decoding opens it (local file, allowed formats only: a playlist is refused, not
    followed); frames and seconds are the container's declarations read by the decoder's own
    rule (``video_info``), with the estimate's fallbacks.
    """
    try:
        if path.stat().st_size == 0:
            return "empty file", 0, 0.0
        with open_input(path) as container:
            stream = video_stream(container)
            if stream is None:
                return "no video stream", 0, 0.0
            chosen = describe_stream(container, stream)
            if chosen:
                log.info("%s: %s", path.name, chosen)
            info = video_info(container, stream, for_estimate=True)
            return None, info.frames, info.duration_s or 0.0
    except NotAllowedFormat as e:
        return str(e), 0, 0.0
    except av.FFmpegError as e:
        return f"not a readable video ({getattr(e, 'strerror', None) or e})", 0, 0.0
    except OSError as e:
        return f"cannot read: {e.strerror or e}", 0, 0.0


def _inside(real_root: str, path: Path) -> bool:
    """Whether ``path``, with every symlink resolved, is ``real_root`` or lies under it."""
    real = os.path.realpath(path)
    return os.path.commonpath([real_root, real]) == real_root


def _candidate(root: Path, path: Path) -> Candidate:
    rel = path.relative_to(root).as_posix() if path != root else "."
    return Candidate(path=path, rel=rel)
