"""FFmpeg's own error messages about the file a thread is demuxing, caught per container.

Some damage leaves no trace in the packets: a Matroska file cut short demuxes to its cut
without an error code, and a damaged cluster is skipped with a log line only ("File ended
prematurely", "Element ... exceeds containing master element"). PyAV drops FFmpeg's log
by default; here its ERROR-level messages are turned on once for the process
(:class:`Routing`) and caught with ``av.logging.Capture(local=True)``, which keeps each
thread's messages to itself, around each read of one container, so two files demuxed at
once never see each other's messages. Messages caught by no one (another library's decoder
threads, say) are dropped, as PyAV's default does, not printed. A program that set PyAV's
log level itself keeps its own setting, and its logging gets what it asked for.

Only messages about the file or its video count: one that names another stream (the mov
demuxer's "stream 1, offset 0x...: partial file" when a download stops in sound that runs on
after the picture) says nothing about the frames.

Only from PyAV 18.1 (:data:`AVAILABLE`): with FFmpeg's log routed to Python, an older PyAV
deadlocks when a decoder's own threads log an error while the decoding thread waits for
them holding the GIL (17.1: four threads decoding damaged MPEG-TS hang within seconds;
18.1.1 ran six for a minute). There the messages are not read, and the other checks
(declared durations, the file's end) stand alone.
"""

from __future__ import annotations

import atexit
import functools
import re
import threading
from typing import Iterator

import av
import av.logging

__all__ = ["Messages", "Routing", "AVAILABLE", "about_other_stream"]

AVAILABLE = tuple(int(part) for part in av.__version__.split(".")[:2]) >= (18, 1)

_SINK_LIMIT = 256  # messages nobody captured, kept at most before they are cleared
# How demuxers name a stream in their messages: "stream 1, offset ...", "Stream #1", "stream=1".
_STREAM = re.compile(r"\bstream\s*[#=:]?\s*(\d+)\b", re.IGNORECASE)


def about_other_stream(message: str, video_index: int) -> bool:
    """Whether ``message`` names a stream, and only streams other than the video's."""
    named = {int(n) for n in _STREAM.findall(message)}
    return bool(named) and video_index not in named


class Routing:
    """FFmpeg's ERROR-level log routed to Python for the process, while open.

    Open once (:func:`routing`), closed at exit: ``close`` ends the process-wide capture
    that stands in for "dropped" and gives PyAV back its default (no log reaches Python)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._capture: av.logging.Capture | None = None
        self._sink: list | None = None

    def open(self) -> None:
        """Route the log, unless the program set PyAV's level itself (then its setting stands)."""
        with self._lock:
            if self._capture is not None or not AVAILABLE or av.logging.get_level() is not None:
                return
            av.logging.set_level(av.logging.ERROR)
            # Identical messages from two threads in a row (two truncated files of one format)
            # would otherwise be folded into one, and the second file would not see its own.
            av.logging.set_skip_repeated(False)
            self._capture = av.logging.Capture(local=False)
            self._sink = self._capture.__enter__()

    def trim(self) -> None:
        """Drop the messages nobody captured (other threads'), once they pile up."""
        sink = self._sink
        if sink is not None and len(sink) > _SINK_LIMIT:
            sink.clear()

    def close(self) -> None:
        """End the routing: PyAV's default again, nothing held."""
        with self._lock:
            if self._capture is None:
                return
            self._capture.__exit__(None, None, None)
            self._capture = self._sink = None
            av.logging.set_level(None)
            av.logging.set_skip_repeated(True)


@functools.cache
def routing() -> Routing:
    """The process's one :class:`Routing`, opened on first use and closed at exit."""
    r = Routing()
    r.open()
    atexit.register(r.close)
    return r


class Messages:
    """The ERROR-level messages one container's demuxer logged about the file or its video
    stream while this thread read it."""

    def __init__(self, container: av.container.InputContainer, video_index: int) -> None:
        self._routing = routing()
        self.name = container.format.name  # FFmpeg names a demuxer's messages after it
        self.video_index = video_index
        self.errors: list[str] = []

    def read(self, packets: Iterator[av.Packet]) -> av.Packet | None:
        """The next packet of ``packets`` (None at the end), with what FFmpeg logged in this
        thread while reading it."""
        if not AVAILABLE:
            return next(packets, None)
        with av.logging.Capture(local=True) as logs:
            packet = next(packets, None)
        if logs:
            self.errors += [m.strip() for level, name, m in logs
                            if level <= av.logging.ERROR and name == self.name
                            and not about_other_stream(m, self.video_index)]
        self._routing.trim()
        return packet
