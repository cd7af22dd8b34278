"""Completeness that knows real containers (issue #24, findings 5, 6, 7, 9 and 10).

Files as recorders, editors and players make them, written here with PyAV: a recording with
a sound track cut short (MKV, WebM, FLV; Matroska written live, with no length anywhere), a
variable frame rate, an MP4 cut without re-encoding (an edit list), MPEG-TS and MPEG-PS with
B-frames split into key-frame segments, H.264 with B-frames in AVI, and a still image as
the first video track. Each is decoded through the one loop and the one completeness rule.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from client.decode import FrameRange, Sampling
from client.decode import ffmpeg_log
from client.decode.pyav_source import PyAVSource
from client.discovery import discover, probe
from client.errors import DecodeError
from client.letterbox import plan_letterbox
from client.schedule import FilePlan, plan

from .test_bulk import bulk_main, entries, read_jsonl
from .videos import cut_short, write_cut_without_reencoding, write_still_first, write_video, write_with_audio

PLAN_320 = lambda hw: plan_letterbox(hw, (320, 320), minimal=True)  # noqa: E731
needs_ffmpeg_log = pytest.mark.skipif(not ffmpeg_log.AVAILABLE, reason="FFmpeg's messages are read from PyAV 18.1 "
                                      "(older ones deadlock with FFmpeg's log routed to Python)")
# 30 frames/s of motion for 2 s, then one frame a second for 10 s (a screen recording gone still).
VFR_PTS = [round(i * 1000 / 30) for i in range(60)] + [2000 + 1000 * k for k in range(10)]


def decode(path: Path, sampling: Sampling = Sampling(), frame_range: FrameRange | None = None):
    with PyAVSource(path, sampling=sampling, frame_range=frame_range) as src:
        return list(src.frames(PLAN_320))


def split_plan(path: Path, sampling: Sampling = Sampling()) -> FilePlan:
    """``path`` planned as a run with several workers plans it (cut at every key frame it can)."""
    (c,) = [v for v in discover(path.parent).videos if v.path == path]
    (p,) = plan([c], sampling, workers=8, split=True)
    return p


def decode_split(path: Path, p: FilePlan, discarded: int = 0) -> list[tuple[int, float]]:
    """Every segment of a split plan decoded on its own, as the workers do, in order
    (``discarded``: the packets an edit list hides, as client.jobs passes them)."""
    index_of_pts = {pts: i for i, pts in enumerate(p.layout.pts)}
    frames = []
    for seg in p.segments:
        extra = {"discarded": discarded} if discarded else {}
        r = FrameRange(seg.start, seg.end, seg.seek_pts, frozenset(p.selected), index_of_pts, expected=seg.work,
                       **extra)
        frames += [(f.index, f.t) for f in decode(path, frame_range=r)]
    return frames


# -- 5: a recording cut short is an error, with or without a sound track ----------------------


@pytest.mark.parametrize(("name", "kwargs"), [
    ("obs.mkv", {}),
    ("browser.webm", {"codec": "libvpx", "audio": "libopus"}),
    ("rtmp.flv", {}),
])
def test_a_recording_with_sound_cut_short_is_an_error_after_its_frames(tmp_path: Path, name: str,
                                                                       kwargs: dict) -> None:
    whole = write_with_audio(tmp_path / name, frames=48, **kwargs)
    assert len(decode(whole)) == 48  # the complete recording is complete
    cut = cut_short(whole, 0.5)  # at a packet's end: nothing fails to demux or decode
    with pytest.raises(DecodeError, match="truncated") as info:
        decode(cut)
    assert 0 < info.value.frames_decoded < 48


@needs_ffmpeg_log
def test_a_live_matroska_recording_cut_short_is_an_error_by_ffmpegs_own_message(tmp_path: Path) -> None:
    """Written live (OBS, a browser), Matroska declares no length anywhere: only FFmpeg's
    "File ended prematurely" tells the cut."""
    whole = write_with_audio(tmp_path / "live.mkv", frames=48, options={"live": "1"})
    assert len(decode(whole)) == 48
    cut = cut_short(whole, 0.5, at_packet=False)
    with pytest.raises(DecodeError, match="File ended prematurely"):
        decode(cut)


@needs_ffmpeg_log
def test_ffmpegs_messages_stay_with_the_file_that_caused_them(tmp_path: Path) -> None:
    """Two threads decode at once, one a cut recording, one a whole one (same format, same
    messages): each gets its own verdict, every time."""
    whole = write_with_audio(tmp_path / "whole.mkv", frames=48, options={"live": "1"})
    cut = cut_short(write_with_audio(tmp_path / "cut.mkv", frames=48, options={"live": "1"}), 0.5, at_packet=False)
    verdicts: dict[str, list[str]] = {"whole": [], "cut": []}
    start = threading.Barrier(2)

    def run(name: str, path: Path) -> None:
        start.wait()
        for _ in range(4):
            try:
                decode(path)
                verdicts[name].append("ok")
            except DecodeError as e:
                verdicts[name].append(str(e))

    threads = [threading.Thread(target=run, args=item) for item in (("whole", whole), ("cut", cut))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verdicts["whole"] == ["ok"] * 4
    assert len(verdicts["cut"]) == 4 and all("File ended prematurely" in v for v in verdicts["cut"]), verdicts


# -- 6: valid files are not called damaged ----------------------------------------------------


def _mp4_with_sound_after_the_picture(path: Path) -> tuple[Path, int]:
    """An MP4 (index first) whose sound runs 2 s on after its 24 frames, and where the
    picture's last byte lies in the file."""
    write_with_audio(path, frames=24, sound_s=4.0, options={"movflags": "faststart"})
    with av.open(str(path)) as c:
        video_end = max(p.pos + p.size for p in c.demux(c.streams.video[0]) if p.size)
    return path, video_end


@needs_ffmpeg_log
def test_a_whole_video_with_its_sound_cut_short_is_complete_and_a_cut_picture_is_not(tmp_path: Path) -> None:
    """A download stopped in the sound that runs on after the picture: the mov demuxer logs
    "stream 1, offset ...: partial file" about the sound, and the 24 frames are all there.
    The same file stopped inside the picture stays an error."""
    path, video_end = _mp4_with_sound_after_the_picture(tmp_path / "download.mp4")
    size = path.stat().st_size
    assert len(decode(path)) == 24
    cut_short(path, (video_end + size) / 2 / size, at_packet=False)  # mid-packet, in the sound alone
    assert [f.index for f in decode(path)] == list(range(24))
    with av.open(str(path)) as c:  # FFmpeg does complain, and names the sound's stream
        messages = ffmpeg_log.Messages(c, video_index=c.streams.video[0].index)
        packets = c.demux()
        while messages.read(packets) is not None:
            pass
        sound = ffmpeg_log.Messages(c, video_index=c.streams.audio[0].index)  # as if the sound were the video
        c.seek(0)
        packets = c.demux()
        while sound.read(packets) is not None:
            pass
    assert messages.errors == [] and any("partial file" in m for m in sound.errors), sound.errors

    cut_in_picture, video_end = _mp4_with_sound_after_the_picture(tmp_path / "cut.mp4")
    cut_short(cut_in_picture, video_end / 2 / cut_in_picture.stat().st_size, at_packet=False)
    with pytest.raises(DecodeError) as info:
        decode(cut_in_picture)
    assert 0 < info.value.frames_decoded < 24


ROUTING = """
import av.logging
from client.decode.ffmpeg_log import AVAILABLE, Routing
own = {own!r}
if own is not None:
    av.logging.set_level(own)
r = Routing()
r.open()
opened = av.logging.get_level()
r.close()
r.close()  # a second close is harmless
print(opened, av.logging.get_level(), AVAILABLE)
"""


@needs_ffmpeg_log
@pytest.mark.parametrize(("own", "expected"), [
    (None, f"{av.logging.ERROR} None True"),  # routed while open, PyAV's default after close
    (av.logging.WARNING, f"{av.logging.WARNING} {av.logging.WARNING} True"),  # a program's own level stands
])
def test_ffmpegs_log_is_routed_while_open_and_given_back_on_close(own: int | None, expected: str) -> None:
    """In a fresh interpreter: the process-wide routing has an explicit end."""
    done = subprocess.run([sys.executable, "-c", ROUTING.format(own=own)], capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent, check=True)
    assert done.stdout.split() == expected.split(), done.stderr


@pytest.mark.parametrize(("message", "other"), [
    ("stream 1, offset 0x11ede: partial file", True),
    ("stream 0, offset 0x11ede: partial file", False),
    ("File ended prematurely", False),
    ("Stream #2: not enough frames to estimate rate", True),
])
def test_only_messages_naming_another_stream_are_passed_over(message: str, other: bool) -> None:
    assert ffmpeg_log.about_other_stream(message, video_index=0) is other


@pytest.mark.parametrize(("name", "codec"), [("screen.mkv", "libx264"), ("browser.webm", "libvpx")])
def test_a_variable_frame_rate_recording_is_complete_with_its_own_times(tmp_path: Path, name: str,
                                                                        codec: str) -> None:
    path = write_video(tmp_path / name, frames=len(VFR_PTS), fps=30, codec=codec, pts=VFR_PTS,
                       time_base=Fraction(1, 1000))
    frames = decode(path)
    assert [f.index for f in frames] == list(range(len(VFR_PTS)))
    np.testing.assert_allclose([f.t for f in frames], np.array(VFR_PTS) / 1000, atol=1e-3)


def test_an_mp4_cut_without_reencoding_is_complete_split_or_whole(tmp_path: Path) -> None:
    """``ffmpeg -ss T -i in.mp4 -c copy``: 150 frames cut at frame 50 keep 20 packets before
    the cut that an edit list hides; the file shows 100 frames, from t = 0."""
    path = write_cut_without_reencoding(tmp_path / "cut.mp4", frames=150, fps=30, gop=30, cut_at=50)
    frames = decode(path)
    assert [f.index for f in frames] == list(range(100))
    np.testing.assert_allclose([f.t for f in frames], np.arange(100) / 30, atol=1e-3)
    p = split_plan(path)
    assert p.split and p.layout.discarded == 20
    assert decode_split(path, p, p.layout.discarded) == [(f.index, f.t) for f in frames]
    assert [f.index for f in decode(path, Sampling(keyframes=True))] == [10, 40, 70]


# -- 7: key-frame segments of MPEG-TS and MPEG-PS start at their key frame --------------------


@pytest.mark.parametrize(("name", "kwargs"), [
    ("broadcast.ts", {"bframes": 2}),  # H.264 with B-frames: the seek lands one GOP late
    ("dvd.vob", {"codec": "mpeg2video", "audio": "mp2", "bframes": 2}),  # MPEG-2 in MPEG-PS
    ("camera.mpg", {"codec": "mpeg2video", "audio": "mp2", "bframes": 2}),
])
def test_split_transport_and_program_streams_decode_every_segment_whole(tmp_path: Path, name: str,
                                                                        kwargs: dict) -> None:
    path = write_with_audio(tmp_path / name, frames=96, gop=12, **kwargs)
    whole = [(f.index, f.t) for f in decode(path)]
    assert [i for i, _ in whole] == list(range(96))
    p = split_plan(path)
    assert p.split and len(p.segments) >= 4
    assert decode_split(path, p) == whole


# -- 9: AVI is timed by index and rate --------------------------------------------------------


def test_h264_with_bframes_in_avi_is_timed_in_presentation_order_split_or_whole(tmp_path: Path) -> None:
    path = write_with_audio(tmp_path / "cam.avi", frames=48, fps=25, gop=12, bframes=2, audio="mp2")
    frames = decode(path)
    assert [f.index for f in frames] == list(range(48))
    np.testing.assert_allclose([f.t for f in frames], np.arange(48) / 25, atol=1e-6)
    p = split_plan(path)  # a split AVI, if it is ever split, must give the same frames and times
    if p.split:
        assert decode_split(path, p) == [(f.index, f.t) for f in frames]
    assert [f.index for f in decode(path, Sampling(fps=5))] == list(range(0, 48, 5))


# -- 10: the video, not a still image before it -----------------------------------------------


@pytest.mark.parametrize("name", ["cover.mkv", "poster.mp4"])
def test_a_still_image_as_the_first_video_track_is_passed_over_and_the_choice_logged(
        tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    path = write_still_first(tmp_path / name, frames=24, fps=12)
    frames = decode(path)
    assert [f.index for f in frames] == list(range(24))
    with caplog.at_level(logging.INFO, logger="client.discovery"):
        verdict, _, seconds = probe(path)
    assert verdict is None and seconds == pytest.approx(2.0, abs=0.1)
    assert "decoding stream #1 (h264 160x96), not #0" in caplog.text


# -- the same files through a whole run with four workers (split where long) --------------------------------------


def test_a_run_over_real_world_containers_tells_complete_from_cut(tmp_path: Path, model_path: Path) -> None:
    src = tmp_path / "v"
    src.mkdir()
    cut_short(write_with_audio(src / "obs.mkv", frames=48), 0.5)
    write_video(src / "screen.mkv", frames=len(VFR_PTS), fps=30, pts=VFR_PTS, time_base=Fraction(1, 1000))
    write_cut_without_reencoding(src / "clip.mp4", frames=150, fps=30, gop=30, cut_at=50)
    write_with_audio(src / "broadcast.ts", frames=192, gop=24, bframes=2)  # most of the work: split
    write_with_audio(src / "cam.avi", frames=48, fps=25, gop=12, bframes=2, audio="mp2")
    write_still_first(src / "cover.mkv", frames=24)
    out = tmp_path / "out"
    rc, summary = bulk_main(src, out, model_path, "--workers", "4")
    files = entries(summary)
    assert rc == 2 and files["obs.mkv"]["status"] == "error" and "truncated" in files["obs.mkv"]["error"]
    assert 0 < len(read_jsonl(out / "obs.mkv.jsonl.partial")) < 48
    expected = {"screen.mkv": len(VFR_PTS), "clip.mp4": 100, "broadcast.ts": 192, "cam.avi": 48, "cover.mkv": 24}
    for name, n in expected.items():
        assert files[name]["status"] == "ok", files[name]
        rows = read_jsonl(out / f"{name}.jsonl")
        assert [r["frame"] for r in rows] == list(range(n)), name
        times = [r["t"] for r in rows]
        assert times == sorted(times), name
    assert len(files["broadcast.ts"].get("segments", [])) > 1, "the transport stream must have been split"
    rc, again = bulk_main(src, out, model_path, "--workers", "4")
    assert rc == 2 and entries(again)["obs.mkv"]["status"] == "error" and not entries(again)["obs.mkv"].get("resumed")
