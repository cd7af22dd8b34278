"""Find the videos under a directory: recursive, symlinks followed, loops detected, probed by content."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import av

from .decode.checks import video_info
from .decode.container import NotAllowedFormat, open_input

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


def discover(root: Path) -> Discovery:
    """Walk ``root`` in sorted order; hidden entries are ignored, each directory entered once."""
    found = Discovery()
    seen_dirs: set[tuple[int, int]] = set()
    _walk(root, root, seen_dirs, found)
    return found


def _walk(root: Path, directory: Path, seen_dirs: set[tuple[int, int]], found: Discovery) -> None:
    try:
        st = directory.stat()
    except OSError as e:
        found.errors.append((_candidate(root, directory), f"cannot read directory: {e.strerror}"))
        return
    key = (st.st_dev, st.st_ino)
    if key in seen_dirs:
        found.skipped.append((_candidate(root, directory), "directory already visited (symlink loop)"))
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
        if is_dir:
            _walk(root, path, seen_dirs, found)
        elif is_file:
            _classify(_candidate(root, path), found)
        elif entry.is_symlink():
            found.skipped.append((_candidate(root, path), "broken symlink"))


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
            if not container.streams.video:
                return "no video stream", 0, 0.0
            info = video_info(container, container.streams.video[0], for_estimate=True)
            return None, info.frames, info.duration_s or 0.0
    except NotAllowedFormat as e:
        return str(e), 0, 0.0
    except av.FFmpegError as e:
        return f"not a readable video ({getattr(e, 'strerror', None) or e})", 0, 0.0
    except OSError as e:
        return f"cannot read: {e.strerror or e}", 0, 0.0


def _candidate(root: Path, path: Path) -> Candidate:
    rel = path.relative_to(root).as_posix() if path != root else "."
    return Candidate(path=path, rel=rel)
