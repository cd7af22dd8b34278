"""What every framestream command shares: its exit codes, its parser, how it prints an error, how it logs.

One convention for ``framestream`` and each of its subcommands (``python -m client.bulk``,
``client.render``, ``client.summary``, ``server_config.model``, ``server_config.local``):

``0``
    done.
``1`` usage error
    the command line cannot be used as given, and nothing was attempted: an unknown or
    malformed option (``--grpc-port abc``), a path or a model that is not there or is not what
    it must be, an output that exists without ``--force``, a port already taken. Raised as
    :class:`~client.errors.UsageError` or :class:`~client.errors.ModelError`.
``2`` work failed
    the command line was fine, the work was attempted and did not (fully) succeed: videos that
    failed, a download that broke off or whose checksum is not the published one, a
    quantisation that cannot reach ``--min-f1``, a server that exited, shards missing from a
    merge. Every other :class:`~client.errors.FramestreamError`.
``128 + N``
    stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP). ``serve`` is the one exception:
    a signal is how a server is meant to stop, so it exits 0 once Triton has stopped.

A caller decides 1 or 2 by the error's class (:func:`exit_code`), never by where it was raised.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .errors import FramestreamError, Interrupted, ModelError, UsageError
from .terminal import EscapingFormatter, StatusLineHandler, TolerantStream
from .wording import DefaultsHelpFormatter

__all__ = ["EXIT_OK", "EXIT_USAGE", "EXIT_FAILED", "EXIT_INTERRUPTED", "Parser", "exit_code", "signal_exit",
           "print_error", "configure_logging", "signals_interrupt"]

EXIT_OK, EXIT_USAGE, EXIT_FAILED = 0, 1, 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130: Ctrl-C
USAGE_ERRORS: tuple[type[FramestreamError], ...] = (UsageError, ModelError)
NOISY_LOGGERS = ("libav", "av", "matplotlib", "PIL")
_STOPPING = (signal.SIGTERM, signal.SIGHUP)

log = logging.getLogger("framestream")


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line exits 1 with one line and a hint (argparse's
    own exit is 2, which here means "work failed"); ``--help`` shows the defaults that tell something.
    Subcommands' parsers (``add_subparsers``) are of this class too."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def exit_code(error: BaseException) -> int:
    """The exit code an error ends a command with: 1 for the command line, 2 for the work,
    128 + N for signal N (:class:`~client.errors.Interrupted`), 130 for Ctrl-C."""
    if isinstance(error, Interrupted):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_USAGE if isinstance(error, USAGE_ERRORS) else EXIT_FAILED


def signal_exit(name: str) -> int:
    """128 + the number of the signal named ``name`` ("SIGTERM": 143)."""
    return 128 + signal.Signals[name].value


def print_error(message: object) -> None:
    """The one way a command reports why it stops: one line, ``error: ...``, on stderr."""
    log.error("error: %s", message)


def configure_logging(*, verbose: bool = False) -> None:
    """Log lines to stderr, each on one line whatever names it quotes (above a live progress
    bar, never on it); a closed or broken stderr silences them without changing the exit code
    (:mod:`client.terminal`). Python warnings go the same way; decoders' chatter is turned down."""
    handler = StatusLineHandler(TolerantStream(sys.stderr))
    handler.setFormatter(EscapingFormatter("%(levelname)s %(message)s" if verbose else "%(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.captureWarnings(True)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.ERROR)


@contextmanager
def signals_interrupt(listen: bool, signals: Sequence[signal.Signals] = _STOPPING) -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise :class:`~client.errors.Interrupted` (Ctrl-C
    already raises KeyboardInterrupt), for a command whose work is one atomic write, so
    stopping it leaves nothing half-written. ``listen`` False (called by another program):
    that program's handlers stay."""
    if not listen:
        yield
        return

    def raise_interrupted(signum: int, frame: object) -> None:  # noqa: ARG001 - signal's signature
        name = signal.Signals(signum).name
        raise Interrupted(name, 128 + signum)

    previous = {s: signal.signal(s, raise_interrupted) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
