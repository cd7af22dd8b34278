"""``--track``: ids that follow objects across a video's frames, from the ``trackers`` library.

A tracker sees one video's frames in frame order: the collector hands them over after a split
video's segments are put back in order, so a track crosses segment boundaries as if the video
had been decoded in one piece. Each update carries the frame's time, so sampled runs
(``--every``, ``--fps``, ``--keyframes``) predict motion over the real gap and keep a lost
object for the tracker's buffer in seconds, not in calls. The trackers themselves (ByteTrack,
SORT, OC-SORT) are Roboflow's ``trackers`` (Apache-2.0), installed with ``framestream[track]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pathlib import Path

from .detections import Detections
from .errors import UsageError
from .sinks import PostProcessingWriter

__all__ = ["TRACKERS", "TrackOptions", "VideoTracker", "TrackedSink", "import_trackers"]

TRACKERS = ("bytetrack", "sort", "ocsort")
NO_TRACK = -1  # a detection no track holds (yet): ByteTrack confirms a track after a few frames


@dataclass(frozen=True)
class TrackOptions:
    tracker: str = "bytetrack"

    def describe(self) -> str:
        """What the resume ledger records: outputs tracked otherwise are redone."""
        return self.tracker


def import_trackers():
    """The ``trackers`` package, or one line saying how to install it."""
    try:
        import trackers
    except ImportError as e:
        raise UsageError(f"--track needs the trackers library ({e}): pip install 'framestream[track]'") from e
    return trackers


class VideoTracker:
    """One video's tracker: :meth:`update` with each inferred frame's detections, in order."""

    def __init__(self, options: TrackOptions, fps: float | None) -> None:
        trackers = import_trackers()
        make = {"bytetrack": trackers.ByteTrackTracker, "sort": trackers.SORTTracker,
                "ocsort": trackers.OCSORTTracker}.get(options.tracker)
        if make is None:
            raise UsageError(f"--track {options.tracker}: choose one of {', '.join(TRACKERS)}")
        self._sv = _supervision()
        self._tracker = make(frame_rate=fps) if fps and fps > 0 else make()

    def update(self, detections: Detections, t: float) -> np.ndarray:
        """Track ids (int32, ``NO_TRACK`` where none) for ``detections``' rows, in their order."""
        n = len(detections)
        frame = self._sv.Detections(xyxy=detections.xyxy.astype(np.float32), confidence=detections.confidence,
                                    class_id=detections.class_id, data={"row": np.arange(n)})
        tracked = self._tracker.update(frame, timestamp=float(t))
        ids = np.full(n, NO_TRACK, np.int32)
        if len(tracked):  # the tracker may reorder its output: rows say where each id goes
            ids[np.asarray(tracked.data["row"], np.int64)] = np.asarray(tracked.tracker_id, np.int32)
        return ids


class _TrackStep:
    """A video's tracking, as a post-processing step (its frames come in frame order). The
    tracker is made at the first frame, so a failure making it costs this video like any
    failure of its updates (:class:`~client.sinks.PostProcessingWriter`)."""

    def __init__(self, options: TrackOptions) -> None:
        self._options = options
        self._tracker: VideoTracker | None = None

    def __call__(self, t_s: float, detections: Detections) -> Detections:
        if self._tracker is None:
            self._tracker = VideoTracker(self._options, None)
        return replace(detections, track_id=self._tracker.update(detections, t_s))


class TrackedSink:
    """A sink whose writers track each video's detections (the collector writes a video's frames
    in frame order, its segments put back together); a tracker per video, made when it opens."""

    def __init__(self, sink, options: TrackOptions) -> None:
        import_trackers()  # one line now, not at the first video
        self.sink, self.options = sink, options

    def open(self, rel: str) -> PostProcessingWriter:
        return PostProcessingWriter(self.sink.open(rel), _TrackStep(self.options))

    def outputs(self, rel: str) -> list[Path]:
        return self.sink.outputs(rel)


def _supervision():
    import supervision

    return supervision
