"""The packet policy NVDEC is fed with, checked with FFmpeg's own decoder on real files.

NVDEC needs the same thing any decoder needs: start at a key frame, and key frames decode
alone. So feeding libavcodec exactly the packets the policy picks must give exactly the
frames a segment or ``--keyframes`` asks for.
"""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from client.decode.layout import read_layout
from client.decode.packets import packets_to_decode

from .videos import write_video


def decode_fed(path: Path, **policy) -> tuple[list[int], int]:
    """Presentation indices of the frames libavcodec outputs, and the packets it was fed."""
    layout = read_layout(path)
    index_of = {pts: i for i, pts in enumerate(layout.pts)}
    out, fed = [], 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for packet in packets_to_decode(c.demux(s), lambda p: p.size, lambda p: p.pts, **policy):
            fed += bool(packet.size)
            out += [index_of[f.pts] for f in packet.decode()]
    return out, fed


@pytest.fixture(scope="module", params=["bframes", "gop1", "vfr_mkv"])
def clip(request, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("packets")
    if request.param == "bframes":
        return write_video(d / "b.mp4", frames=60, gop=12, bframes=2)
    if request.param == "gop1":
        return write_video(d / "i.mp4", frames=10, gop=1)
    from fractions import Fraction

    pts = [0, 40, 80, 200, 240, 280, 520, 560, 600, 640, 680, 720, 1000, 1040]
    return write_video(d / "v.mkv", frames=len(pts), gop=4, bframes=1, pts=pts, time_base=Fraction(1, 1000))


def test_a_segment_decodes_from_its_key_frame_to_the_end_without_missing_a_frame(clip: Path) -> None:
    layout = read_layout(clip)
    keys = list(layout.key_indices) + [len(layout.pts)]
    assert len(keys) > 2
    for start, end in zip(keys, keys[1:]):
        out, fed = decode_fed(clip, from_pts=layout.pts[start])
        assert [i for i in out if start <= i < end] == list(range(start, end))
        assert min(out) >= start - 2  # only an open GOP's leading frames may come before
        assert fed == len(layout.pts) - start  # closed GOPs: nothing before the key frame is fed
    whole, fed = decode_fed(clip)
    assert whole == list(range(len(layout.pts))) and fed == len(layout.pts)


def test_key_frames_alone_decode_to_exactly_the_key_frames(clip: Path) -> None:
    layout = read_layout(clip)
    key_pts = {layout.pts[i] for i in layout.key_indices}
    out, fed = decode_fed(clip, only_pts=key_pts)
    assert out == list(layout.key_indices) and fed == len(key_pts)


def test_the_end_of_stream_packet_always_passes_and_nothing_before_the_start_does() -> None:
    packets = [(0, 10), (3, 10), (1, 10), (2, 10), (6, 10), (4, 10), (5, 10), (None, 0)]  # (pts, size)
    fed = list(packets_to_decode(packets, lambda p: p[1], lambda p: p[0], from_pts=6))
    assert fed == [(6, 10), (4, 10), (5, 10), (None, 0)]
    fed = list(packets_to_decode(packets, lambda p: p[1], lambda p: p[0], only_pts={0, 6}))
    assert fed == [(0, 10), (6, 10), (None, 0)]
    assert list(packets_to_decode(packets, lambda p: p[1], lambda p: p[0], from_pts=99)) == [(None, 0)]
