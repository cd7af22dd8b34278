"""Boxes, labels and colours on a picture, with Pillow's ImageDraw.

A colour is a function of the class id, or of the track id when a tracker gave one, so the
same class (or the same object) has the same colour in every frame, video and run. Labels
read "name score" or "name #track score", on a filled band in the box's colour; a detection no
track holds (:data:`~client.tracking.NO_TRACK`, before ByteTrack confirms one) is drawn as
untracked, never "#-1".
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Mapping
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from .detections import Detections
from .tracking import NO_TRACK

__all__ = ["Row", "colour", "line_width", "draw_detections", "draw_rows", "label"]

# x1, y1, x2, y2, score, class_id, track_id (None or NO_TRACK: no track holds it)
Row = tuple[float, float, float, float, float, int, "int | None"]

_GOLDEN = 0.618033988749895  # successive hues as far apart as possible, for any number of ids


@lru_cache(maxsize=4096)
def colour(key: int) -> tuple[int, int, int]:
    """A saturated, bright RGB colour for an id; neighbouring ids get distant hues."""
    r, g, b = colorsys.hsv_to_rgb((0.11 + key * _GOLDEN) % 1.0, 0.85, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def line_width(width: int, height: int) -> int:
    """Box outline width: visible on a thumbnail-sized video and on 4K alike."""
    return max(3, round(min(width, height) / 240))


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _track(row: Row) -> int | None:
    """The row's track id, or None where no track holds it (no tracker, or not yet confirmed)."""
    track = row[6]
    return None if track is None or track == NO_TRACK else track


def label(row: Row, names: Mapping[int, str]) -> str:
    x1, y1, x2, y2, score, class_id, _ = row
    name = names.get(class_id, str(class_id))
    track = _track(row)
    return f"{name} #{track} {score:.2f}" if track is not None else f"{name} {score:.2f}"


def draw_detections(image: Image.Image, detections: Detections, names: Mapping[int, str],
                    score_places: int | None = None) -> None:
    """:func:`draw_rows` of one frame's :class:`Detections` (as :mod:`client.results` reads them).
    ``score_places``: the output stored scores rounded to this many places (JSON lines), so the
    label shows the stored value (float32 0.855 reads 0.86 but the line says 0.855: 0.85)."""
    tracks = detections.track_id.tolist() if detections.track_id is not None else [None] * len(detections)
    rows = [(x1, y1, x2, y2, score if score_places is None else round(score, score_places), c, track)
            for (x1, y1, x2, y2, score, c), track in zip(detections.rows(), tracks)]
    draw_rows(image, rows, names)


def draw_rows(image: Image.Image, rows: Iterable[Row], names: Mapping[int, str]) -> None:
    """Draw every detection on ``image`` (RGB, in the detections' pixels) in place; the
    lowest scores first, so the best box and its label end on top."""
    draw = ImageDraw.Draw(image)
    width = line_width(*image.size)
    font = _font(max(10, 5 * width))
    for row in sorted(rows, key=lambda r: r[4]):
        x1, y1, x2, y2, _, class_id, _ = row
        track = _track(row)
        fill = colour(track if track is not None else class_id)
        draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=fill, width=width)
        text = label(row, names)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 4, bottom - top + 4
        ty = y1 - th if y1 - th >= 0 else y1 + width  # above the box, or inside it at the top edge
        draw.rectangle((x1, ty, x1 + tw, ty + th), fill=fill)
        draw.text((x1 + 2 - left, ty + 2 - top), text, fill=(0, 0, 0), font=font)
