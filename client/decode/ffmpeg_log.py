"""FFmpeg's own error messages about the file a thread is demuxing, caught per container.

Some damage leaves no trace in the packets: a Matroska file cut short demuxes to its cut
without an error code, and a damaged cluster is skipped with a log line only ("File ended
prematurely", "Element ... exceeds containing master element"). PyAV drops FFmpeg's log
by default; here its ERROR-level messages are turned on once for the process and caught
with ``av.logging.Capture(local=True)``, which keeps each thread's messages to itself, around
each read of one container, so two files demuxed at once never see each other's messages.
Messages caught by no one (another library's decoder threads, say) are dropped, as PyAV's
default does, not printed. A program that set PyAV's log level itself keeps its own
setting, and its logging gets what it asked for.

Only from PyAV 18.1 (:data:`AVAILABLE`): with FFmpeg's log routed to Python, an older PyAV
deadlocks when a decoder's own threads log an error while the decoding thread waits for
them holding the GIL (17.1: four threads decoding damaged MPEG-TS hang within seconds;
18.1.1 ran six for a minute). There the messages are not read, and the other checks
(declared durations, the file's end) stand alone.
"""

from __future__ import annotations

import threading
from typing import Iterator

import av
import av.logging

__all__ = ["Messages", "AVAILABLE"]

AVAILABLE = tuple(int(part) for part in av.__version__.split(".")[:2]) >= (18, 1)

_lock = threading.Lock()
_ready = False
_sink: list | None = None  # messages nobody captured, cleared as it grows (PyAV's default drops them)
_SINK_LIMIT = 256


def _enable() -> None:
    global _ready, _sink
    with _lock:
        if _ready:
            return
        if AVAILABLE and av.logging.get_level() is None:  # PyAV's default: nothing reaches Python
            av.logging.set_level(av.logging.ERROR)
            # Identical messages from two threads in a row (two truncated files of one format)
            # would otherwise be folded into one, and the second file would not see its own.
            av.logging.set_skip_repeated(False)
            capture = av.logging.Capture(local=False)
            _sink = capture.__enter__()  # held for the process: the stand-in for "dropped"
        _ready = True


class Messages:
    """The ERROR-level messages one container's demuxer logged while this thread read it."""

    def __init__(self, container: av.container.InputContainer) -> None:
        _enable()
        self.name = container.format.name  # FFmpeg names a demuxer's messages after it
        self.errors: list[str] = []

    def read(self, packets: Iterator[av.Packet]) -> av.Packet | None:
        """The next packet of ``packets`` (None at the end), with what FFmpeg logged in this
        thread while reading it."""
        if not AVAILABLE:
            return next(packets, None)
        with av.logging.Capture(local=True) as logs:
            packet = next(packets, None)
        if logs:
            self.errors += [m.strip() for level, name, m in logs if level <= av.logging.ERROR and name == self.name]
        if _sink is not None and len(_sink) > _SINK_LIMIT:  # other threads' messages, nobody's to read
            _sink.clear()
        return packet
