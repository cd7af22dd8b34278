"""The one decoding loop: frame selection, numbering, timestamps and completeness checks.

PyAV and NVDEC are thin drivers that decode the packets a :class:`Feed` names and yield
(pts, payload) in presentation order; everything a user can see (which frames, their
numbers and times, whether the file was complete) is decided here, once, for the whole
file, a key-frame segment and ``--keyframes`` alike. So a rule written here holds on
every path: a file whose frames don't add up to what its container declares is an error,
however it was cut, and the frames decoded before the damage still flow (they become the
partial output).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Generic, Iterator, Mapping, Protocol, TypeVar

from ..errors import DecodeError
from ..letterbox import LetterboxPlan
from . import DecodedFrame, FrameRange, Picture, PlanFor, Sampling, VideoInfo
from .checks import Demuxed, check_complete, check_range
from .layout import Layout
from .sampling import select

T = TypeVar("T")


@dataclass(frozen=True)
class Feed:
    """The packets a driver decodes: all of them, from a segment's key frame, or key frames only."""

    seek_pts: int | None = None
    key_pts: frozenset[int] | None = None


class Driver(Protocol[T]):
    """A decoder for one open file, as the loop needs it."""

    name: str  # for messages: "decoding", "NVDEC decoding"
    failures: tuple[type[BaseException], ...]  # what the decoder raises on damaged data
    packets: int  # packets with data fed so far (not those an edit list discards)
    demuxed: Demuxed  # what demuxing showed besides the frames (edit lists, the file's end, FFmpeg's errors)

    def decode(self, feed: Feed) -> Iterator[tuple[int | None, T]]:
        """(pts, payload) of each decoded frame in presentation order; the payload may be
        the decoder's own buffer, valid until the next frame (see :meth:`keep`)."""
        ...

    def keep(self, payload: T) -> T:
        """A payload that stays valid while later frames are decoded."""
        ...

    def is_key(self, payload: T) -> bool: ...

    def display_hw(self, payload: T) -> tuple[int, int]: ...

    def picture(self, payload: T, plan: LetterboxPlan) -> Picture: ...

    def reason(self, error: BaseException) -> str: ...


@dataclass(frozen=True)
class Clock:
    """A frame's time in seconds: from its pts, or, for a stream without timestamps (a raw
    .h264, whose pts are absent or made up by FFmpeg from a default rate), from its
    presentation index and the rate the bitstream declares. Never made up."""

    time_base: Fraction
    start: int
    rate: Fraction | None
    timed: bool = True  # the container carries timestamps

    def t(self, pts: int | None, index: int) -> float:
        if pts is not None and self.timed:
            return float((pts - self.start) * self.time_base)
        if self.rate:
            return float(index / self.rate)
        raise DecodeError("the stream has no timestamps and declares no frame rate; remux it with one "
                          "(ffmpeg -framerate RATE -i IN -c copy OUT.mkv)", frames_decoded=index)


@dataclass(frozen=True)
class Cut:
    """What one job decodes: the whole file, one key-frame segment, or its key frames."""

    info: VideoInfo
    clock: Clock
    sampling: Sampling
    frame_range: FrameRange | None = None
    layout: Layout | None = None  # --keyframes on a whole file: where the key frames are

    def frames(self, driver: Driver[Any], plan_for: PlanFor) -> Iterator[DecodedFrame]:
        """The job's frames, letterboxed by ``plan_for(display_hw)``; DecodeError on damage."""
        if self.frame_range is not None:
            numbered = _Segment(self, driver, self.frame_range)
        elif self.sampling.keyframes and self.layout is not None and self.layout.timed:
            numbered = _KeyFrames(self, driver, self.layout)
        else:
            numbered = _Whole(self, driver)
        plan: LetterboxPlan | None = None
        for index, t, payload in numbered:
            plan = plan or plan_for(driver.display_hw(payload))
            yield DecodedFrame(index, t, driver.picture(payload, plan), plan)


class _Numbered(Generic[T]):
    """Numbers, times and selects one job's frames; checks them when the decoder is done."""

    def __init__(self, cut: Cut, driver: Driver[T], feed: Feed = Feed()) -> None:
        self.cut, self.driver, self.feed = cut, driver, feed
        self.decoded = 0  # frames out of the decoder that belong to the job
        self.emitted = 0
        self.last_t: float | None = None
        self.last_gap = 0.0  # seconds between the last two frames: how long a variable rate holds its last

    def timed(self, t: float) -> float:
        """Record ``t`` as the latest frame's time."""
        if self.last_t is not None:
            self.last_gap = t - self.last_t
        self.last_t = t
        return t

    def __iter__(self) -> Iterator[tuple[int, float, T]]:
        raw = self.driver.decode(self.feed)
        try:
            for item in self.select(self.number(raw)):
                self.emitted += 1
                yield item
        except DecodeError:
            raise
        except self.driver.failures as e:
            raise DecodeError(f"{self.driver.name} {self.where()}failed after {self.progress()} frames: "
                              f"{self.driver.reason(e)}", frames_decoded=self.progress()) from e
        finally:
            close = getattr(raw, "close", None)
            if close is not None:
                close()
        self.check()

    def number(self, raw: Iterator[tuple[int | None, T]]) -> Iterator[tuple[int, float, T]]:
        raise NotImplementedError

    def select(self, frames: Iterator[tuple[int, float, T]]) -> Iterator[tuple[int, float, T]]:
        return frames

    def where(self) -> str:
        return ""

    def progress(self) -> int:
        return self.decoded

    def check(self) -> None:
        raise NotImplementedError


class _Whole(_Numbered[T]):
    """Every frame numbered in output order; the sampling picks; the decode must match the
    packets fed and the container's declarations. Also ``--keyframes`` on a stream without
    timestamps: no pts places a key frame without decoding, so all are decoded and the
    decoder's key flag picks."""

    def number(self, raw):
        keys_only = self.cut.sampling.keyframes
        # --every drops by index, so a frame it drops is never kept (on NVDEC: never copied on
        # the device); --fps decides a frame only once the next one is seen, so it keeps them all.
        every = self.cut.sampling.every if not keys_only and self.cut.sampling.fps is None else 1
        for pts, payload in raw:
            index = self.decoded
            self.decoded += 1
            t = self.timed(self.cut.clock.t(pts, index))
            if index % every:
                continue
            if not keys_only or self.driver.is_key(payload):
                yield index, t, self.driver.keep(payload)

    def select(self, frames):
        return frames if self.cut.sampling.keyframes else select(frames, self.cut.sampling)

    def check(self) -> None:
        check_complete(self.cut.info, self.driver.packets, self.decoded, self.last_t, delivered=self.decoded,
                       demuxed=self.driver.demuxed, last_gap=self.last_gap)


class _KeyFrames(_Numbered[T]):
    """Key frames only, decoded alone, placed by the demux pass; the layout must match the
    container's declarations and every key frame must come out."""

    def __init__(self, cut: Cut, driver: Driver[T], layout: Layout) -> None:
        self.index_of: Mapping[int, int] = {layout.pts[i]: i for i in layout.key_indices}
        super().__init__(cut, driver, Feed(key_pts=frozenset(self.index_of)))
        self.layout = layout

    def number(self, raw):
        for pts, payload in raw:
            index = self.index_of.get(pts) if pts is not None else None
            if index is None:
                continue  # not a key frame of the demux pass: never asked for
            self.decoded += 1
            yield index, self.cut.clock.t(pts, index), self.driver.keep(payload)

    def check(self) -> None:
        keys, n = len(self.index_of), len(self.layout.pts)
        if self.decoded < keys:
            raise DecodeError(f"decoded {self.decoded} of the {keys} key frames (damaged data)",
                              frames_decoded=self.emitted)
        demuxed = self.driver.demuxed
        demuxed.discarded = self.layout.discarded  # the demux pass counted them; the key-frame decode skips them
        gap = self.layout.t(n - 1) - self.layout.t(n - 2) if n > 1 else 0.0
        check_complete(self.cut.info, n, n, self.layout.t(n - 1) if n else None, delivered=self.emitted,
                       demuxed=demuxed, last_gap=gap)


class _Segment(_Numbered[T]):
    """A key-frame segment: frames placed by the file's demux pass, those of [start, end)
    decoded and the planned ones emitted. The segment that ends the file also checks the
    file's end, as a whole-file decode would."""

    def __init__(self, cut: Cut, driver: Driver[T], r: FrameRange) -> None:
        # The first segment decodes from the file's start: frames may come before its first
        # key frame (an MP4 cut at a non-key frame shows frames of a GOP whose key is cut away).
        super().__init__(cut, driver, Feed(seek_pts=r.seek_pts if r.start else None))
        self.r = r

    def number(self, raw):
        r = self.r
        for pts, payload in raw:
            index = r.index_of_pts.get(pts) if pts is not None else None
            if index is None or index < r.start:
                continue  # before the range (leading frames of an open GOP), or unknown to the demux pass
            if index >= r.end:
                return  # presentation order: every frame of the range is out
            self.decoded += 1
            t = self.timed(self.cut.clock.t(pts, index))
            if index in r.selected:
                yield index, t, self.driver.keep(payload)

    def where(self) -> str:
        return f"of frames {self.r.start}-{self.r.end - 1} "

    def progress(self) -> int:
        return self.emitted

    def check(self) -> None:
        r = self.r
        check_range(self.emitted, r.expected, r.start, r.end, self.decoded)
        if r.ends_file:
            demuxed = self.driver.demuxed
            demuxed.discarded = r.discarded  # at the file's start, before any later segment's seek
            check_complete(self.cut.info, r.end, r.end, self.last_t, delivered=self.emitted, demuxed=demuxed,
                           last_gap=self.last_gap)
