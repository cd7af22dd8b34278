"""``python -m tests.square_detector -- BULK ARGS``: the real bulk CLI with a detector that
finds what the test videos really show: pure red and green squares on grey.

The untrained model's boxes mean nothing, so tests of what comes after detection (tracking,
drawing) need boxes that follow the objects in the decoded pixels. This backend reads each
letterboxed frame the pipeline built (decoding, letterbox, batching, boxes mapped back to the
source, collector and sinks are the real ones) and returns the contract's rows: one box per
coloured square, class 0 for red and 1 for green, score 0.9.
"""

from __future__ import annotations

import sys

import numpy as np

from client import backends, bulk
from client.contract import DETECTIONS

from .fault_runner import Delegating

GREY = 110
COLOURS = {0: (230, 20, 20), 1: (20, 230, 20)}  # class id -> RGB


def squares_frame(positions: dict[int, list[tuple[int, int, int]]], i: int, w: int, h: int) -> np.ndarray:
    """Frame ``i``: grey, with a square of each class at ``positions[class][i]`` = (x, y, side)."""
    img = np.full((h, w, 3), GREY, np.uint8)
    for cls, track in positions.items():
        if i < len(track) and track[i] is not None:
            x, y, side = track[i]
            img[max(y, 0):max(y + side, 0), max(x, 0):max(x + side, 0)] = COLOURS[cls]
    return img


def find_squares(image: np.ndarray) -> np.ndarray:
    """Rows (x1, y1, x2, y2, score, class) of each colour present in one RGB frame."""
    rows = []
    r, g, b = (image[..., k].astype(np.int16) for k in range(3))
    for cls, mask in ((0, (r > 150) & (g < 90) & (b < 90)), (1, (g > 150) & (r < 90) & (b < 90))):
        ys, xs = np.nonzero(mask)
        if len(xs) >= 9:  # a few pixels of ringing are not a square
            rows.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.9, cls))
    return np.array(rows, np.float32).reshape(-1, 6)


class SquareDetector(Delegating):
    def infer(self, lane, batch):
        from client.infer import BatchOutput

        images = np.asarray(batch)
        det = np.zeros((len(images), *DETECTIONS.dims), np.float32)
        num = np.zeros((len(images), 1), np.int32)
        for k, image in enumerate(images):
            rows = find_squares(image)
            det[k, : len(rows)] = rows
            num[k, 0] = len(rows)
        return BatchOutput(det, num)


def main(argv: list[str]) -> int:
    make_backend = backends.make_backend
    backends.make_backend = lambda *a, **k: SquareDetector(make_backend(*a, **k))
    return bulk.main(argv[argv.index("--") + 1:], signals=True)  # the program, with a stand-in detector


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
