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
