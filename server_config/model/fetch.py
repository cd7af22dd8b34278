"""``fetch``: download a trained detector, checked against a pinned SHA-256, and wrap it.

The registry names each model's public source, the checksum its host publishes for that file
(a Hugging Face file pinned to one commit: the Git LFS object id is the file's SHA-256), its
size and its licence, which is stated before anything is downloaded. ``--url`` fetches the
same file from a mirror (the pinned checksum still decides) or, with ``--sha256``, a user's
own export. The download goes to a temporary file beside the output, is capped in size and
hashed as it arrives; a wrong checksum, a short or oversized download or a network failure is
one line, and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import onnx

from client.contract import NMS, NmsSettings
from client.errors import DownloadError, ModelError, UsageError

log = logging.getLogger("server_config.model")

__all__ = ["Entry", "REGISTRY", "MAX_BYTES", "resolve", "download", "fetch_model"]

MAX_BYTES = 1 << 30  # a --url download without a registry size: larger than any YOLO detector export
_CHUNK = 1 << 20
_TIMEOUT_S = 60  # per read: a stalled server fails the fetch instead of hanging it
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Entry:
    """A trained detector's public source, pinned: the URL names one commit, ``sha256`` and
    ``size`` are what the host publishes for that file."""

    name: str
    url: str
    sha256: str
    size: int
    licence: str
    about: str


REGISTRY: dict[str, Entry] = {e.name: e for e in (
    Entry(
        name="yolov8n",
        # Hugging Face repository webml/yolov8n, file onnx/yolov8n.onnx at commit 85bc8d7: its Git
        # LFS pointer (shown on the commit's page) is "oid sha256:190ba5f1...4b4d, size 12823574".
        url="https://huggingface.co/webml/yolov8n/resolve/85bc8d7ab30d4065a41909d756c42819b67b4388/onnx/yolov8n.onnx",
        sha256="190ba5f1e61411a001683e349d6b2cdb0804c0dc67a5e34cd8ff6fd00ee54b4d",
        size=12823574,
        licence="AGPL-3.0 (Ultralytics' YOLOv8n weights, https://github.com/ultralytics/ultralytics/blob/main/LICENSE): "
                "offering a service built on it to others brings the AGPL's obligations; Ultralytics sells "
                "other licences",
        about="Ultralytics YOLOv8n trained on COCO (80 classes), an ONNX export",
    ),
)}


@dataclass(frozen=True)
class Source:
    """What one fetch downloads: where from, the checksum that decides, the size limit."""

    label: str  # the registry name, or the URL's file name
    url: str
    sha256: str
    max_bytes: int
    exact_size: int | None  # the registry's size, when its checksum is the one used
    licence: str


def resolve(name: str | None, url: str | None = None, sha256: str | None = None) -> Source:
    """The download ``fetch NAME [--url URL] [--sha256 HEX]`` asks for; UsageError when it
    does not name one (an unknown name, a URL without a checksum, a malformed checksum)."""
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not _HEX64.fullmatch(sha256):
            raise UsageError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    if url is not None and urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UsageError(f"--url must be an http:// or https:// URL, got {url!r}")
    if name is None:
        if url is None:
            raise UsageError(f"name a model to fetch ({', '.join(REGISTRY)}), or give --url URL --sha256 HEX")
        if sha256 is None:
            raise UsageError("--url without a NAME needs --sha256 HEX (the file's published SHA-256)")
        label = Path(urllib.parse.urlsplit(url).path).name or url
        return Source(label, url, sha256, MAX_BYTES, None, "not known to framestream: your own export's is its weights' licence")
    entry = REGISTRY.get(name)
    if entry is None:
        raise UsageError(f"no model {name!r} to fetch; known: {', '.join(REGISTRY)} "
                         "(or give --url URL --sha256 HEX for your own export)")
    pinned = sha256 is None or sha256 == entry.sha256
    return Source(entry.name, url or entry.url, sha256 or entry.sha256,
                  entry.size if pinned else MAX_BYTES, entry.size if pinned else None, entry.licence)


class _Progress:
    """One line, redrawn in place on a terminal; on a log (not a terminal), a line per quarter."""

    def __init__(self, label: str, total: int | None, stream: TextIO) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.live = stream.isatty()
        self._shown = -1  # the last quarter shown (not a terminal)
        self._said = ""
        self._last = 0.0

    def update(self, done: int, final: bool = False) -> None:
        amount = _size(done) + (f" of {_size(self.total)}" if self.total else "")
        pct = int(100 * done / self.total) if self.total else None
        text = f"downloading {self.label}: {amount}" + (f" ({pct}%)" if pct is not None else "")
        if self.live:
            now = time.monotonic()
            if final or now - self._last >= 0.2:
                self._last = now
                print("\r" + text, end="\n" if final else "", file=self.stream, flush=True)
            return
        quarter = (pct // 25) if pct is not None else -1
        if quarter > self._shown or (final and self._said != text):
            self._shown, self._said = quarter, text
            print(text, file=self.stream, flush=True)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def download(source: Source, dest_dir: Path, *, stream: TextIO = sys.stderr) -> Path:
    """Download ``source`` into a temporary file in ``dest_dir`` (the output's folder, so the
    wrapped model's rename stays on one file system), checked; the caller removes it. Any
    failure removes it first and raises a one-line UsageError (where it cannot write) or DownloadError."""
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".fetch.", suffix=".onnx.part", dir=dest_dir)
    except OSError as e:
        raise UsageError(f"cannot write in {dest_dir}: {e.strerror}; pass --out elsewhere") from e
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            digest, size = _copy(source, f, stream)
        if source.exact_size is not None and size != source.exact_size:
            raise DownloadError(f"{source.url}: got {size} bytes, the published file has {source.exact_size}; "
                             "nothing was written")
        if digest != source.sha256:
            raise DownloadError(f"{source.url}: SHA-256 {digest} is not the expected {source.sha256}; "
                             "the file is not the one published (nothing was written)")
        return tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy(source: Source, f, stream: TextIO) -> tuple[str, int]:
    request = urllib.request.Request(source.url, headers={"User-Agent": "framestream-model-fetch"})
    h, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            declared = response.headers.get("Content-Length")
            total = int(declared) if declared and declared.isdigit() else source.exact_size
            if total is not None and total > source.max_bytes:
                raise DownloadError(f"{source.url}: {total} bytes, more than the {source.max_bytes} expected; "
                                 "nothing was written")
            if declared and source.exact_size is not None and total != source.exact_size:
                raise DownloadError(f"{source.url}: {total} bytes, the published file has {source.exact_size}; "
                                 "nothing was written")
            progress = _Progress(source.label, total, stream)
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > source.max_bytes:
                    raise DownloadError(f"{source.url}: more than the {source.max_bytes} bytes expected; "
                                     "nothing was written")
                h.update(chunk)
                f.write(chunk)
                progress.update(size)
            progress.update(size, final=True)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"cannot download {source.url}: HTTP {e.code} {e.reason}; "
                         "check the URL, or fetch from a mirror with --url") from e
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"cannot download {source.url}: {reason}; check the network or proxy "
                         "(HTTPS_PROXY), or fetch from a mirror with --url") from e
    except OSError as e:
        raise DownloadError(f"cannot download {source.url}: {e.strerror or e}") from e
    return h.hexdigest(), size


def fetch_model(source: Source, dest_dir: Path, *, nms: NmsSettings = NMS,
                stream: TextIO = sys.stderr) -> onnx.ModelProto:
    """Download ``source`` (checked) and wrap it in the contract; the download is removed."""
    from .files import load_onnx
    from .wrap import wrap_model

    log.info("fetching %s from %s (SHA-256 %s)", source.label, source.url, source.sha256)
    log.info("licence: %s", source.licence)
    tmp = download(source, dest_dir, stream=stream)
    try:
        try:
            export = load_onnx(tmp)
        except ModelError as e:  # its message names the temporary file: name the download instead
            raise ModelError(f"{source.url}: not a valid ONNX model; nothing was written") from e
        return wrap_model(export, source=f"fetched {source.label} (sha256 {source.sha256[:12]})", nms=nms)
    finally:
        tmp.unlink(missing_ok=True)
