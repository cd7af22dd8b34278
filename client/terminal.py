"""What reaches a person's terminal: names made harmless, and a stderr that cannot fail a run.

A file name may hold any byte but '/' and NUL: an ESC sequence in one recolours or rewrites
the terminal, a newline splits a table row or a log line in two. :func:`printable` escapes
them as ``\\xNN`` (the bytes that are not UTF-8 as well, as summary.json writes them).

stderr is for people: when it is closed (``2>&-``) or a pipe whose reader has gone
(``2>&1 | head``), the run's result must not change. :class:`TolerantStream` drops what can
no longer be written and points the descriptor at /dev/null, so the interpreter's last flush
cannot fail either; the exit code stays the run's own.

A live progress bar and log lines share one terminal line discipline, :class:`StatusLine`:
the bar is the last line, redrawn in place (carriage return, the text cut to the terminal's
width so it never wraps, then "erase to the end of the line", so a shorter text leaves no
tail of the longer one); a log line is printed above it (the bar erased, the line printed,
the bar drawn again). :class:`StatusLineHandler` is the CLI's one logging handler, and Python
warnings reach it through ``logging.captureWarnings``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import threading
from typing import TextIO

from .outfiles import display_rel

__all__ = ["printable", "TolerantStream", "EscapingFormatter", "StatusLine", "StatusLineHandler", "status_line"]

_ERASE_LINE = "\r\x1b[K"  # to the line's start, then erase to its end (ECMA-48 EL 0)

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
        if record.name == "py.warnings":  # "file:line: Category: text" and the source line it quotes
            record.message = record.message.strip().splitlines()[0] if record.message.strip() else ""
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

    def fileno(self) -> int:
        """The descriptor under it (a terminal's width is asked of it); OSError once broken."""
        if self.broken:
            raise io.UnsupportedOperation("the stream is closed")
        return self._stream.fileno()

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


class StatusLine:
    """The last line of a terminal, redrawn in place, with lines printed above it (see the module
    docstring). Thread-safe: decoders log while the collector redraws."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._text: str | None = None  # what the status line shows now; None: nothing drawn
        self.lock = threading.RLock()

    def show(self, text: str) -> None:
        """Replace the status line's text (cut to the terminal's width)."""
        with self.lock:
            self._text = text
            self._stream.write(_ERASE_LINE + self._fit(text))
            self._stream.flush()

    def print_above(self, line: str) -> None:
        """``line`` on a line of its own, above the status line, which is drawn again under it."""
        with self.lock:
            head = _ERASE_LINE if self._text is not None else ""
            tail = self._fit(self._text) if self._text is not None else ""
            self._stream.write(f"{head}{line}\n{tail}")
            self._stream.flush()

    def end(self) -> None:
        """Leave the status line's last text where it is, and what follows on the next line."""
        with self.lock:
            if self._text is not None:
                self._stream.write("\n")
                self._stream.flush()
            self._text = None

    def _fit(self, text: str) -> str:
        """One column short of the width: a line that filled it would wrap on some terminals."""
        try:
            columns = os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
            columns = 0
        if columns <= 0:  # not a terminal, or one that gives no size (a pty nobody sized)
            columns = shutil.get_terminal_size(fallback=(80, 24)).columns
        return text[:max(columns - 1, 10)]


class StatusLineHandler(logging.StreamHandler):
    """The CLI's log handler: each record on its own line, above a live status line if one is
    drawn (:func:`status_line` finds it for the progress bar)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.status = StatusLine(stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.status.print_above(self.format(record))
        except RecursionError:
            raise
        except Exception:  # logging's own rule: a record that cannot be written never stops the run
            self.handleError(record)


def status_line(stream: TextIO) -> StatusLine:
    """The status line log records are printed above: the root logger's
    :class:`StatusLineHandler`'s, or (no such handler: a library caller) a new one on ``stream``."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, StatusLineHandler):
            return handler.status
    return StatusLine(stream)
