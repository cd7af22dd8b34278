"""What reaches a person's terminal: names made harmless, and a stderr that cannot fail a run.

A file name may hold any byte but '/' and NUL: an ESC sequence in one recolours or rewrites
the terminal, a newline splits a table row or a log line in two. :func:`printable` escapes
them as ``\\xNN`` (the bytes that are not UTF-8 as well, as summary.json writes them).

stderr is for people: when it is closed (``2>&-``) or a pipe whose reader has gone
(``2>&1 | head``), the run's result must not change. :class:`TolerantStream` drops what can
no longer be written and points the descriptor at /dev/null, so the interpreter's last flush
cannot fail either; the exit code stays the run's own.
"""

from __future__ import annotations

import io
import logging
import os
import re
from typing import TextIO

from .outfiles import display_rel

__all__ = ["printable", "TolerantStream", "EscapingFormatter"]

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidirectional
# overrides and isolates (they reorder what follows on the line).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str) -> str:
    """``text`` with every character that would act on a terminal written as an escape; bytes
    that are not UTF-8 (surrogate escapes, as Python holds them in names) as ``\\xNN``, by
    :func:`~client.outfiles.display_rel`, as summary.json writes them."""
    try:
        text = display_rel(text)
    except UnicodeEncodeError:  # a surrogate no name's byte gives: escaped as the terminal would
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _UNSAFE.sub(_escape, text)


class EscapingFormatter(logging.Formatter):
    """Log messages on one line each, whatever names they quote; a traceback (``-v``) keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = printable(record.message)
        return super().formatMessage(record)


class TolerantStream(io.TextIOBase):
    """A text stream over ``stream`` (None: closed at start) that stops writing, silently, the
    first time writing fails; the run goes on and exits by its own result."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self.broken = stream is None

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._stream.write(text)
            except (OSError, ValueError):  # EPIPE, EBADF; ValueError: the stream was closed
                self._break()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._break()

    def isatty(self) -> bool:
        if self.broken:
            return False
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def writable(self) -> bool:
        return True

    def _break(self) -> None:
        """Stop writing, and point the descriptor at /dev/null: what the stream still buffers
        then flushes without error at exit (a failed flush there would change the exit code)."""
        self.broken = True
        try:
            fd = self._stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            return
        try:
            os.dup2(null, fd)
        except OSError:
            pass
        finally:
            os.close(null)
