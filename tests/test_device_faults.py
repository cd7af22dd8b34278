"""A GPU fault (CUDA out of memory, a driver or CUDA error) is not damage to the file being
decoded: it stops the run cleanly, as a lost server does, instead of failing file after file as
"damaged". On CPU: NVDEC's driver runs in the real decoding loop with import-free stand-ins for
PyNvVideoCodec's demuxer and decoder (the library cannot load here) raising the library's real
exception types and messages."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import av
import pytest

import client.jobs
from client.decode import Sampling
from client.decode.frames import Cut
from client.decode.nvdec_source import NvdecSource, _NvdecDriver
from client.errors import DecodeError
from client.letterbox import plan_letterbox
from client.pipeline import Job

from .test_bulk import bulk_main, entries
from .videos import write_video


def _library_error(module: str, name: str, base: type[BaseException], message: str) -> BaseException:
    """An exception of the class ``module.name`` (CuPy's, PyNvVideoCodec's) without importing it."""
    return type(name, (base,), {"__module__": module})(message)


# What the libraries raise, with the messages they use (NvDecoder's CUDA_DRVAPI_CALL and
# NVDEC_API_CALL, CuPy's runtime and memory pool, onnxruntime's CUDA provider).
DEVICE_FAULTS = [
    RuntimeError("CUDA driver API error CUDA_ERROR_OUT_OF_MEMORY"),
    RuntimeError("cuvidDecodePicture(m_hDecoder, pPicParams) returned error 700 at NvDecoder.cpp:512"),
    RuntimeError("cuvidMapVideoFrame(m_hDecoder, ...) returned error 999"),
    _library_error("cupy_backends.cuda.api.runtime", "CUDARuntimeError", RuntimeError,
                   "cudaErrorIllegalAddress: an illegal memory access was encountered"),
    _library_error("cupy.cuda.memory", "OutOfMemoryError", MemoryError,
                   "Out of memory allocating 6,291,456 bytes (allocated so far: 79,456,894,976 bytes)."),
    RuntimeError("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 2: out of memory ; GPU=0"),
    TypeError("'NoneType' object is not subscriptable"),  # a bug in the glue fails every file alike
]
DAMAGE = [
    _library_error("PyNvVideoCodec", "PyNvVCException", RuntimeError, "Error in bitstream: invalid slice header"),
    RuntimeError("cuvidParseVideoData(m_hParser, &packet) returned error 1 at NvDecoder.cpp:701"),
    ValueError("Invalid data found when processing input"),
]


@pytest.mark.parametrize("error", DEVICE_FAULTS + DAMAGE, ids=lambda e: f"{type(e).__name__}:{str(e)[:30]}")
def test_nvdec_tells_a_device_fault_from_damage_to_the_file(error: BaseException) -> None:
    from client.decode.nvdec_source import NvdecDamage, nvdec_failure
    from client.errors import DeviceError

    classified = nvdec_failure(error, 0)
    if any(error is e for e in DEVICE_FAULTS):
        assert isinstance(classified, DeviceError) and str(classified).startswith("GPU 0: NVDEC decoding failed")
        assert type(error).__name__ in str(classified)
    else:
        assert isinstance(classified, NvdecDamage)


class _Decoder:
    """PyNvVideoCodec's decoder as the driver calls it: ``Decode(packet)``, raising ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def Decode(self, packet):  # noqa: N802 - the library's name
        raise self.error


def _packets(path: Path) -> list[SimpleNamespace]:
    """The file's packets as PyNvVideoCodec's demuxer gives them (``bsl`` bytes, ``pts``)."""
    with av.open(str(path)) as c:
        return [SimpleNamespace(bsl=p.size, pts=p.pts) for p in c.demux(c.streams.video[0])]


class _NvdecWithFailingDecoder(NvdecSource):
    """The NVDEC source (container facts, clock, the shared loop, the driver) with stand-ins
    for PyNvVideoCodec's demuxer and decoder, whose first ``Decode`` raises ``error``."""

    def __init__(self, path: Path, error: BaseException) -> None:
        super().__init__(path, sampling=Sampling(), letterbox=None)
        self.error = error

    def frames(self, plan_for):
        driver = _NvdecDriver(_packets(self.path), _Decoder(self.error), self, None)
        yield from Cut(self.info, self._clock, self.sampling, self.frame_range, self._layout).frames(driver, plan_for)


def _decode(path: Path, error: BaseException) -> BaseException:
    with pytest.raises(Exception) as raised:
        list(_NvdecWithFailingDecoder(path, error).frames(lambda hw: plan_letterbox(hw, (320, 320), minimal=True)))
    return raised.value


def test_nvdec_out_of_memory_is_a_device_fault_and_a_bitstream_error_is_damage(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", frames=12)
    oom = _decode(path, RuntimeError("CUDA driver API error CUDA_ERROR_OUT_OF_MEMORY"))
    assert not isinstance(oom, DecodeError), f"called damage to the file: {oom}"
    assert type(oom).__name__ == "DeviceError" and "out of memory" in str(oom)
    damage = _decode(path, _library_error("PyNvVideoCodec", "PyNvVCException", RuntimeError, "Error in bitstream"))
    assert isinstance(damage, DecodeError) and str(damage) == "NVDEC decoding failed after 0 frames: Error in bitstream"


def test_a_gpu_out_of_memory_stops_the_run_cleanly_and_a_rerun_resumes(
        tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, out = tmp_path / "v", tmp_path / "out"
    src.mkdir()
    write_video(src / "gpu.mp4", frames=48)  # the longest: the one decoder takes it first
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        write_video(src / name, frames=6)
    make_job = client.jobs.make_job

    def on_a_failing_gpu(p, segment, config, maps, letterbox) -> Job:
        job = make_job(p, segment, config, maps, letterbox)
        if p.candidate.rel != "gpu.mp4":
            return job
        oom = RuntimeError("CUDA driver API error CUDA_ERROR_OUT_OF_MEMORY")
        return Job(job.file_id, lambda: _NvdecWithFailingDecoder(p.candidate.path, oom), job.segment, job.seq_of)

    monkeypatch.setattr(client.jobs, "make_job", on_a_failing_gpu)
    rc, summary = bulk_main(src, out, model_path, "--workers", "1", "--no-split")
    assert rc == 2
    files = entries(summary)
    assert set(files) == {"gpu.mp4", "a.mp4", "b.mp4", "c.mp4"}
    assert summary["stopped"] is not None and summary["stopped"].startswith("GPU 0: NVDEC decoding failed, out of memory")
    assert files["gpu.mp4"]["status"] == "error" and files["gpu.mp4"]["error"] == summary["stopped"]
    for rel in ("a.mp4", "b.mp4", "c.mp4"):  # done before the stop, or stopped: never called damaged
        f = files[rel]
        assert f["status"] == "ok" or f["error"].startswith(("not started: GPU 0", "not finished: GPU 0"))

    monkeypatch.undo()
    rc, again = bulk_main(src, out, model_path, "--workers", "1", "--no-split")
    assert rc == 0
    assert {p for p, f in entries(again).items() if f["resumed"]} == {p for p, f in files.items() if f["status"] == "ok"}
