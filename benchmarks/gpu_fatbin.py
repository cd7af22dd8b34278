"""Keep one GPU architecture's code in a CUDA library's fat binaries: an in-place ELF edit.

onnxruntime-gpu's CUDA provider holds its kernels for sm_75 ... sm_120 (about 219 MB); a Hopper
machine runs only the sm_90 entries (about 77 MB). This rewrites the ``.nv_fatbin`` section
so that each fat-binary container keeps only the entries of one architecture, and nothing
else in the file changes:

- ELF64 little-endian: the section header table (``e_shoff``, ``e_shentsize``, ``e_shnum``,
  ``e_shstrndx``) names the section; its ``sh_offset``/``sh_size`` give its bytes.
- The section is a run of containers, each a 16-byte header (magic ``0xBA55ED50``, u16
  version, u16 header size, u64 payload size) followed by entries; each entry starts with
  u16 kind (1 PTX, 2 ELF), u16, u32 header size, u64 payload size, and holds its
  architecture as a u32 at byte 28 of its header. Entry after entry fills the payload.
- The host code registers each container by its address (``.nvFatBinSegment`` wrappers,
  relocated by the loader), and the CUDA runtime reads a container's length from its own
  header. So every container stays where it starts; the kept entries move to the front of
  its payload, its payload size shrinks, and the bytes freed become zeros (which ``xz``
  packs to nothing). Program headers, symbols, relocations and every other section are
  byte-for-byte the original's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

CONTAINER_MAGIC = 0xBA55ED50
CONTAINER = struct.Struct("<IHHQ")  # magic, version, header size, payload size
ENTRY = struct.Struct("<HHIQ")  # kind, (unused here), header size, payload size
ENTRY_ARCH_AT = 28
ENTRY_HEADER_MIN = ENTRY_ARCH_AT + 4
KIND_NAMES = {1: "ptx", 2: "elf"}


class FatbinError(ValueError):
    """The file is not what the pruner understands; nothing is written."""


@dataclass(frozen=True)
class Entry:
    kind: int
    arch: int
    start: int  # offset in the section
    length: int  # header + payload


@dataclass(frozen=True)
class Container:
    start: int  # offset in the section
    header_size: int
    entries: tuple[Entry, ...]

    @property
    def end(self) -> int:
        return self.start + self.header_size + sum(e.length for e in self.entries)


@dataclass(frozen=True)
class PruneStats:
    containers: int
    untouched: int  # containers with no entry for the architecture, left as they were
    entries_kept: int
    entries_dropped: int
    bytes_kept: int
    bytes_dropped: int
    by_arch: tuple[tuple[str, int], ...]  # ("elf sm_90", bytes) before pruning


def section(elf: bytes, name: str) -> tuple[int, int]:
    """(file offset, size) of the section called ``name`` in an ELF64 little-endian file."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise FatbinError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    if shoff == 0 or shnum == 0 or shentsize < 64 or shoff + shnum * shentsize > len(elf):
        raise FatbinError("no section header table")

    def header(i: int) -> tuple[int, int, int, int]:
        name_at, kind = struct.unpack_from("<II", elf, shoff + i * shentsize)
        offset, size = struct.unpack_from("<QQ", elf, shoff + i * shentsize + 24)
        return name_at, kind, offset, size

    _, _, names_at, names_size = header(shstrndx)
    wanted = name.encode()
    for i in range(shnum):
        name_at, kind, offset, size = header(i)
        end = elf.find(b"\0", names_at + name_at, names_at + names_size)
        if elf[names_at + name_at:end] == wanted:
            if kind == 8:  # SHT_NOBITS: no bytes in the file
                raise FatbinError(f"{name} has no bytes in the file")
            if offset + size > len(elf):
                raise FatbinError(f"{name} runs past the end of the file")
            return offset, size
    raise FatbinError(f"no {name} section")


def parse(data: bytes) -> list[Container]:
    """The containers of a ``.nv_fatbin`` section; zero padding between them is allowed."""
    containers = []
    at = 0
    while at < len(data):
        if data[at] == 0:  # alignment padding
            at += 1
            continue
        if at + CONTAINER.size > len(data):
            raise FatbinError(f"truncated container header at {at:#x}")
        magic, _version, header_size, payload = CONTAINER.unpack_from(data, at)
        if magic != CONTAINER_MAGIC or header_size < CONTAINER.size:
            raise FatbinError(f"no fat-binary container at {at:#x} (magic {magic:#x})")
        end = at + header_size + payload
        if end > len(data):
            raise FatbinError(f"container at {at:#x} runs past the section")
        entries = []
        e = at + header_size
        while e < end:
            kind, _, entry_header, entry_payload = ENTRY.unpack_from(data, e)
            if entry_header < ENTRY_HEADER_MIN or e + entry_header + entry_payload > end:
                raise FatbinError(f"bad entry at {e:#x} in the container at {at:#x}")
            arch, = struct.unpack_from("<I", data, e + ENTRY_ARCH_AT)
            entries.append(Entry(kind, arch, e, entry_header + entry_payload))
            e += entry_header + entry_payload
        containers.append(Container(at, header_size, tuple(entries)))
        at = end
    return containers


def prune_section(data: bytes, arch: int) -> tuple[bytes, PruneStats]:
    """The section with only ``arch``'s entries in each container, every container where it was.

    A container with no entry for ``arch`` (onnxruntime 1.31.1 has 9 holding sm_120 alone,
    0.24 MB) is left as it was: its kernels cannot run on that GPU either way, and the CUDA
    runtime is handed the container it was always handed, never an empty one."""
    out = bytearray(data)
    kept = dropped = bytes_kept = bytes_dropped = untouched = 0
    by_arch: dict[str, int] = {}
    containers = parse(data)
    for c in containers:
        for e in c.entries:
            label = f"{KIND_NAMES.get(e.kind, e.kind)} sm_{e.arch}"
            by_arch[label] = by_arch.get(label, 0) + e.length
        keep = [e for e in c.entries if e.arch == arch]
        if not keep:
            untouched += 1
            kept += len(c.entries)
            bytes_kept += c.end - c.start - c.header_size
            continue
        payload = b"".join(data[e.start:e.start + e.length] for e in keep)
        body = c.start + c.header_size
        out[body:c.end] = payload + bytes(c.end - body - len(payload))
        struct.pack_into("<Q", out, c.start + 8, len(payload))
        kept += len(keep)
        dropped += len(c.entries) - len(keep)
        bytes_kept += len(payload)
        bytes_dropped += c.end - body - len(payload)
    stats = PruneStats(len(containers), untouched, kept, dropped, bytes_kept, bytes_dropped,
                       tuple(sorted(by_arch.items())))
    return bytes(out), stats


def prune_file(src: Path, dst: Path, arch: int = 90, name: str = ".nv_fatbin") -> PruneStats:
    """``dst``: ``src`` with only ``arch``'s fat-binary entries, checked before it is written."""
    elf = src.read_bytes()
    offset, size = section(elf, name)
    pruned, stats = prune_section(elf[offset:offset + size], arch)
    result = elf[:offset] + pruned + elf[offset + size:]
    again = parse(pruned)  # the result reads back: same containers, at the same places, only arch's entries
    if [c.start for c in again] != [c.start for c in parse(elf[offset:offset + size])]:
        raise FatbinError("pruned containers moved")
    if any(e.arch != arch for c in again for e in c.entries if arch in {x.arch for x in c.entries}):
        raise FatbinError("an entry of another architecture survived beside one of the architecture")
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(result)
    tmp.chmod(src.stat().st_mode & 0o777)
    tmp.replace(dst)
    return stats
