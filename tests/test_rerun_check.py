"""A rerun's check of complete outputs (issue #25 finding 10): it compares each output's identity
(size, mtime, ctime, inode, recorded once the output is in place) and reads its bytes only when
that differs, when the record predates identities, or with ``--verify``. An output edited in
place is still redone: real runs of ``python -m client.bulk`` on real videos, real edits.

The benchmark benchmarks/rerun_check.py shows the bytes and time this saves on 10,000 outputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .test_bulk import bulk_main, entries
from .test_rerun_integrity import bulk_cli, record_path
from .videos import write_video

VIDEOS = ("a.mp4", "b.mp4")


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("check") / "videos"
    src.mkdir()
    for name in VIDEOS:
        write_video(src / name, frames=6, size_wh=(128, 96))
    return src


@pytest.fixture
def done(src: Path, tmp_path: Path, model_path: Path) -> Path:
    """An OUT a first run completed, its own (a copy would give every output another inode and ctime)."""
    out = tmp_path / "out"
    rc, summary = bulk_main(src, out, model_path, "--no-split")
    assert rc == 0 and all(f["status"] == "ok" for f in summary["files"])
    return out


def record(out: Path, rel: str) -> dict:
    return json.loads(record_path(out, rel).read_text())


def resumed(out: Path) -> dict[str, bool]:
    return {rel: f["resumed"] for rel, f in entries(json.loads((out / "summary.json").read_text())).items()}


def edit_in_place(path: Path, *, restore_mtime: bool) -> None:
    """One byte changed where it is, the size kept; with ``restore_mtime``, atime and mtime set
    back as they were (what a careful tool, or ``touch -r``, does)."""
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(2)
        byte = f.read(1)
        f.seek(2)
        f.write(bytes([byte[0] ^ 0x20]))
    if restore_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_each_outputs_identity_in_place_is_recorded(done: Path) -> None:
    for rel in VIDEOS:
        doc = record(done, rel)
        st = os.stat(done / f"{rel}.jsonl")
        assert doc["version"] == 3
        assert doc["outputs"][0]["identity"] == {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                                 "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def test_an_untouched_output_is_trusted_without_hashing_and_verify_hashes_it(
        src: Path, done: Path, model_path: Path) -> None:
    """The record's SHA-256 is made wrong while the output stays untouched: a rerun that read the
    output would redo it; this one trusts the identity. ``--verify`` reads every byte and redoes it."""
    path = record_path(done, "a.mp4")
    doc = json.loads(path.read_text())
    doc["outputs"][0]["sha256"] = "0" * 64
    path.write_text(json.dumps(doc))
    rerun = bulk_cli(src, done, model_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert resumed(done) == {"a.mp4": True, "b.mp4": True} and "redoing" not in rerun.stderr

    verified = bulk_cli(src, done, model_path, "--verify")
    assert verified.returncode == 0, verified.stderr[-2000:]
    assert resumed(done) == {"a.mp4": False, "b.mp4": True}
    assert "redoing 1 video: its output is damaged" in verified.stderr


@pytest.mark.parametrize("restore_mtime", [False, True], ids=["mtime-moved", "mtime-restored"])
def test_an_output_edited_in_place_keeping_its_size_is_redone(
        src: Path, done: Path, model_path: Path, restore_mtime: bool) -> None:
    output = done / "a.mp4.jsonl"
    recorded = record(done, "a.mp4")["outputs"][0]["identity"]
    edit_in_place(output, restore_mtime=restore_mtime)
    st = os.stat(output)
    assert (st.st_size, st.st_ino) == (recorded["size"], recorded["inode"])
    assert (st.st_mtime_ns == recorded["mtime_ns"]) is restore_mtime
    assert st.st_ctime_ns != recorded["ctime_ns"], "the edit moved no ctime: nothing but the bytes could tell"
    rerun = bulk_cli(src, done, model_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert resumed(done) == {"a.mp4": False, "b.mp4": True}
    assert "redoing 1 video: its output is damaged" in rerun.stderr
    assert record(done, "a.mp4")["outputs"][0]["identity"]["ctime_ns"] == os.stat(output).st_ctime_ns


def test_a_version_2_record_without_identities_is_still_trusted_by_hashing(
        src: Path, done: Path, model_path: Path) -> None:
    """A record an earlier framestream wrote: its outputs are hashed, so an intact one is resumed
    and one edited in place (mtime restored) is redone."""
    for rel in VIDEOS:
        path = record_path(done, rel)
        doc = json.loads(path.read_text())
        doc["version"] = 2
        for o in doc["outputs"]:
            del o["identity"]
        path.write_text(json.dumps(doc))
    edit_in_place(done / "b.mp4.jsonl", restore_mtime=True)
    rerun = bulk_cli(src, done, model_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert resumed(done) == {"a.mp4": True, "b.mp4": False}
    assert "redoing 1 video: its output is damaged" in rerun.stderr
