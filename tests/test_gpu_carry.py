"""The carry's ELF edit on fat binaries built here: only sm_90 entries stay, every container stays
where the host code registers it, nothing outside the section changes, and a shared library
so edited still loads and registers every container through the real dynamic loader."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from benchmarks.gpu_carry import CarryError, pack, unpack_pruned
from benchmarks.gpu_fatbin import FatbinError, parse, prune_file, prune_section, section


def entry(arch: int, payload: bytes, kind: int = 2, header: int = 64) -> bytes:
    h = bytearray(header)
    struct.pack_into("<HHIQ", h, 0, kind, 0x101, header, len(payload))
    struct.pack_into("<I", h, 28, arch)
    return bytes(h) + payload


def container(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def pad8(b: bytes) -> bytes:
    return b + bytes(-len(b) % 8)


# Three containers: mixed architectures (SASS and PTX), sm_90 alone, sm_120 alone (left as it was).
MIXED = container(entry(75, b"\x75" * 40), entry(90, b"\x90" * 24), entry(90, b"P90" * 5, kind=1),
                  entry(120, b"\x12" * 56))
ONLY90 = container(entry(90, b"\x99" * 32))
ONLY120 = container(entry(120, b"\x21" * 16))
SECTION = pad8(MIXED) + pad8(ONLY90) + ONLY120


def elf_with(sections: dict[str, bytes]) -> bytes:
    """A minimal ELF64 little-endian file: header, the sections' bytes, .shstrtab, section headers."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in [*sections, ".shstrtab"])
    blob = bytearray(64)
    placed = []
    for name, data in [*sections.items(), (".shstrtab", names)]:
        blob += bytes(-len(blob) % 8)
        placed.append((names.index(name.encode() + b"\0"), len(blob), len(data), 3 if name == ".shstrtab" else 1))
        blob += data
    blob += bytes(-len(blob) % 8)
    shoff = len(blob)
    blob += bytes(64)  # the null section
    for name_at, offset, size, kind in placed:
        blob += struct.pack("<IIQQQQIIQQ", name_at, kind, 2, 0, offset, size, 0, 0, 8, 0)
    blob[:16] = b"\x7fELF\x02\x01\x01" + bytes(9)
    struct.pack_into("<HHIQQQIHHHHHH", blob, 16, 3, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(placed) + 1,
                     len(placed))
    return bytes(blob)


def test_pruning_keeps_only_sm90_entries_each_container_in_place_and_nothing_else_changes(tmp_path: Path) -> None:
    src = tmp_path / "lib.so"
    src.write_bytes(elf_with({".text": b"\xc3" * 100, ".nv_fatbin": SECTION, ".data": b"data" * 10}))
    dst = tmp_path / "pruned.so"
    stats = prune_file(src, dst)
    before, after = src.read_bytes(), dst.read_bytes()
    offset, size = section(before, ".nv_fatbin")
    assert len(after) == len(before) and section(after, ".nv_fatbin") == (offset, size)
    assert after[:offset] == before[:offset] and after[offset + size:] == before[offset + size:]
    old, new = parse(before[offset:offset + size]), parse(after[offset:offset + size])
    assert [c.start for c in new] == [c.start for c in old] == [0, len(pad8(MIXED)), len(pad8(MIXED)) + len(pad8(ONLY90))]
    assert [[(e.kind, e.arch) for e in c.entries] for c in new] == [[(2, 90), (1, 90)], [(2, 90)], [(2, 120)]]
    data = after[offset:offset + size]
    kept = [data[e.start:e.start + e.length] for e in new[0].entries]
    assert kept == [entry(90, b"\x90" * 24), entry(90, b"P90" * 5, kind=1)], "kept entries are byte-identical"
    assert struct.unpack_from("<Q", data, 8)[0] == sum(map(len, kept)), "the container's size says what it holds"
    assert data[new[0].end:len(MIXED)] == bytes(len(MIXED) - new[0].end), "freed bytes are zeros"
    assert data[new[1].start:new[1].end] == ONLY90 and data[new[2].start:new[2].end] == ONLY120
    assert (stats.containers, stats.untouched, stats.entries_kept, stats.entries_dropped) == (3, 1, 4, 2)
    assert dict(stats.by_arch)["elf sm_75"] == len(entry(75, b"\x75" * 40))
    again, _ = prune_section(data, 90)
    assert again == data, "pruning is idempotent"


@pytest.mark.parametrize("case", ["not_elf", "no_section", "bad_magic", "entry_past_end"])
def test_what_the_pruner_does_not_understand_is_refused_and_nothing_is_written(tmp_path: Path, case: str) -> None:
    broken = bytearray(SECTION)
    if case == "bad_magic":
        broken[len(pad8(MIXED))] ^= 0xFF
    if case == "entry_past_end":
        struct.pack_into("<Q", broken, 16 + 8, 10**6)
    blob = elf_with({".nv_fatbin" if case != "no_section" else ".rodata": bytes(broken)})
    src = tmp_path / "lib.so"
    src.write_bytes(b"MZ" + blob[2:] if case == "not_elf" else blob)
    with pytest.raises(FatbinError):
        prune_file(src, tmp_path / "out.so")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib.so"]


def _c_array(name: str, data: bytes, attrs: str) -> str:
    return f"{attrs} const unsigned char {name}[{len(data)}] = {{{','.join(str(b) for b in data)}}};"


@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("readelf")), reason="needs gcc and readelf")
def test_a_pruned_shared_library_loads_and_registers_every_container_with_sm90_code_alone(tmp_path: Path) -> None:
    from benchmarks.gpu_loadcheck import check_loads

    # the CUDA runtime it links against at build time (check_loads loads it against its own stand-in)
    (tmp_path / "cudart.c").write_text("void **__cudaRegisterFatBinary(void *p) { return 0; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "libcudart.so.13"), str(tmp_path / "cudart.c"),
                    "-Wl,-soname,libcudart.so.13"], check=True)
    starts = [c.start for c in parse(SECTION)]
    source = "\n".join([
        "struct wrapper { int magic; int version; const unsigned char *data; void *rest; };",
        "void **__cudaRegisterFatBinary(void *);",
        _c_array("fatbin", SECTION, '__attribute__((section(".nv_fatbin"), aligned(8), used)) static'),
        "static struct wrapper wrappers[] = {" + ",".join(f"{{0x466243b1, 1, fatbin + {s}, 0}}" for s in starts) + "};",
        "__attribute__((constructor)) static void registration(void) {",
        f"  for (int i = 0; i < {len(starts)}; i++) __cudaRegisterFatBinary(&wrappers[i]);",
        "}",
    ])
    (tmp_path / "kernels.c").write_text(source)
    lib = tmp_path / "libkernels.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(tmp_path / "kernels.c"), f"-L{tmp_path}",
                    "-l:libcudart.so.13"], check=True)
    original = check_loads(lib)
    pruned = tmp_path / "libkernels.pruned.so"
    prune_file(lib, pruned)
    after = check_loads(pruned)
    assert "libcudart.so.13" in after.stand_ins
    assert (original.registered, original.with_arch, original.only_arch, original.unreadable) == (3, 2, 1, 0)
    assert (after.registered, after.with_arch, after.only_arch, after.unreadable) == (3, 2, 2, 0)
    assert after.payload_bytes < original.payload_bytes


def test_the_wheel_is_unpacked_without_what_python_never_loads_and_its_provider_pruned(tmp_path: Path) -> None:
    wheel = tmp_path / "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl"
    provider = elf_with({".nv_fatbin": SECTION})
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("onnxruntime/__init__.py", "")
        z.writestr("onnxruntime/capi/libonnxruntime_providers_cuda.so", provider)
        z.writestr("onnxruntime/capi/libonnxruntime_providers_shared.so", b"x")
        z.writestr("onnxruntime/capi/libonnxruntime.so.1.31.1", b"x" * 100)
        z.writestr("onnxruntime/capi/libonnxruntime_providers_tensorrt.so", b"x")
        z.writestr("onnxruntime/transformers/__init__.py", "")
        z.writestr("onnxruntime_gpu-1.31.1.dist-info/METADATA", "Name: onnxruntime-gpu\n")
    site = tmp_path / "site"
    stats = unpack_pruned(wheel, site)
    files = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    assert files == ["onnxruntime/__init__.py", "onnxruntime/capi/libonnxruntime_providers_cuda.so",
                     "onnxruntime/capi/libonnxruntime_providers_shared.so", "onnxruntime_gpu-1.31.1.dist-info/METADATA"]
    assert stats.entries_dropped == 2
    assert (site / "onnxruntime/capi/libonnxruntime_providers_cuda.so").read_bytes() != provider


def test_a_pack_above_the_limit_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    import os

    site = tmp_path / "site"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg" / "noise.bin").write_bytes(os.urandom(200_000))
    with pytest.raises(CarryError, match="above 0.1 MiB"):
        pack(site, tmp_path / "out.tar.xz", limit_mib=0.1)
    assert not list(tmp_path.glob("out.tar.xz*"))
    assert pack(site, tmp_path / "out.tar.xz", limit_mib=1) > 200_000


def test_a_check_python_that_cannot_import_onnxruntime_s_needs_is_named_before_any_check(tmp_path: Path) -> None:
    import sys

    from benchmarks.gpu_carry import check_python_ready

    with pytest.raises(CarryError, match="cannot import onnxruntime's needs") as refused:
        check_python_ready(sys.executable if sys.version_info[:2] != (3, 12) else "/bin/false")
    assert "--check-python" in str(refused.value)
