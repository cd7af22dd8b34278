"""Find the videos under a directory: recursive, loops detected, probed by content.

Symlinks: a symlink to a FILE is followed wherever it points (one link names one file the
user chose to put there, e.g. a folder of links to videos kept elsewhere). A symlink to a
DIRECTORY is followed only while its target stays inside the root; one that leads out
(a link to ``/`` or a whole disk) is listed as skipped unless ``follow_links`` is set
(``--follow-links``), because the walk would not be bounded by the DIR the user named.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av

from .decode.checks import video_info
from .decode.container import ALLOWED_FORMATS, NotAllowedFormat, describe_stream, open_input, video_stream
from .inputs import not_regular
from .terminal import printable

log = logging.getLogger(__name__)

# Content decides what is a video, never the name: a file FFmpeg cannot open is a damaged
# video (an error) only when FFmpeg recognises a video container in its first bytes, read
# without its name (:func:`recognised_container`); anything else, a text file named clip.mp4
# included, is not a video (skipped). The extension is used only where there is no content to
# judge: an empty file, one of zero bytes only (space allocated, nothing written) or an
# unreadable one named like a video is an error (a recording or copy that never got its bytes,
# a permission to fix), under any other name it is skipped.
VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .ts .m2ts .mts .mpg .mpeg .flv .wmv .3gp .ogv .h264 .h265 .hevc .ivf".split()
)
# FFmpeg reads at most this much to recognise a format (PROBE_BUF_MAX in libavformat).
PROBE_BYTES = 1 << 20
# FFmpeg's AVPROBE_SCORE_RETRY: a format recognised at this score or below is, in its own
# words, a "misdetection possible" (the score a demuxer gets for the file's extension alone).
MIN_PROBE_SCORE = 25
# FFmpeg's debug line naming the format its content probe chose (libavformat/format.c).
_PROBED = re.compile(r"Format (\S+) probed with size=\d+ and score=(\d+)")
NOT_A_VIDEO = "not a video (FFmpeg recognises no video container in its content)"


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
    excluded: list[Path] = []
    for candidate, verdict in _entries(root, dirs, files, follow_links, exclude, excluded):
        if verdict is None:
            _classify(candidate, found)
        else:
            (found.errors if verdict.damaged else found.skipped).append((candidate, verdict.reason))
    if excluded:
        log.info("not searching %s for videos: it is the output folder (--out)", printable(str(excluded[0])))
    return found


def has_video(root: Path, *, dirs: Sequence[Path] | None = None, files: Sequence[Path] = (),
              follow_links: bool = False, exclude: Path | None = None) -> bool:
    """Whether :func:`discover` would find a video, a damaged one included (an error entry: the
    run has that to report), or anything else in error; stops at the first (one probe where
    there are videos), so a command line can refuse a run with nothing to do before it starts."""
    for candidate, verdict in _entries(root, dirs, files, follow_links, exclude, []):
        if verdict is None:
            verdict = probe(candidate.path)[0]
        if verdict is None or verdict.damaged:
            return True
    return False


def _entries(root: Path, dirs: Sequence[Path] | None, files: Sequence[Path], follow_links: bool,
             exclude: Path | None, excluded: list[Path]) -> Iterator[tuple[Candidate, Verdict | None]]:
    """Every entry of the inputs once, in :func:`discover`'s order: a regular file with None (to
    probe), anything else with its verdict."""
    seen_dirs: set[tuple[int, int]] = set()
    listed: set[str] = set()
    for top in (root,) if dirs is None else dirs:
        walk = _Walk(root=root, top=top, real_top=os.path.realpath(top), follow_links=follow_links,
                     exclude=_dir_key(exclude), excluded=excluded)
        for candidate, verdict in _walk(walk, top, seen_dirs):
            listed.add(candidate.rel)
            yield candidate, verdict
    for path in files:
        candidate = _candidate(root, path)
        if candidate.rel not in listed:
            listed.add(candidate.rel)
            yield candidate, None


def _walk(walk: _Walk, directory: Path, seen_dirs: set[tuple[int, int]]) -> Iterator[tuple[Candidate, Verdict | None]]:
    root = walk.root
    try:
        st = directory.stat()
    except OSError as e:
        yield _candidate(root, directory), Verdict(f"cannot read directory: {e.strerror}", damaged=True)
        return
    key = (st.st_dev, st.st_ino)
    if key == walk.exclude and directory != walk.top:
        walk.excluded.append(directory)
        return
    if key in seen_dirs:
        yield _candidate(root, directory), Verdict("directory already visited (a symlink loop, or a second link to it)")
        return
    seen_dirs.add(key)
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as e:
        yield _candidate(root, directory), Verdict(f"cannot list directory: {e.strerror}", damaged=True)
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
            yield _candidate(root, path), Verdict(f"symlink to a directory outside {walk.top} "
                                                  f"({os.path.realpath(path)}); pass --follow-links to include it")
        elif is_dir:
            yield from _walk(walk, path, seen_dirs)
        elif is_file:
            yield _candidate(root, path), None
        else:  # a FIFO, socket or device, a link to one, or a link to nothing: listed, not lost
            yield _candidate(root, path), Verdict(not_regular(path))


def _classify(candidate: Candidate, found: Discovery) -> None:
    verdict, frames, duration_s = probe(candidate.path)
    if verdict is None:
        found.videos.append(Candidate(candidate.path, candidate.rel, frames, duration_s))
    elif verdict.damaged:
        found.errors.append((candidate, verdict.reason))
    else:
        found.skipped.append((candidate, verdict.reason))


@dataclass(frozen=True)
class Verdict:
    """Why a file is not a video to process: ``damaged`` (an error entry) or not a video (skipped)."""

    reason: str
    damaged: bool = False


def probe(path: Path) -> tuple[Verdict | None, int, float]:
    """(None, frames, seconds) for a file FFmpeg opens with a video stream, else (why not, 0, 0).

    Opened as decoding opens it (local file, allowed formats only: a playlist is refused, not
    followed); frames and seconds are the container's declarations read by the decoder's own
    rule (``video_info``), with the estimate's fallbacks. Which failures are damaged videos and
    which are other files: see :data:`VIDEO_EXTENSIONS`.
    """
    named_like_video = path.suffix.lower() in VIDEO_EXTENSIONS
    try:
        if path.stat().st_size == 0:
            return Verdict("empty file", damaged=named_like_video), 0, 0.0
        with open_input(path) as container:
            stream = video_stream(container)
            if stream is None:
                return Verdict("no video stream"), 0, 0.0
            chosen = describe_stream(container, stream)
            if chosen:
                log.info("%s: %s", path.name, chosen)
            info = video_info(container, stream, for_estimate=True)
            return None, info.frames, info.duration_s or 0.0
    except NotAllowedFormat as e:  # FFmpeg recognised another kind of file (a playlist, an image, text)
        return Verdict(str(e)), 0, 0.0
    except av.FFmpegError as e:
        try:
            with open(path, "rb") as f:
                head = f.read(PROBE_BYTES)
        except OSError as read_error:
            return Verdict(f"cannot read: {read_error.strerror or read_error}", damaged=named_like_video), 0, 0.0
        container = recognised_container(head)
        if container is not None:
            return Verdict(f"not a readable video: a damaged {container} file "
                           f"({getattr(e, 'strerror', None) or e})", damaged=True), 0, 0.0
        if not head.strip(b"\0"):
            return Verdict("zero bytes only: nothing was written into it", damaged=named_like_video), 0, 0.0
        return Verdict(NOT_A_VIDEO), 0, 0.0
    except OSError as e:
        return Verdict(f"cannot read: {e.strerror or e}", damaged=named_like_video), 0, 0.0


def recognised_container(head: bytes) -> str | None:
    """The video container FFmpeg recognises in a file's first bytes (``head``), judged by content
    alone (given without the file's name, whose extension FFmpeg would otherwise count), or None.

    FFmpeg names the format its probe chose, and the probe's score, only in a debug log line;
    it is read from there (logging raised to debug for this one open, captured on this thread).
    A score at or below :data:`MIN_PROBE_SCORE` is no recognition, nor a format outside
    :data:`~client.decode.container.ALLOWED_FORMATS`.
    """
    level = av.logging.get_level()
    av.logging.set_level(av.logging.DEBUG)
    try:
        with av.logging.Capture() as logs:
            try:
                av.open(io.BytesIO(head), options={"protocol_whitelist": "file",
                                                  "format_whitelist": ",".join(ALLOWED_FORMATS)}).close()
            except (av.FFmpegError, OSError, ValueError):
                pass  # it failed to open as a file: recognising the format is all that is asked here
    finally:
        av.logging.set_level(level)
    for _level, _name, message in logs:
        probed = _PROBED.match(message)
        if probed and int(probed.group(2)) > MIN_PROBE_SCORE:
            names = probed.group(1).split(",")
            if any(name in ALLOWED_FORMATS for name in names):
                return names[0]
    return None


def _inside(real_root: str, path: Path) -> bool:
    """Whether ``path``, with every symlink resolved, is ``real_root`` or lies under it."""
    real = os.path.realpath(path)
    return os.path.commonpath([real_root, real]) == real_root


def _candidate(root: Path, path: Path) -> Candidate:
    rel = path.relative_to(root).as_posix() if path != root else "."
    return Candidate(path=path, rel=rel)
