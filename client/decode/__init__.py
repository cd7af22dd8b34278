"""Frame sources: decode a video into letterboxed frames numbered in presentation order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol

from ..arrays import copy_into
from ..letterbox import LetterboxPlan

__all__ = ["Sampling", "VideoInfo", "Picture", "Letterboxed", "DecodedFrame", "FrameSource", "FrameRange", "PlanFor"]


@dataclass(frozen=True)
class Sampling:
    """Which frames to infer: every Nth, the nearest to each point of a time grid, or key frames."""

    every: int = 1
    fps: float | None = None
    keyframes: bool = False

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if sum([self.every != 1, self.fps is not None, self.keyframes]) > 1:
            raise ValueError("choose one of every, fps and keyframes")

    def describe(self) -> str:
        if self.keyframes:
            return "keyframes"
        if self.fps is not None:
            return f"fps={self.fps:g}"
        return f"every={self.every}"


@dataclass(frozen=True)
class FrameRange:
    """One segment of a split file: decode from the key frame at ``seek_pts``, emit ``selected``
    indices in [start, end). Indices come from the file's demux pass, shared by all segments."""

    start: int
    end: int
    seek_pts: int
    selected: frozenset[int]
    index_of_pts: Mapping[int, int]
    expected: int  # frames of ``selected`` in [start, end), known from planning
    discarded: int = 0  # packets an edit list cuts away (the demux pass's ``Layout.discarded``)

    @property
    def ends_file(self) -> bool:
        """The last segment: it also checks the file's end against the container's declarations
        (``index_of_pts`` holds every frame of the file, so its size is the frame count)."""
        return self.end >= len(self.index_of_pts)


@dataclass(frozen=True)
class VideoInfo:
    """What the container declares: the completeness checks compare the decode against it."""

    codec: str
    frames: int  # from the container; 0 when it doesn't say
    duration_s: float | None  # the video's own
    fps: float | None
    file_duration_s: float | None = None  # the whole file's, where the video's own is not given and sound shares it


class Picture(Protocol):
    """A decoded frame waiting for its batch: the pipeline hands it the batch slot to fill.

    So the GPU path letterboxes straight into the buffer Triton or onnxruntime reads (a
    CUDA shared-memory region, say) instead of into a frame of its own that is copied again.
    """

    def write_into(self, out: Any) -> None:
        """Put the letterboxed RGB frame into ``out``, a contiguous [H, W, 3] uint8 slot (host or device)."""
        ...

    def array(self) -> Any:
        """The letterboxed frame as an array of its own (for tests and tools)."""
        ...


@dataclass(frozen=True)
class Letterboxed:
    """A frame letterboxed already (the CPU path): filling a slot is one copy, or one upload
    when the batch lives on the GPU (files NVDEC does not take on the GPU path)."""

    image: Any  # RGB uint8 [H, W, 3], NumPy or CuPy

    def write_into(self, out: Any) -> None:
        copy_into(out, self.image)

    def array(self) -> Any:
        return self.image


@dataclass(frozen=True)
class DecodedFrame:
    index: int  # presentation order from 0, over all frames of the file
    t: float  # seconds from the stream's start
    picture: Picture
    plan: LetterboxPlan

    @property
    def image(self) -> Any:
        """The letterboxed RGB uint8 [H, W, 3] frame (the pipeline uses :attr:`picture`)."""
        return self.picture.array()


PlanFor = Callable[[tuple[int, int]], LetterboxPlan]


class FrameSource(Protocol):
    """A decoder for one file; a context manager, so a file is closed on every way out."""

    path: Path

    def frames(self, plan_for: PlanFor) -> Iterator[DecodedFrame]:
        """Yield the sampled frames letterboxed by ``plan_for(display_hw)``; raise DecodeError on damage."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> "FrameSource": ...

    def __exit__(self, *exc: object) -> None: ...
