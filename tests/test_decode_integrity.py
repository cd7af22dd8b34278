"""Integrity: one completeness rule however a file is cut, honest timestamps for raw streams,
and FFmpeg kept to local files in video formats."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from .test_bulk import bulk_main, entries, read_jsonl
from .videos import write_video


class ConnectionRecorder:
    """A TCP listener on 127.0.0.1 that records (and closes) every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.connections: list[tuple[str, int]] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return  # closed
            self.connections.append(addr)
            conn.close()

    def close(self) -> None:
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def recorder():
    r = ConnectionRecorder()
    yield r
    r.close()


def reference_files(src: Path, outside: Path, port: int) -> list[str]:
    """Playlists, concat lists and SDP descriptors pointing out of DIR and at a local port."""
    url = f"http://127.0.0.1:{port}/seg.ts"
    files = {
        "outside.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n{outside}\n#EXT-X-ENDLIST\n",
        "net.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n{url}\n#EXT-X-ENDLIST\n",
        "outside.ffconcat": f"ffconcat version 1.0\nfile '{outside}'\n",
        "net.ffconcat": f"ffconcat version 1.0\nfile '{url}'\n",
        "outside.sdp": ("v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
                        f"m=video {port} RTP/AVP 96\na=rtpmap:96 H264/90000\n"),
    }
    for name, text in files.items():
        (src / name).write_text(text)
    return list(files)


def test_playlists_concat_lists_and_sdp_files_are_refused_without_opening_what_they_name(
        tmp_path: Path, model_path: Path, recorder: ConnectionRecorder) -> None:
    outside = write_video(tmp_path / "outside.mp4", frames=5)
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "good.mp4", frames=4)
    names = reference_files(src, outside, recorder.port)
    out = tmp_path / "out"
    rc, summary = bulk_main(src, out, model_path)
    files = entries(summary)
    assert recorder.connections == [], "FFmpeg must not open network connections named in a file"
    assert files["good.mp4"]["status"] == "ok" and files["good.mp4"]["frames"] == 4
    for name in names:
        entry = files[name]
        assert entry["status"] in ("skipped", "error") and "allowed" in entry["error"], (name, entry)
        assert "\n" not in entry["error"]
        assert not list(out.glob(f"{name}*")), f"{name}: no output from what it points at"
    assert rc == 0
    assert read_jsonl(out / "good.mp4.jsonl")[-1]["frame"] == 3


def truncate(path: Path, keep: float = 0.6) -> Path:
    """Cut the file at the end of the packet nearest ``keep`` of its size: no half packet is
    left to fail on, so only the container's declarations show what is missing."""
    import av

    with av.open(str(path)) as c:
        ends = [p.pos + p.size for p in c.demux(video=0) if p.size and p.pos is not None and p.pos >= 0]
    cut = min(ends, key=lambda end: abs(end - keep * path.stat().st_size))
    path.write_bytes(path.read_bytes()[:cut])
    return path


def split_run(src: Path, out: Path, model_path: Path, *extra: str) -> tuple[int, dict]:
    """A run that splits ``long.*``: two workers, and a short file beside it (see test_schedule)."""
    write_video(src / "short.mp4", frames=6)
    return bulk_main(src, out, model_path, "--workers", "2", *extra)


@pytest.mark.parametrize(("name", "kwargs"), [("long.mkv", {}), ("long.mp4", {"faststart": True})])
def test_truncated_file_cut_into_segments_is_an_error_with_its_frames_kept(tmp_path: Path, model_path: Path,
                                                                          name: str, kwargs: dict) -> None:
    src = tmp_path / "v"
    src.mkdir()
    truncate(write_video(src / name, frames=96, gop=12, **kwargs))
    out = tmp_path / "out"
    rc, summary = split_run(src, out, model_path)
    entry = entries(summary)[name]
    assert len(entry["segments"]) > 1, "the truncated file must have been cut into segments"
    assert rc == 2 and entry["status"] == "error"
    assert any(word in entry["error"] for word in ("truncated", "declares", "damaged")), entry["error"]
    assert not (out / f"{name}.jsonl").exists()
    partial = read_jsonl(out / f"{name}.jsonl.partial")
    assert entry["frames"] == len(partial) > 0
    assert [r["frame"] for r in partial] == list(range(len(partial)))
    assert entries(summary)["short.mp4"]["status"] == "ok"
    rc, again = bulk_main(src, out, model_path, "--workers", "2")
    assert rc == 2 and entries(again)[name]["status"] == "error" and not entries(again)[name].get("resumed")


def test_corrupt_file_cut_into_segments_is_an_error(tmp_path: Path, model_path: Path) -> None:
    from .test_bulk import corrupt_middle

    src = tmp_path / "v"
    src.mkdir()
    corrupt_middle(write_video(src / "long.mp4", frames=96, gop=12))
    rc, summary = split_run(src, tmp_path / "out", model_path)
    entry = entries(summary)["long.mp4"]
    assert len(entry["segments"]) > 1
    assert rc == 2 and entry["status"] == "error" and entry["error"]
    assert not (tmp_path / "out" / "long.mp4.jsonl").exists()


@pytest.mark.parametrize(
    ("flag", "expected"),
    [([], list(range(30))), (["--fps", "4"], list(range(0, 30, 3))), (["--every", "5"], list(range(0, 30, 5))),
     (["--keyframes"], [0, 12, 24])],
)
def test_raw_h264_frames_are_timed_by_their_declared_rate(tmp_path: Path, model_path: Path, flag, expected) -> None:
    from .videos import write_raw_stream

    src = tmp_path / "v"
    src.mkdir()
    write_raw_stream(src / "long.h264", frames=30, fps=12, gop=12, bframes=2)
    rc, summary = split_run(src, tmp_path / "out", model_path, *flag)
    entry = entries(summary)["long.h264"]
    assert rc == 0 and entry["status"] == "ok", entry
    assert len(entry["segments"]) == 1, "a stream without timestamps is decoded whole, never split"
    rows = read_jsonl(tmp_path / "out" / "long.h264.jsonl")
    assert [r["frame"] for r in rows] == expected
    assert [r["t"] for r in rows] == pytest.approx([i / 12 for i in expected], abs=1e-6)


def test_a_raw_stream_without_a_frame_rate_is_an_error_that_says_so(tmp_path: Path, model_path: Path) -> None:
    from .videos import write_mjpeg_stream

    src = tmp_path / "v"
    src.mkdir()
    write_mjpeg_stream(src / "cam.mjpeg")
    write_video(src / "good.mp4", frames=3)
    rc, summary = bulk_main(src, tmp_path / "out", model_path, "--fps", "2")
    entry = entries(summary)["cam.mjpeg"]
    assert rc == 2 and entry["status"] == "error"
    assert "no timestamps" in entry["error"] and "frame rate" in entry["error"]
    assert not (tmp_path / "out" / "cam.mjpeg.jsonl").exists()
    assert entries(summary)["good.mp4"]["status"] == "ok"
