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
    "PostProcessingError",
    "DeviceError",
    "DownloadError",
    "QuantizationError",
    "Interrupted",
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


class PostProcessingError(FramestreamError, RuntimeError):
    """A step between inference and the output (``--classes``/``--conf`` filtering, ``--track``)
    failed on one video's detections, most likely a bug: that video fails with this message and
    the run goes on; its frames so far are kept as its partial output."""


class DeviceError(FramestreamError, RuntimeError):
    """The GPU itself failed (out of memory, a CUDA or driver error), not the file being decoded
    or inferred: no later file would fare better, so the run stops cleanly, as when the server
    is lost (files in flight keep partial outputs, the rest are not processed, a rerun resumes)."""


class DownloadError(FramestreamError, RuntimeError):
    """A download was attempted and failed: the server refused it, the network broke off, or the
    bytes are not the published ones (size, SHA-256). Work failed (exit 2), not a usage error."""


class QuantizationError(FramestreamError, RuntimeError):
    """Quantisation ran and no INT8 model holds the agreement asked for: work failed (exit 2)."""


class Interrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM, SIGHUP) before the run started, when no output is being
    written (start-up writes only the lock and a model built atomically): raised, so start-up
    stops at once; ``exit_code`` is 128 + the signal's number. Once the run
    has started a signal is a flag the run polls instead (:class:`client.bulk_run.Interrupts`)."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__(signal_name)
        self.signal_name, self.exit_code = signal_name, exit_code
