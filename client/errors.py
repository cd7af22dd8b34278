"""framestream's exceptions: one base, each subclass also a builtin where one fits.

Library errors are translated into these at one boundary and re-raised ``from`` the
original, so the CLI can print one line and choose the exit code without a traceback.
"""

from __future__ import annotations

__all__ = [
    "FramestreamError",
    "UsageError",
    "ModelError",
    "ContractMismatchError",
    "DecodeError",
    "ServerError",
    "ServerUnavailableError",
    "OutputError",
    "OutputStorageError",
    "OutputBusyError",
    "PipelineCrash",
]


class FramestreamError(Exception):
    """Base of every error framestream raises on purpose."""


class UsageError(FramestreamError, ValueError):
    """The user asked for something that cannot work (bad path, bad option)."""


class ModelError(FramestreamError, ValueError):
    """A model file is missing, unreadable or not a YOLO model we can serve."""


class ContractMismatchError(ModelError):
    """A served model's inputs or outputs differ from the serving contract."""


class DecodeError(FramestreamError, RuntimeError):
    """A video could not be (fully) decoded; carries how far decoding got."""

    def __init__(self, message: str, *, frames_decoded: int = 0) -> None:
        super().__init__(message)
        self.frames_decoded = frames_decoded


class ServerError(FramestreamError, RuntimeError):
    """Triton answered with an error that retrying will not fix."""


class ServerUnavailableError(ServerError, ConnectionError):
    """Triton could not be reached (or stayed unreachable past the retry budget)."""


class OutputError(FramestreamError, OSError):
    """One video's output could not be written (a name the file system refuses, a symlink in
    the way): that video fails, the run goes on."""


class OutputStorageError(OutputError):
    """The output location itself is unusable (disk full, read-only, folder gone): no video
    can be written, so the run stops cleanly and a rerun resumes."""


class OutputBusyError(FramestreamError, BlockingIOError):
    """Another framestream run holds the output folder's lock: this one starts nothing."""


class PipelineCrash(FramestreamError, RuntimeError):
    """A pipeline stage failed outside any one file's work (a bug): the run stops, keeps what
    it has as partial outputs, and says so."""
