"""Resume: remember which videos have complete outputs for this model and these options."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

STATE_DIR = ".framestream"


def fingerprint(model_path: Path, options: dict[str, object]) -> str:
    """Identity of a run's results: the model's bytes and the options that change outputs."""
    h = hashlib.sha256()
    with open(model_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(json.dumps(options, sort_keys=True).encode())
    return h.hexdigest()[:32]


class ResumeLedger:
    """One small JSON record per completed video under ``OUT/.framestream/done/``."""

    def __init__(self, out: Path, run_fingerprint: str) -> None:
        self.root = out / STATE_DIR / "done"
        self.fingerprint = run_fingerprint

    def _record_path(self, rel: str) -> Path:
        return self.root / f"{rel}.json"

    def completed_frames(self, video: Path, rel: str, outputs: list[Path]) -> int | None:
        """Frames of a complete earlier output for the same source, model and options, else None."""
        try:
            record = json.loads(self._record_path(rel).read_text())
            st = video.stat()
        except (OSError, ValueError):
            return None
        same = (
            record.get("fingerprint") == self.fingerprint
            and record.get("source") == [st.st_size, st.st_mtime_ns]
            and all(p.is_file() and p.stat().st_size == size for p, size in zip(outputs, record.get("sizes", [])))
            and len(record.get("sizes", [])) == len(outputs)
        )
        return int(record["frames"]) if same else None

    def record(self, video: Path, rel: str, frames: int, outputs: list[Path]) -> None:
        st = video.stat()
        path = self._record_path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({
            "fingerprint": self.fingerprint,
            "source": [st.st_size, st.st_mtime_ns],
            "frames": frames,
            "sizes": [p.stat().st_size for p in outputs],
        }))
        os.replace(tmp, path)

    def forget(self, rel: str) -> None:
        self._record_path(rel).unlink(missing_ok=True)
