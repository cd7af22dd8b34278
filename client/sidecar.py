"""``OUT/<rel>.meta.json``: what a video's detections were made from, beside them.

Staged when a video completes and committed with its output, before its resume record (so a
video with a record has its sidecar), through :mod:`client.outfiles`. A video that fails on a
rerun keeps its earlier output, and so its earlier sidecar, which still describes it. It holds the video's geometry and
timing as its container declares them (the rotation read from its first frame: PyAV has no
stream-level display matrix), the model's identity and class names, the sampling and
filters used, and the letterbox shape the video got.

The sidecar is descriptive, not a result: the resume ledger does not list it, so the
records of runs made before sidecars existed still resume (those videos have none until redone).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import av

from .contract import ModelInfo
from .decode.checks import video_info
from .decode.container import open_input, video_stream
from .discovery import Candidate
from .letterbox import LetterboxPlan, quarter_turns
from .outfiles import Output, OutTree, Staged, display_rel, summary_rel

log = logging.getLogger(__name__)

__all__ = ["VideoFacts", "probe_facts", "Sidecars", "SUFFIX", "letterbox_text"]

SUFFIX = ".meta.json"
_VERSION = 1


@dataclass(frozen=True)
class VideoFacts:
    """A video as its container declares it; ``None`` where it does not say."""

    width: int  # as stored (before rotation)
    height: int
    rotation: int | None  # degrees counterclockwise to display it (FFmpeg's display matrix), None: unread
    fps: float | None
    frames: int | None  # declared frame count
    duration_s: float | None
    codec: str


def probe_facts(path: Path) -> VideoFacts | None:
    """The facts of ``path``'s video stream (the one decoded); None if it can no longer be opened."""
    try:
        with open_input(path) as container:
            stream = video_stream(container)
            if stream is None:
                return None
            info = video_info(container, stream)
            cc = stream.codec_context
            rotation = None
            try:
                first = next(container.decode(stream), None)
                rotation = int(first.rotation or 0) if first is not None else None
            except av.FFmpegError:
                pass
            return VideoFacts(width=cc.width, height=cc.height, rotation=rotation, fps=info.fps,
                              frames=info.frames or None, duration_s=info.duration_s, codec=info.codec)
    except (av.FFmpegError, OSError, IndexError) as e:
        log.debug("%s: cannot read its facts for the sidecar: %s", path, e)
        return None


def letterbox_text(plan: LetterboxPlan | None) -> str | None:
    """The model input a video got, as ``WxH`` (``640x384``)."""
    return None if plan is None else f"{plan.dst_hw[1]}x{plan.dst_hw[0]}"


class Sidecars:
    """Writes and removes the sidecars of one run (one model, one set of options)."""

    def __init__(self, out: Path, model: ModelInfo, sampling: str, options: Mapping[str, object]) -> None:
        self.tree = OutTree(Path(out))
        self.model, self.sampling, self.options = model, sampling, dict(options)

    def parts(self, rel: str) -> tuple[str, ...]:
        *dirs, name = self.tree.stem(rel)
        return (*dirs, f"{name}{SUFFIX}")

    def path(self, rel: str) -> Path:
        return self.tree.path(self.parts(rel))

    def document(self, c: Candidate, facts: VideoFacts | None, plan: LetterboxPlan | None, inferred: int,
                 outputs: list[Path], detections: Mapping[str, int] | None = None) -> dict[str, object]:
        video: dict[str, object] = {"width": None, "height": None, "rotation": None, "display_width": None,
                                    "display_height": None, "fps": None, "frames": None, "duration_s": None,
                                    "codec": None}
        if facts is not None:
            turned = quarter_turns(facts.rotation) % 2 == 1
            video.update(width=facts.width, height=facts.height, rotation=facts.rotation,
                         display_width=facts.height if turned else facts.width,
                         display_height=facts.width if turned else facts.height,
                         fps=facts.fps, frames=facts.frames, duration_s=facts.duration_s, codec=facts.codec)
        if video["frames"] is None and self.sampling == "every=1":
            video["frames"] = inferred  # no declared count, but every frame was decoded and inferred
        letterbox = None
        if plan is not None:
            letterbox = {"shape": letterbox_text(plan), "input_wh": [plan.dst_hw[1], plan.dst_hw[0]],
                         "resized_wh": [plan.resized_hw[1], plan.resized_hw[0]], "pad_left_top": [plan.left, plan.top]}
        return {
            "version": _VERSION,
            "video": display_rel(c.rel),
            "source": display_rel(str(c.path)),
            **video,
            "frames_inferred": inferred,
            # what the outputs hold, per class name (after --classes/--conf): a resumed video's count
            "detections": sum(detections.values()) if detections is not None else None,
            "detections_by_class": dict(detections) if detections is not None else None,
            "sampling": self.sampling,
            "options": self.options,
            "letterbox": letterbox,
            "model": self.model.to_summary(),
            "outputs": [summary_rel(p, self.tree.out) for p in outputs],
        }

    def write(self, c: Candidate, plan: LetterboxPlan | None, inferred: int, outputs: list[Path],
              detections: Mapping[str, int] | None = None) -> Output:
        """Probe the video and write its sidecar; OutputError (or OutputStorageError) on failure."""
        staged = self.stage(c, plan, inferred, outputs, detections)
        staged.commit()
        return staged.output

    def stage(self, c: Candidate, plan: LetterboxPlan | None, inferred: int, outputs: list[Path],
              detections: Mapping[str, int] | None = None) -> Staged:
        """Probe the video and stage its sidecar, committed with the outputs it describes."""
        doc = self.document(c, probe_facts(c.path), plan, inferred, outputs, detections)
        return self.tree.stage_file(self.parts(c.rel), (json.dumps(doc, indent=2) + "\n").encode())

    def remove(self, rel: str) -> None:
        self.tree.remove(self.parts(rel))

    def read(self, rel: str) -> dict | None:
        """The sidecar an earlier run wrote for ``rel``; None when there is none or it is unreadable."""
        f = self.tree.open_regular(self.parts(rel))
        if f is None:
            return None
        try:
            with f:
                doc = json.loads(f.read())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def read_letterbox(self, rel: str) -> str | None:
        """The letterbox shape an earlier run recorded for ``rel`` (for resumed videos' reports)."""
        return self.letterbox_of(self.read(rel))

    @staticmethod
    def letterbox_of(doc: Mapping[str, object] | None) -> str | None:
        letterbox = (doc or {}).get("letterbox")
        shape = letterbox.get("shape") if isinstance(letterbox, dict) else None
        return shape if isinstance(shape, str) else None

    @staticmethod
    def detections_of(doc: Mapping[str, object] | None, frames: int) -> dict[str, int] | None:
        """A resumed video's detections per class from its sidecar ``doc``; None (unknown) when the
        sidecar predates the count, or describes another output than the ``frames`` recorded."""
        if not doc or doc.get("frames_inferred") != frames:
            return None
        by_class = doc.get("detections_by_class")
        if not isinstance(by_class, dict) or not all(isinstance(v, int) for v in by_class.values()):
            return None
        return {str(k): v for k, v in by_class.items()}
