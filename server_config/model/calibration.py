"""Frames to calibrate and check a quantised model on, letterboxed as a bulk run would feed them.

Frames come from the user's own videos, decoded and letterboxed by the client's own code
(``PyAVSource`` and ``plan_letterbox``), so the quantiser sees exactly the inputs the model
will get. Sampled frames alternate between two sets: calibration, and held-out frames that
the agreement is measured on (never the ones the ranges were fitted to).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.contract import ModelInfo
from client.decode import Sampling
from client.errors import DecodeError, UsageError
from client.letterbox import plan_letterbox

log = logging.getLogger(__name__)

__all__ = ["FrameSets", "sample_frames"]


@dataclass(frozen=True)
class FrameSets:
    calibration: list[np.ndarray]  # letterboxed RGB uint8 [H, W, 3]
    held_out: list[np.ndarray]
    videos: int


def sample_frames(root: Path, info: ModelInfo, *, calibration: int, held_out: int) -> FrameSets:
    """``calibration`` and ``held_out`` frames (fewer if the videos are short), spread evenly
    over every video under ``root``; calibration frames are spread evenly among the others."""
    from client.discovery import discover

    if not root.is_dir():
        raise UsageError(f"--calibrate {root}: not a directory of videos")
    videos = discover(root).videos
    if not videos:
        raise UsageError(f"--calibrate {root}: no videos found to calibrate on")
    quota = math.ceil((calibration + held_out) / len(videos))  # frames per video, both sets together
    frames: list[np.ndarray] = []
    for video in videos:
        frames.extend(_frames_of(video.path, video.frames, quota, info))
    if len(frames) < 2:
        raise UsageError(f"--calibrate {root}: fewer than 2 frames could be decoded")
    n = len(frames)
    share = min(calibration, n - 1, max(1, round(n * calibration / (calibration + held_out))))
    picked = set(np.linspace(0, n - 1, share).round().astype(int).tolist())
    return FrameSets(calibration=[f for i, f in enumerate(frames) if i in picked],
                     held_out=[f for i, f in enumerate(frames) if i not in picked][:held_out], videos=len(videos))


def _frames_of(path: Path, declared: int, quota: int, info: ModelInfo) -> list[np.ndarray]:
    from client.decode.pyav_source import PyAVSource

    every = max(1, declared // quota) if declared else 1
    plan_for = lambda hw: plan_letterbox(hw, info.imgsz, minimal=info.dynamic_hw)  # noqa: E731 as bulk plans
    out: list[np.ndarray] = []
    try:
        with PyAVSource(path, sampling=Sampling(every=every)) as source:
            for frame in source.frames(plan_for):
                out.append(np.array(frame.image, dtype=np.uint8, copy=True))
                if len(out) >= quota:
                    break
    except DecodeError as e:  # a damaged video still lends the frames decoded before the damage
        log.warning("%s: %s; using the %d frames decoded before it", path, e, len(out))
    return out
