"""The local Triton's environment: a venv of its own, never the client's.

``nvidia-pytriton`` carries the ``tritonserver`` binary that :mod:`server_config.local` runs on
CPU, and pins ``numpy<2``; installed beside the client it would hold the client's numpy back.
So it lives in a dedicated venv, prepared on first use from ``triton-env.txt`` (online, or from
a wheelhouse with ``--wheelhouse``) under ``$FRAMESTREAM_HOME/triton-env/<key>``: the key is the
Python version and a digest of the requirements, so a changed pin prepares a new one beside
the old. ``$FRAMESTREAM_TRITON_ENV`` names the folder instead (a container prepares it at
build time). The server's python backend imports numpy and onnxruntime from there, and from
the client only framestream's own ``client`` package.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

from client.errors import FramestreamError, UsageError

from .model.paths import framestream_home

log = logging.getLogger(__name__)

__all__ = ["REQUIREMENTS", "ENV_VAR", "TritonEnv", "TritonEnvError", "triton_env"]

REQUIREMENTS = Path(__file__).with_name("triton-env.txt")
ENV_VAR = "FRAMESTREAM_TRITON_ENV"
_READY = "framestream-ready.json"  # written last: a venv without it is unfinished and is redone


class TritonEnvError(FramestreamError, RuntimeError):
    """The local Triton's environment is missing and cannot be prepared here; says what to run."""


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _key() -> dict[str, str]:
    return {"python": _python_tag(), "requirements": hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()}


@dataclass(frozen=True)
class TritonEnv:
    path: Path

    @property
    def site_packages(self) -> Path:
        return self.path / "lib" / f"python{_python_tag()}" / "site-packages"

    @property
    def triton_root(self) -> Path:
        """nvidia-pytriton's bundled server: bin/tritonserver, backends/, python_backend_stubs/."""
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def libraries(self) -> Path:
        """The shared libraries the wheel bundles for tritonserver (auditwheel's folder)."""
        return self.site_packages / "nvidia_pytriton.libs"

    def is_ready(self) -> bool:
        try:
            stamp = json.loads((self.path / _READY).read_text())
        except (OSError, ValueError):
            return False
        return stamp == _key() and (self.triton_root / "bin" / "tritonserver").is_file()

    def prepare(self, wheelhouse: Path | None = None, *, force: bool = False) -> "TritonEnv":
        """Create the venv and install ``triton-env.txt`` into it (once: a ready one is kept
        unless ``force``). Concurrent callers wait for each other on a lock file."""
        if wheelhouse is not None and not wheelhouse.is_dir():
            raise UsageError(f"--wheelhouse {wheelhouse}: no such folder")
        if self.is_ready() and not force:  # without the lock: a ready one may sit in a read-only place
            return self
        if self.path.exists() and any(self.path.iterdir()) and not (self.path / "pyvenv.cfg").is_file():
            raise UsageError(f"{self.path} is not empty and not a venv; name another folder in ${ENV_VAR}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / f".{self.path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.is_ready() and not force:  # another process prepared it while this one waited
                return self
            log.info("preparing the local Triton's environment in %s (once; about 450 MB)", self.path)
            shutil.rmtree(self.path, ignore_errors=True)
            try:
                venv.EnvBuilder(with_pip=True, clear=True, symlinks=True).create(self.path)
            except (OSError, subprocess.CalledProcessError) as e:
                raise TritonEnvError(f"cannot create a venv in {self.path} ({e}); on Debian/Ubuntu: "
                                     "apt-get install python3-venv") from e
            source = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse is not None else []
            done = subprocess.run([str(self.path / "bin" / "python"), "-m", "pip", "install", "--quiet",
                                   "--disable-pip-version-check", *source, "-r", str(REQUIREMENTS)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                shutil.rmtree(self.path, ignore_errors=True)
                said = [l for l in done.stderr.splitlines() if l.startswith("ERROR")] or done.stderr.splitlines()
                # a wheelhouse given that lacks wheels is the command line's (exit 1); a failed
                # download from the index is the work's (exit 2): client/commandline.py
                raise (UsageError if wheelhouse is not None else TritonEnvError)(
                    f"could not install the local Triton's environment ({(said or ['pip failed'])[-1].strip()}); "
                    "without an index, make a wheelhouse where one answers (python -m server_config.local "
                    "--requirements > req.txt && pip download -d WHEELS -r req.txt) and run "
                    "python -m server_config.local --prepare --wheelhouse WHEELS")
            return self.stamp()

    def stamp(self) -> "TritonEnv":
        """Record the folder as prepared for this Python and ``triton-env.txt``: what
        :meth:`prepare` does last, also for one assembled without pip (an offline machine)."""
        (self.path / _READY).write_text(json.dumps(_key()))
        return self


def triton_env() -> TritonEnv:
    """``$FRAMESTREAM_TRITON_ENV``, else ``framestream_home()/triton-env/py<X.Y>-<digest>``."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return TritonEnv(Path(explicit).expanduser())
    key = _key()
    return TritonEnv(framestream_home() / "triton-env" / f"py{key['python']}-{key['requirements'][:12]}")
