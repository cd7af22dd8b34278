"""Load a CUDA library on a machine without CUDA, and check the fat binaries it registers.

The real dynamic loader maps the library, binds every symbol (the provider is linked with
BIND_NOW) and runs its constructors, which hand each fat binary to the CUDA runtime's
``__cudaRegisterFatBinary`` at its relocated address. Here the CUDA libraries it needs are
stand-ins built with gcc: one shared object per missing ``DT_NEEDED`` library, with its
soname, its symbol version and an empty function or object for each symbol the library
takes from it, except ``__cudaRegisterFatBinary``, which parses the container it is handed
and counts the containers, those holding the wanted architecture and those holding nothing
else. What this proves: the file loads, relocates and registers every container, and each
registered container reads back with the wanted code in it. What it cannot prove: that the
kernels run (only a GPU can).

    python -m benchmarks.gpu_loadcheck LIBRARY [--preload LIB] [--arch 90]

Needs gcc and readelf (binutils).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.gpu_fatbin import CONTAINER_MAGIC, ENTRY_ARCH_AT

FATBIN_WRAPPER_MAGIC = 0x466243B1  # the host-side struct that points at a container
REGISTER = "__cudaRegisterFatBinary"

_REGISTER_C = f"""
#include <stdint.h>
#include <string.h>
struct wrapper {{ int32_t magic; int32_t version; const unsigned char *data; void *rest; }};
static unsigned long counts[5]; /* registered, with the arch, only the arch, unreadable, bytes */
static unsigned target_arch;
static void *handle;
void **{REGISTER}(void *p) {{
  const struct wrapper *w = p;
  counts[0]++;
  if (!w || w->magic != {FATBIN_WRAPPER_MAGIC:#x} || !w->data) {{ counts[3]++; return &handle; }}
  const unsigned char *d = w->data;
  uint32_t magic; uint16_t hs; uint64_t size;
  memcpy(&magic, d, 4); memcpy(&hs, d + 6, 2); memcpy(&size, d + 8, 8);
  if (magic != {CONTAINER_MAGIC:#x}u) {{ counts[3]++; return &handle; }}
  const unsigned char *e = d + hs, *end = d + hs + size;
  int with = 0, other = 0;
  while (e + {ENTRY_ARCH_AT + 4} <= end) {{
    uint32_t ehs, arch; uint64_t esz;
    memcpy(&ehs, e + 4, 4); memcpy(&esz, e + 8, 8); memcpy(&arch, e + {ENTRY_ARCH_AT}, 4);
    if (arch == target_arch) with = 1; else other = 1;
    e += ehs + esz;
  }}
  if (e != end) {{ counts[3]++; return &handle; }}
  counts[1] += with; counts[2] += with && !other; counts[4] += size;
  return &handle;
}}
void fatbin_check_set_arch(unsigned arch) {{ target_arch = arch; }}
void fatbin_check_counts(unsigned long out[5]) {{ memcpy(out, counts, sizeof counts); }}
"""


# Every stand-in function returns 0 (cudaSuccess, CUBLAS_STATUS_SUCCESS); with
# FRAMESTREAM_LOADCHECK_TRACE set it names itself on stderr when called.
_TRACE = ("static void trace(const char *s, int n) { if (getenv(\"FRAMESTREAM_LOADCHECK_TRACE\")) "
          "{ ssize_t r = write(2, s, n); (void)r; } }")


class LoadCheckError(RuntimeError):
    """The check could not be made (no gcc, no readelf) or the library did not load."""


@dataclass(frozen=True)
class LoadReport:
    registered: int
    with_arch: int
    only_arch: int
    unreadable: int
    payload_bytes: int
    stand_ins: tuple[str, ...]  # the libraries replaced by stand-ins

    def summary(self, arch: int) -> str:
        return (f"loaded with stand-ins for {', '.join(self.stand_ins) or 'nothing'}; {self.registered} fat binaries "
                f"registered, {self.with_arch} with sm_{arch} code, {self.only_arch} with nothing else, "
                f"{self.unreadable} unreadable, {self.payload_bytes / 1e6:.1f} MB of entries")


def _readelf(*args: str) -> str:
    if shutil.which("readelf") is None:
        raise LoadCheckError("readelf (binutils) is needed for the load check")
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True, check=True).stdout


def needed(library: Path) -> list[str]:
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", _readelf("-d", str(library)))


def undefined_symbols(library: Path) -> list[tuple[str, str, str, str]]:
    """(name, version or '', type, binding) of each undefined dynamic symbol."""
    out = []
    for line in _readelf("--dyn-syms", str(library)).splitlines():
        f = line.split()
        if len(f) >= 8 and f[6] == "UND" and f[7]:
            name, _, version = f[7].partition("@")
            out.append((name, version.lstrip("@"), f[3], f[4]))
    return out


def defined_symbols(library: Path) -> set[str]:
    return {f[7].split("@")[0] for f in (l.split() for l in _readelf("--dyn-syms", str(library)).splitlines())
            if len(f) >= 8 and f[6] not in ("UND", "Ndx")}


def _found_by_loader(soname: str) -> bool:
    return soname in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout


def build_stand_ins(library: Path, folder: Path, preload: tuple[Path, ...] = ()) -> list[str]:
    """One stand-in per needed library the loader cannot find, and always one for the CUDA
    runtime, whose ``__cudaRegisterFatBinary`` counts."""
    if shutil.which("gcc") is None:
        raise LoadCheckError("gcc is needed for the load check")
    # the CUDA runtime is always a stand-in (it counts); the others where this machine lacks them
    missing = [n for n in needed(library) if n.startswith("libcudart") or not _found_by_loader(n)]
    given = set().union(*(defined_symbols(p) for p in preload)) if preload else set()
    symbols: dict[str, list[tuple[str, str]]] = {n: [] for n in missing}
    unversioned_home = next((n for n in missing if "cudart" not in n and "cublas" not in n), None)
    for name, version, kind, binding in undefined_symbols(library):
        home = version if version in symbols else None
        if home is None and not version and binding == "GLOBAL" and name not in given:
            home = unversioned_home
        if home is not None and name != REGISTER:
            symbols[home].append((name, kind))
    cudart = next((n for n in missing if n.startswith("libcudart")), None)
    for soname, syms in symbols.items():
        source = ["#include <unistd.h>", "#include <stdlib.h>", _TRACE]
        source += [f"char {n}[4096];" if kind == "OBJECT" else
                   f'long {n}(void) {{ trace("{n}\\n", {len(n) + 1}); return 0; }}' for n, kind in syms]
        if soname == cudart:
            source.append(_REGISTER_C)
        c = folder / f"{soname}.c"
        c.write_text("\n".join(source) + "\n")
        versioned = any(v == soname for _, v, _, _ in undefined_symbols(library))
        args = ["gcc", "-shared", "-fPIC", "-w", "-o", str(folder / soname), str(c), f"-Wl,-soname,{soname}"]
        if versioned:
            script = folder / f"{soname}.map"
            script.write_text(f"{soname} {{ global: *; }};\n")
            args.append(f"-Wl,--version-script={script}")
        subprocess.run(args, check=True, capture_output=True)
    return missing


_LOADER = """
import ctypes, json, sys
arch, library, stand_in, *preload = sys.argv[1:]
for p in preload:
    ctypes.CDLL(p, mode=ctypes.RTLD_GLOBAL)
counter = ctypes.CDLL(stand_in, mode=ctypes.RTLD_GLOBAL)
counter.fatbin_check_set_arch(int(arch))
ctypes.CDLL(library)
out = (ctypes.c_ulong * 5)()
counter.fatbin_check_counts(out)
print(json.dumps({"counts": list(out)}))
"""

# onnxruntime's own provider loading: the session asks for the CUDA provider, so onnxruntime
# dlopens it through its provider bridge (a plain dlopen of the provider crashes in its
# constructors, which call into the onnxruntime that loads it).
_ORT_LOADER = """
import ctypes, json, sys
arch, stand_in, model = sys.argv[1:]
counter = ctypes.CDLL(stand_in, mode=ctypes.RTLD_GLOBAL)
counter.fatbin_check_set_arch(int(arch))
import onnxruntime as ort
said = {"file": ort.__file__, "version": ort.__version__, "available": ort.get_available_providers()}
try:
    ort.InferenceSession(model, providers=["CUDAExecutionProvider"])
except Exception as e:
    said["session_error"] = f"{type(e).__name__}: {e}"[:300]
out = (ctypes.c_ulong * 5)()
counter.fatbin_check_counts(out)
said["counts"] = list(out)
print(json.dumps(said))
"""


def _run(folder: Path, args: list[str], what: str) -> dict:
    env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join([str(folder), os.environ.get("LD_LIBRARY_PATH", "")]))
    env.pop("FRAMESTREAM_LOADCHECK_TRACE", None)
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        said = [l for l in done.stderr.splitlines() if l.strip()] or [f"exit code {done.returncode}"]
        raise LoadCheckError(f"{what} did not load: {said[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cudart(missing: list[str], library: Path) -> str:
    cudart = next((n for n in missing if n.startswith("libcudart")), None)
    if cudart is None:
        raise LoadCheckError(f"{library.name} does not link the CUDA runtime; nothing registers fat binaries")
    return cudart


def check_loads(library: Path, arch: int = 90, preload: tuple[Path, ...] = ()) -> LoadReport:
    """Load ``library`` with a plain dlopen in a fresh process against stand-ins; what its
    constructors registered."""
    with tempfile.TemporaryDirectory(prefix="framestream-loadcheck-") as tmp:
        folder = Path(tmp)
        missing = build_stand_ins(library, folder, preload)
        said = _run(folder, [sys.executable, "-c", _LOADER, str(arch), str(library.resolve()),
                             str(folder / _cudart(missing, library)), *(str(p.resolve()) for p in preload)],
                    library.name)
    return LoadReport(*said["counts"], stand_ins=tuple(missing))


@dataclass(frozen=True)
class OrtReport:
    load: LoadReport
    module: str  # the onnxruntime that was imported
    version: str
    available: tuple[str, ...]


def check_onnxruntime(site: Path, python: str, arch: int = 90) -> OrtReport:
    """Import onnxruntime from ``site`` with ``python`` (the bundle's Python version) and ask a
    session for the CUDA provider, which onnxruntime then loads itself, against stand-ins.
    The session's outcome proves nothing (the stand-ins answer every call with success);
    the registered containers and where onnxruntime came from are the result."""
    import onnx
    from onnx import TensorProto, helper

    provider = site / "onnxruntime" / "capi" / "libonnxruntime_providers_cuda.so"
    shared = site / "onnxruntime" / "capi" / "libonnxruntime_providers_shared.so"
    with tempfile.TemporaryDirectory(prefix="framestream-loadcheck-") as tmp:
        folder = Path(tmp)
        missing = build_stand_ins(provider, folder, (shared,))
        model = folder / "identity.onnx"
        value = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1])  # noqa: E731
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [value("x")], [value("y")])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        onnx.save(m, model)
        env_path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(site)
        try:
            said = _run(folder, [python, "-c", _ORT_LOADER, str(arch), str(folder / _cudart(missing, provider)),
                                 str(model)], provider.name)
        finally:
            if env_path is None:
                os.environ.pop("PYTHONPATH")
            else:
                os.environ["PYTHONPATH"] = env_path
    return OrtReport(LoadReport(*said["counts"], stand_ins=tuple(missing)), said["file"], said["version"],
                     tuple(said["available"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("library", type=Path)
    p.add_argument("--preload", type=Path, action="append", default=[], help="loaded first, RTLD_GLOBAL")
    p.add_argument("--arch", type=int, default=90)
    args = p.parse_args()
    try:
        report = check_loads(args.library, args.arch, tuple(args.preload))
    except (LoadCheckError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(report.summary(args.arch))


if __name__ == "__main__":
    main()
