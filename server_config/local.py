"""python -m server_config.local: a real Triton here, from the nvidia-pytriton wheel (CPU, or GPU: --model-config-name gpu).

The wheel bundles ``tritonserver`` and the python backend. It is installed in an environment
of its own (:mod:`server_config.triton_env`, prepared on first use), never in the client's,
whose numpy it would hold below 2. What the wheel lacks is assembled here: a backend
directory holding the python backend plus the stub built for the running Python, the bundled
libraries on ``LD_LIBRARY_PATH``, and a ``PYTHONPATH`` under which the model's ``model.py``
imports numpy and onnxruntime from that environment and, from the client, only framestream's
``client`` package. The server runs in its own process group,
so stopping it never leaves python-backend stubs behind, and its python backend names its
shared-memory regions with a prefix of this server's own, so those a killed server could not
unlink are removed by :meth:`LocalTriton.stop` (and no other server's).

It serves a copy of the repository assembled in its work folder, never the folder itself:
each framestream model's ``model.onnx`` is copied and its configs are written with the
model's parameters (size, class names, the digest of the copied bytes; see
``server_config/model/repository.py``), so the client reads what is served, and the tracked
configs in ``model_repository/`` stay as committed. Everything else is linked.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import client
from client.contract import GRPC_PORT, HTTP_PORT, METRICS_PORT
from client.errors import FramestreamError, UsageError
from client.limits import check_int, check_port
from client.commandline import EXIT_FAILED, EXIT_OK, Parser, configure_logging, exit_code, print_error

from .model.paths import MODEL_NAME, MODEL_REPOSITORY, default_model_path
from .model.repository import config_files, latest_model, stamp_model_dir
from .triton_env import REQUIREMENTS, TritonEnv, TritonEnvError, triton_env

log = logging.getLogger("server_config.local")

CPU_CONFIG_NAME = "cpu"
GPU_CONFIG_NAME = "gpu"
CONFIG_NAMES = (CPU_CONFIG_NAME, GPU_CONFIG_NAME)  # model_repository/yolo/configs/<name>.pbtxt
# The CUDA pool through which the server hands GPU tensors to python-backend stubs: a batch of
# 32 frames at 640x640 is 39 MB, and each instance may hold several requests (Triton's default: 64 MB).
GPU_POOL_BYTES = 1 << 30
SHM_DIR = Path("/dev/shm")
PYTHON_SHM_PREFIX = "triton_python_backend_shm_region_"  # the python backend's own default


class ServerSetupError(FramestreamError, RuntimeError):
    """The local server cannot start; the message says why and what to do."""


class MissingPrerequisiteError(ServerSetupError):
    """Something the server needs is not there: its environment (not preparable here), libpython3.X."""


@dataclass(frozen=True)
class LocalServerConfig:
    model_repository: Path | None = None  # None: framestream's own configs (shipped) and its default model
    host: str = "127.0.0.1"
    grpc_port: int = GRPC_PORT
    http_port: int = HTTP_PORT
    metrics_port: int = METRICS_PORT
    instances: int | None = None  # instances of each model; None keeps the served config's count
    config_name: str = CPU_CONFIG_NAME  # --model-config-name: configs/<name>.pbtxt (cpu or gpu)
    cuda_pool_bytes: tuple[tuple[int, int], ...] | None = None  # (GPU id, bytes); None: GPU 0 at GPU_POOL_BYTES for gpu
    gpu_metrics: bool | None = None  # None: on for the gpu config
    startup_timeout_s: float = 120.0
    stop_timeout_s: float = 20.0
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pools(self) -> tuple[tuple[int, int], ...]:
        if self.cuda_pool_bytes is not None:
            return self.cuda_pool_bytes
        return ((0, GPU_POOL_BYTES),) if self.config_name == GPU_CONFIG_NAME else ()

    @property
    def metrics_of_gpus(self) -> bool:
        return self.gpu_metrics if self.gpu_metrics is not None else self.config_name == GPU_CONFIG_NAME

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"


class LocalTriton:
    """Start-and-wait as a context manager: ``with LocalTriton(cfg) as server: ...``."""

    def __init__(self, config: LocalServerConfig = LocalServerConfig()) -> None:
        self.config = config
        self.process: subprocess.Popen | None = None
        self._workdir: Path | None = None
        self.log_path: Path | None = None
        # This server's python-backend regions: /dev/shm/<prefix><uuid>.
        self.shm_prefix = f"{PYTHON_SHM_PREFIX}framestream_{os.getpid()}_{secrets.token_hex(4)}_"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "LocalTriton":
        cfg = self.config
        _check_models(cfg.model_repository)
        for port in (cfg.grpc_port, cfg.http_port, cfg.metrics_port):
            _check_port_free(cfg.host, port)
        server = prepared_environment()
        self._workdir = Path(tempfile.mkdtemp(prefix="framestream-triton-"))
        backends = _backend_dir(server.triton_root, self._workdir)
        source = cfg.model_repository if cfg.model_repository is not None else _own_repository(self._workdir)
        repository = _served_repository(source, cfg.instances, self._workdir, cfg.config_name)
        binary = server.triton_root / "bin" / "tritonserver"
        env = _server_env(server, self._workdir)
        args = [
            str(binary),
            f"--model-repository={repository}",
            f"--backend-directory={backends}",
            *config_flags(cfg),
            "--model-control-mode=none",
            f"--grpc-address={cfg.host}", f"--grpc-port={cfg.grpc_port}",
            f"--http-address={cfg.host}", f"--http-port={cfg.http_port}",
            f"--metrics-address={cfg.host}", f"--metrics-port={cfg.metrics_port}",
            "--exit-on-error=true",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *(["--allow-client-shm=true"] if _supports_flag(binary, env, "allow-client-shm") else []),
            *cfg.extra_args,
        ]
        self.log_path = self._workdir / "tritonserver.log"
        with open(self.log_path, "wb") as logfile:
            self.process = subprocess.Popen(args, stdout=logfile, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        cfg = self.config
        deadline = time.monotonic() + cfg.startup_timeout_s
        ready = f"http://{cfg.host}:{cfg.http_port}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerSetupError(f"tritonserver exited with code {self.process.returncode}: {self._log_tail()}")
            if _http_ok(ready):
                return
            time.sleep(0.25)
        raise ServerSetupError(f"tritonserver not ready after {cfg.startup_timeout_s:.0f} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            lines = [l for l in self.log_path.read_text(errors="replace").splitlines() if l.strip()]
        except OSError:
            return "(no log)"
        errors = [l for l in lines if l.startswith("E") or "error" in l.lower()]
        # "failed to load all models" comes last; the model's own reason comes before it
        errors = [l for l in errors if "failed to load '" in l] or errors
        return (errors or lines or ["(empty log)"])[-1][:300] + f" (log: {self.log_path})"

    def stop(self) -> None:
        """SIGTERM the server's process group, then SIGKILL what is left after the timeout."""
        if self.process is not None and self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=self.config.stop_timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process is not None:
            _signal_group(self.process.pid, signal.SIGKILL)  # stubs that outlived their parent
        self.process = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._remove_shm_leftovers()

    def kill(self) -> None:
        """Kill the server abruptly (for fault tests): no graceful shutdown. Its shared-memory
        regions stay until :meth:`stop`, as after a real crash."""
        if self.process is not None:
            _signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def shm_leftovers(self) -> list[str]:
        """This server's python-backend regions still in /dev/shm."""
        try:
            return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(self.shm_prefix))
        except OSError:
            return []

    def _remove_shm_leftovers(self) -> None:
        """A server stopped cleanly unlinks its regions; one killed (SIGKILL, or past the stop
        timeout) cannot. Only names with this server's prefix are touched."""
        for name in self.shm_leftovers():
            (SHM_DIR / name).unlink(missing_ok=True)

    def __enter__(self) -> "LocalTriton":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def config_flags(cfg: LocalServerConfig) -> list[str]:
    """tritonserver's flags for the served config: its name, GPU metrics, the CUDA pools."""
    return [f"--model-config-name={cfg.config_name}",
            f"--allow-gpu-metrics={'true' if cfg.metrics_of_gpus else 'false'}",
            *(f"--cuda-memory-pool-byte-size={gpu}:{size}" for gpu, size in cfg.pools)]


# -- preparation ----------------------------------------------------------------------------
def prepared_environment(wheelhouse: Path | None = None) -> TritonEnv:
    """The server's own environment, prepared if it is not yet, with its stub's libraries checked."""
    try:
        server = triton_env().prepare(wheelhouse)
    except TritonEnvError as e:
        raise MissingPrerequisiteError(str(e)) from e
    _check_libpython(server)
    return server


def _stub(triton_root: Path) -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = triton_root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise MissingPrerequisiteError(f"nvidia-pytriton has no python-backend stub for Python {version}")
    return stub


def _check_libpython(server: TritonEnv) -> None:
    stub = _stub(server.triton_root)
    env = dict(os.environ, LD_LIBRARY_PATH=_library_path(server))
    out = subprocess.run(["ldd", str(stub)], capture_output=True, text=True, env=env).stdout
    missing = re.findall(r"(\S+) => not found", out)
    if missing:
        pkg = f"libpython{sys.version_info.major}.{sys.version_info.minor}"
        hint = f"apt-get install -y {pkg}" if any("libpython" in m for m in missing) else "install them"
        raise MissingPrerequisiteError(f"the python-backend stub needs {', '.join(missing)}: {hint}")


def _check_models(repository: Path | None) -> None:
    """framestream's model must be built before Triton can load it (other models are the user's)."""
    if repository is None:
        if not default_model_path().is_file():
            raise UsageError(f"{default_model_path()} is missing; "
                             "build it with 'python -m server_config.model build'")
        return
    if not repository.is_dir():
        raise UsageError(f"{repository}: no model repository there")
    model = repository / MODEL_NAME / "1" / "model.onnx"
    if (repository / MODEL_NAME).is_dir() and not model.is_file():
        out = "" if model.resolve() == default_model_path().resolve() else f" --out {model}"
        raise UsageError(f"{model} is missing; build it with 'python -m server_config.model build{out}'")


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As servers bind: a port left in TIME_WAIT by a stopped server is free, a listener is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError as e:
            raise UsageError(f"port {port} on {host} is in use ({e.strerror}); choose others with "
                             "--grpc-port/--http-port/--metrics-port") from e


def _backend_dir(triton_root: Path, workdir: Path) -> Path:
    """backends/python/ = the wheel's python backend + the stub for this interpreter."""
    target = workdir / "backends" / "python"
    shutil.copytree(triton_root / "backends" / "python", target, ignore=shutil.ignore_patterns("__pycache__"))
    stub = target / "triton_python_backend_stub"
    shutil.copy2(_stub(triton_root), stub)
    stub.chmod(0o755)
    return target.parent


def _own_repository(workdir: Path) -> Path:
    """framestream's own repository as links: the Triton configs shipped with the package
    (``MODEL_REPOSITORY``, read-only) and the default model, which lives in the user's cache."""
    source = workdir / "source"
    for path in (MODEL_REPOSITORY / MODEL_NAME).rglob("*"):
        if path.is_file() and path.name != "model.onnx" and "__pycache__" not in path.parts:
            dest = source / path.relative_to(MODEL_REPOSITORY)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(path.resolve())
    (source / MODEL_NAME / "1").mkdir(parents=True, exist_ok=True)
    (source / MODEL_NAME / "1" / "model.onnx").symlink_to(default_model_path().resolve())
    return source


def _served_repository(repository: Path, instances: int | None, workdir: Path,
                       config_name: str = CPU_CONFIG_NAME) -> Path:
    """The copy of ``repository`` to serve: configs written out (``instances`` instances in the
    ``config_name`` config when given; framestream's parameters), each framestream model's
    model.onnx copied so that its digest is of the bytes served, everything else linked."""
    copy = workdir / "model_repository"
    for model_dir in sorted(p for p in repository.resolve().iterdir() if p.is_dir()):
        configs = set(config_files(model_dir))
        model = latest_model(model_dir) if configs else None
        for path in model_dir.rglob("*"):
            if path.is_dir() or "__pycache__" in path.parts:
                continue
            dest = copy / path.relative_to(repository.resolve())
            dest.parent.mkdir(parents=True, exist_ok=True)
            if path in configs:
                text = path.read_text()
                if instances is not None and path.name == f"{config_name}.pbtxt":
                    text = re.sub(r"count:\s*\d+", f"count: {instances}", text)
                dest.write_text(text)
            elif path == model:
                shutil.copyfile(path, dest)
            else:
                dest.symlink_to(path.resolve())
        if model is not None:
            stamp_model_dir(copy / model_dir.name)
    return copy


def _library_path(server: TritonEnv) -> str:
    return os.pathsep.join(p for p in (str(server.libraries), os.environ.get("LD_LIBRARY_PATH", "")) if p)


def _server_env(server: TritonEnv, workdir: Path) -> dict[str, str]:
    """tritonserver's environment: the bundled libraries, and for the python backend's model.py
    the server environment's packages followed by a folder holding only framestream's
    ``client`` package (for the contract), so nothing else of the client's environment."""
    own = workdir / "framestream"
    own.mkdir()
    (own / "client").symlink_to(Path(client.__file__).resolve().parent)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["LD_LIBRARY_PATH"] = _library_path(server)
    env["PYTHONPATH"] = os.pathsep.join((str(server.site_packages), str(own)))
    return env


def _supports_flag(binary: Path, env: dict[str, str], flag: str) -> bool:
    """Triton 2.69+ needs --allow-client-shm=true for client shared memory; older ones reject it."""
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, env=env, timeout=30)
    return f"--{flag}" in out.stdout + out.stderr


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- CLI ------------------------------------------------------------------------------------
def _pool(text: str) -> tuple[int, int]:
    """``BYTES`` (GPU 0) or ``GPU:BYTES``."""
    gpu, _, size = text.rpartition(":")
    try:
        pair = (int(gpu or 0), int(size))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected BYTES or GPU:BYTES, e.g. 0:1073741824") from None
    if pair[0] < 0 or pair[1] <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a GPU id >= 0 and a size > 0")
    return pair


def parser(prog: str = "python -m server_config.local") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=__doc__.splitlines()[0],
               epilog="Exit codes: 0 stopped by Ctrl-C or SIGTERM (how a server is meant to stop), or --prepare "
               "done; 1 usage error (an option, the model repository, a missing model, a port in use); "
               "2 the environment could not be prepared or tritonserver failed to start or exited.")
    p.add_argument("--model-repository", type=Path, default=None,
                   help="the repository to serve; None: framestream's configs with the default model")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 inside a container)")
    p.add_argument("--grpc-port", type=int, default=GRPC_PORT)
    p.add_argument("--http-port", type=int, default=HTTP_PORT)
    p.add_argument("--metrics-port", type=int, default=METRICS_PORT)
    p.add_argument("--instances", type=int, default=None, help="instances per model (default: the config's)")
    p.add_argument("--model-config-name", choices=CONFIG_NAMES, default=CPU_CONFIG_NAME,
                   help="cpu: onnxruntime on CPU instances; gpu: onnxruntime's CUDA provider on GPU instances "
                        "(python backend; needs onnxruntime-gpu in the server's environment)")
    p.add_argument("--cuda-memory-pool-byte-size", action="append", default=None, metavar="[GPU:]BYTES",
                   type=_pool, help=f"the CUDA pool for GPU tensors between server and stubs "
                                    f"(default with gpu: GPU 0, {GPU_POOL_BYTES})")
    p.add_argument("--gpu-metrics", action=argparse.BooleanOptionalAction, default=None,
                   help="Triton's GPU metrics (default: on with gpu)")
    env = p.add_argument_group("the server's own environment (nvidia-pytriton, numpy<2, onnxruntime; "
                               "prepared on first use in $FRAMESTREAM_HOME/triton-env, or in $FRAMESTREAM_TRITON_ENV)")
    env.add_argument("--prepare", action="store_true", help="prepare the environment and exit (nothing is served)")
    env.add_argument("--wheelhouse", type=Path, default=None, metavar="DIR",
                     help="install the environment from these wheels only (no index)")
    env.add_argument("--requirements", action="store_true",
                     help="print the environment's requirements (for pip download -r) and exit")
    return p


def main(argv: list[str] | None = None, *, prog: str = "python -m server_config.local") -> int:
    """The command line; returns its exit code (:mod:`client.commandline`; a signal is the normal
    stop here, so it ends with 0 once the server has stopped)."""
    args = parser(prog).parse_args(argv)
    configure_logging()
    if args.requirements:
        print(REQUIREMENTS.read_text(), end="")
        return EXIT_OK
    if args.prepare or args.wheelhouse is not None:
        try:
            server = prepared_environment(args.wheelhouse)
        except FramestreamError as e:
            print_error(e)
            return exit_code(e)
        if args.prepare:
            log.info("the local Triton's environment is ready: %s", server.path)
            return EXIT_OK
    try:  # a port out of range is one line, exit 1 (not bind()'s OverflowError)
        for option in ("--grpc-port", "--http-port", "--metrics-port"):
            check_port(option, getattr(args, option[2:].replace("-", "_")))
        check_int("--instances", args.instances, 1)
    except UsageError as e:
        print_error(e)
        return exit_code(e)
    config = LocalServerConfig(model_repository=args.model_repository, host=args.host, grpc_port=args.grpc_port,
                               http_port=args.http_port, metrics_port=args.metrics_port, instances=args.instances,
                               config_name=args.model_config_name, gpu_metrics=args.gpu_metrics,
                               cuda_pool_bytes=tuple(args.cuda_memory_pool_byte_size)
                               if args.cuda_memory_pool_byte_size else None)
    stop = {"now": False}

    def on_signal(signum, frame):  # noqa: ARG001
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = LocalTriton(config)
    try:
        server.start()
    except FramestreamError as e:
        print_error(e)
        return exit_code(e)
    try:
        log.info("Triton ready: gRPC %s, HTTP %s:%d, metrics %s (Ctrl-C stops it)",
                 config.grpc_url, config.host, config.http_port, config.metrics_url)
        while not stop["now"] and server.process.poll() is None:
            time.sleep(0.2)
        if not stop["now"]:
            print_error(f"tritonserver exited with code {server.process.returncode}")
            return EXIT_FAILED
    finally:
        server.stop()
    log.info("Triton stopped")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
