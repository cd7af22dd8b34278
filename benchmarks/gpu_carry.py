"""The carry for a Hopper GPU machine: onnxruntime-gpu with only sm_90 kernels, under 62 MiB.

    python -m benchmarks.gpu_carry [--wheel WHEEL] [--out .gpu/ort] [--check-python PYTHON3.12]

onnxruntime-gpu's wheel (244 MiB) cannot travel to the GPU machine, which takes at most 64 MiB
a call. Its CUDA provider's fat binaries hold kernels for sm_75 ... sm_120; this keeps only
the sm_90 entries (benchmarks/gpu_fatbin.py, an in-place ELF edit), drops what the Python
package never loads (the C API library, the TensorRT provider, the transformers and
quantization tools), checks the result, and packs the package with its dist-info as
``OUT/onnxruntime-gpu.tar.xz`` beside ``OUT/onnxruntime-gpu.json`` (what was kept, the check,
the digest). It refuses a pack above 62 MiB (what travels beside the working tree).

The check (benchmarks/gpu_loadcheck.py), with a CPython 3.12 (the wheel's; numpy installed):
onnxruntime is imported from the pruned package, lists the CUDA provider, and loads the
pruned provider itself for a session, against stand-ins for the CUDA libraries this machine
lacks; every fat binary the provider registers must read back, those that had sm_90 code
must hold it and nothing else. It proves the file loads, binds and registers as the
original does; only the GPU machine proves the kernels run (benchmarks/gpu_visit.sh, step 1).

On the GPU machine (torch's CUDA 13 and cuDNN 9 libraries give what the provider loads):
``tar -xJf .gpu/ort/onnxruntime-gpu.tar.xz -C DIR`` and ``PYTHONPATH=DIR``.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path

from benchmarks.gpu_fatbin import FatbinError, PruneStats, prune_file

PACKAGE = "onnxruntime-gpu==1.31.1"
ARCH = 90
LIMIT_MIB = 62.0
NAME = "onnxruntime-gpu"
PROVIDER = Path("onnxruntime/capi/libonnxruntime_providers_cuda.so")
# Never loaded by `import onnxruntime` and a CUDA session: the C API library (the Python
# module holds the runtime itself), the TensorRT provider, optional tool packages.
UNUSED = ("onnxruntime/capi/libonnxruntime.so*", "onnxruntime/capi/libonnxruntime_providers_tensorrt.so",
          "onnxruntime/transformers", "onnxruntime/quantization")


class CarryError(RuntimeError):
    """The carry cannot be built; the message says why and what to do."""


def download(folder: Path) -> Path:
    """The cp312 manylinux x86_64 wheel from the package index."""
    platforms = [a for n in (17, 27, 28) for a in ("--platform", f"manylinux_2_{n}_x86_64")]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(folder), PACKAGE],
                   check=True)
    (wheel,) = folder.glob("onnxruntime_gpu-*.whl")
    return wheel


def unpack_pruned(wheel: Path, site: Path, arch: int = ARCH) -> PruneStats:
    """The wheel's files in ``site``, less :data:`UNUSED`, its CUDA provider pruned to ``arch``."""
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    for pattern in UNUSED:
        for path in glob.glob(str(site / pattern)):
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    provider = site / PROVIDER
    if not provider.is_file():
        raise CarryError(f"{wheel.name} has no {PROVIDER}")
    return prune_file(provider, provider, arch)


def pack(site: Path, dst: Path, limit_mib: float = LIMIT_MIB) -> int:
    """``site``'s top-level entries as tar.xz at ``dst``; refused (and removed) above the limit."""
    tmp = dst.with_name(dst.name + ".tmp")
    with lzma.open(tmp, "wb", preset=9 | lzma.PRESET_EXTREME) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        for entry in sorted(site.iterdir()):
            tar.add(entry, arcname=entry.name)
    size = tmp.stat().st_size
    if size > limit_mib * 2**20:
        tmp.unlink()
        raise CarryError(f"the pack is {size / 2**20:.1f} MiB, above {limit_mib:g} MiB: it would not travel")
    tmp.replace(dst)
    return size


def python312(explicit: str | None) -> str:
    """A CPython 3.12 for the check: the one given, ``python3.12`` on PATH, or pyenv's."""
    if explicit:
        return explicit
    found = shutil.which("python3.12") or next(iter(sorted(glob.glob(os.path.expanduser(
        "~/.pyenv/versions/3.12*/bin/python3.12")))), None)
    if found is None:
        raise CarryError("the check needs a CPython 3.12 with numpy (the wheel's Python): pass --check-python, "
                         "or --no-check to pack unchecked")
    return found


NEEDS = ("numpy", "packaging", "google.protobuf", "flatbuffers")  # what `import onnxruntime` imports


def check_python_ready(python: str) -> None:
    """The check's Python must import what onnxruntime imports, or its failure would read as the pruning's."""
    probe = subprocess.run([python, "-c", f"import sys, {', '.join(NEEDS)}; print(sys.version_info[:2])"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != "(3, 12)":
        said = (probe.stderr.strip().splitlines() or [f"Python {probe.stdout.strip()}"])[-1]
        raise CarryError(f"the check's Python {python} cannot import onnxruntime's needs ({said}): make one with "
                         "`python3.12 -m venv V && V/bin/pip install numpy packaging protobuf flatbuffers` "
                         "and pass --check-python V/bin/python, or --no-check")


def check(site: Path, python: str, stats: PruneStats, arch: int = ARCH) -> dict:
    """Load the pruned provider through onnxruntime against stand-ins; refuse what does not read back."""
    from benchmarks.gpu_loadcheck import LoadCheckError, check_onnxruntime

    try:
        report = check_onnxruntime(site, python, arch)
    except LoadCheckError as e:
        raise CarryError(f"the pruned provider failed its load check: {e}") from e
    load = report.load
    problems = []
    if not Path(report.module).resolve().is_relative_to(site.resolve()):
        problems.append(f"onnxruntime came from {report.module}, not the pruned package")
    if "CUDAExecutionProvider" not in report.available:
        problems.append(f"onnxruntime lists {list(report.available)}, no CUDAExecutionProvider")
    if load.registered != stats.containers or load.unreadable:
        problems.append(f"{load.registered} of {stats.containers} fat binaries registered, {load.unreadable} unreadable")
    if load.with_arch != stats.containers - stats.untouched or load.only_arch != load.with_arch:
        problems.append(f"{load.with_arch} registered with sm_{arch} code ({load.only_arch} with nothing else), "
                        f"expected {stats.containers - stats.untouched}")
    if problems:
        raise CarryError("the pruned provider failed its load check: " + "; ".join(problems))
    return {"summary": load.summary(arch), "module": report.module, "version": report.version,
            "available": list(report.available), "python": python}


def build(out: Path, wheel: Path | None, check_python: str | None, arch: int = ARCH,
          limit_mib: float = LIMIT_MIB) -> dict:
    """Download (unless given), prune, check (unless ``check_python`` is ``""``), pack; the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="framestream-carry-") as tmp:
        work = Path(tmp)
        if wheel is None:
            wheel = download(work / "wheel")
        site = work / "site"
        stats = unpack_pruned(wheel, site, arch)
        print(f"pruned: {stats.containers} fat binaries, {stats.entries_kept} entries kept "
              f"({stats.bytes_kept / 1e6:.1f} MB), {stats.entries_dropped} dropped ({stats.bytes_dropped / 1e6:.1f} MB), "
              f"{stats.untouched} without sm_{arch} code left as they were", flush=True)
        checked = None
        if check_python != "":
            python = python312(check_python)
            check_python_ready(python)
            checked = check(site, python, stats, arch)
        print(f"check: {checked['summary'] if checked else 'skipped (--no-check)'}", flush=True)
        archive = out / f"{NAME}.tar.xz"
        size = pack(site, archive, limit_mib)
    manifest = {"wheel": wheel.name, "arch": f"sm_{arch}", "prune": asdict(stats), "check": checked,
                "archive": archive.name, "bytes": size, "mib": round(size / 2**20, 2),
                "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}
    (out / f"{NAME}.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wheel", type=Path, default=None, help=f"a downloaded {PACKAGE} wheel (default: download it)")
    p.add_argument("--out", type=Path, default=Path(".gpu/ort"), help="where the pack goes (git-ignored)")
    p.add_argument("--check-python", default=None, help="CPython 3.12 with numpy for the load check")
    p.add_argument("--no-check", action="store_true", help="pack without the load check")
    p.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    args = p.parse_args()
    try:
        manifest = build(args.out, args.wheel, "" if args.no_check else args.check_python, ARCH, args.limit_mib)
    except (CarryError, FatbinError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"{args.out / manifest['archive']}: {manifest['mib']} MiB (limit {args.limit_mib:g})")


if __name__ == "__main__":
    main()
