"""Which packets a decoder must see, for a key-frame segment or for key frames only.

Pure over the packet stream, so the NVDEC source (whose demuxer gives no seeking by key
frame we rely on) and a test with FFmpeg's own decoder share it. Skipped packets are
demuxed, never decoded: demuxing costs a small fraction of decoding.
"""

from __future__ import annotations

from typing import Callable, Collection, Iterable, Iterator, TypeVar

P = TypeVar("P")


def packets_to_decode(packets: Iterable[P], size: Callable[[P], int], pts: Callable[[P], int | None], *,
                      from_pts: int | None = None, only_pts: Collection[int] | None = None) -> Iterator[P]:
    """The packets to feed, in demux order.

    ``from_pts``: drop everything before the (key frame) packet with that pts, so decoding
    starts at a key frame. ``only_pts``: feed only those packets (key frames decode alone).
    The end-of-stream packet (size 0) always passes: it flushes the decoder's delayed frames.
    """
    started = from_pts is None
    for packet in packets:
        if size(packet):
            if not started:
                if pts(packet) != from_pts:
                    continue
                started = True
            if only_pts is not None and pts(packet) not in only_pts:
                continue
        yield packet
