"""framestream installed as a user installs it: a wheel in a fresh venv, run from another folder.

The venv is a plain one; a ``.pth`` file lets it see this interpreter's site-packages (numpy,
av, onnxruntime), written after the wheel is installed, so pip sees only the venv's own
framestream. ``.pth`` files inside that folder are not processed, so an editable install of
the clone there stays inactive: what runs is the wheel.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.contract import MODEL_NAME, model_digest
from server_config.model import paths
from server_config.model.paths import REPO_ROOT

from .videos import write_video

pytestmark = pytest.mark.install

SOURCES = ("pyproject.toml", "README.md", "client", "server_config", "model_repository")


@dataclass(frozen=True)
class Installed:
    root: Path  # a scratch folder outside the clone
    venv: Path
    site: Path  # the venv's site-packages

    def env(self, **extra: str) -> dict[str, str]:
        """A user's environment: no PYTHONPATH, no FRAMESTREAM_HOME, a cache and a home of its own."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTHON", "FRAMESTREAM_", "XDG_")) and k != "VIRTUAL_ENV"}
        env.update(PATH=f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HOME=str(self.root / "home"),
                   XDG_CACHE_HOME=str(self.root / "cache"), **extra)
        return env

    def run(self, *args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
        work = self.root / "work"  # not the clone: nothing is importable from the current folder
        work.mkdir(exist_ok=True)
        return subprocess.run(args, cwd=work, env=self.env(**env), capture_output=True, text=True, timeout=timeout)

    def framestream(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return self.run(str(self.venv / "bin" / "framestream"), *args, **env)

    def python(self, code: str, **env: str) -> subprocess.CompletedProcess:
        return self.run(str(self.venv / "bin" / "python"), "-c", textwrap.dedent(code), **env)


def _can_build_without_an_index() -> bool:
    """setuptools 70.1+ builds wheels itself; older ones need the wheel package."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    from setuptools import __version__

    major, minor = (int(x) for x in __version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _pip(*args: str, python: str = sys.executable) -> None:
    result = subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    src = root / "src"  # a copy: the build writes build/ and egg-info beside its sources
    src.mkdir()
    for name in SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.onnx", "*.egg-info"))
        else:
            shutil.copy2(REPO_ROOT / name, src / name)
    # A model built in a clone earlier: it must not ship, nor be what the installed package uses.
    (src / "model_repository" / MODEL_NAME / "1" / "model.onnx").write_bytes(b"a clone's own model")
    isolation = ["--no-build-isolation"] if _can_build_without_an_index() else []
    _pip("wheel", "--no-deps", *isolation, "--wheel-dir", str(root / "wheels"), str(src))
    shutil.rmtree(src)  # the installed package must not need its sources
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    _pip("install", "--no-deps", "--no-index", *map(str, (root / "wheels").glob("*.whl")), python=python)
    venv_site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    dependencies = [*site.getsitepackages(), site.getusersitepackages()]
    (venv_site / "_framestream_test_dependencies.pth").write_text(
        "".join(f"{p}\n" for p in dependencies if Path(p).is_dir()))
    return Installed(root=root, venv=venv, site=venv_site)


def test_installed_bulk_run_from_another_folder_builds_the_default_model_in_the_users_cache_and_writes_nothing_beside_the_code(
        installed: Installed) -> None:
    videos = installed.root / "videos"
    videos.mkdir(exist_ok=True)
    write_video(videos / "a.mp4", frames=3)
    write_video(videos / "b.mkv", frames=2, size_wh=(96, 160))
    out = installed.root / "out"
    before = listing(installed.site)

    result = installed.framestream("bulk", str(videos), "--out", str(out), "--no-progress")

    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert sorted((f["path"], f["status"], f["frames"]) for f in summary["files"]) == [("a.mp4", "ok", 3),
                                                                                       ("b.mkv", "ok", 2)]
    assert len((out / "a.mp4.jsonl").read_text().splitlines()) == 3
    model = installed.root / "cache" / "framestream" / "model.onnx"
    assert model.is_file() and summary["model"]["path"] == str(model)
    assert listing(installed.site) == before, "the run wrote into the installed package"
    assert not list(installed.site.rglob("*.onnx")), "a clone's model.onnx was shipped in the wheel"
    assert not (installed.root / "work" / "framestream-out").exists()
    where = installed.python("import client, server_config; print(client.__file__, server_config.__file__)")
    assert all(Path(p).is_relative_to(installed.site) for p in where.stdout.split()), where.stdout


def test_framestream_help_lists_its_commands_and_an_unknown_one_is_one_line_exit_1(installed: Installed) -> None:
    top = installed.framestream("--help")
    assert top.returncode == 0 and all(name in top.stdout for name in ("bulk", "serve", "model")), top.stderr
    build = installed.framestream("model", "build", "--help")
    assert build.returncode == 0 and "--size" in build.stdout
    assert str(installed.root / "cache" / "framestream" / "model.onnx") in "".join(build.stdout.split())  # argparse wraps it
    bulk = installed.framestream("bulk", "--help")
    assert bulk.returncode == 0 and "--server" in bulk.stdout and bulk.stdout.startswith("usage: framestream bulk")
    assert installed.framestream("serve", "--help").stdout.startswith("usage: framestream serve")
    assert build.stdout.startswith("usage: framestream model build")
    mistake = installed.framestream("bulk", ".", "--every", "2", "--fps", "3")
    assert mistake.returncode == 1 and "see framestream bulk --help" in mistake.stderr
    unknown = installed.framestream("annotate", "x")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1 and "annotate" in unknown.stderr
    assert installed.framestream("render", "--help").stdout.startswith("usage: framestream render")
    bare = installed.framestream()
    assert bare.returncode == 1 and "bulk" in bare.stderr


def test_the_local_servers_own_repository_is_assembled_from_the_installed_package_and_framestream_home(
        installed: Installed, model_path: Path) -> None:
    home = installed.root / "home-for-serve"
    home.mkdir(exist_ok=True)
    shutil.copyfile(model_path, home / "model.onnx")
    result = installed.python("""
        import json, tempfile
        from pathlib import Path
        from server_config import local
        from server_config.model.paths import MODEL_REPOSITORY

        work = Path(tempfile.mkdtemp())
        served = local._served_repository(local._own_repository(work), 1, work)
        files = {str(p.relative_to(served)): str(p.resolve()) for p in served.rglob("*") if p.is_file()}
        print(json.dumps({"templates": str(MODEL_REPOSITORY), "files": files,
                          "cpu": (served / "yolo" / "configs" / "cpu.pbtxt").read_text(),
                          "default": local.parser().parse_args([]).model_repository}))
        """, FRAMESTREAM_HOME=str(home))
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout)
    assert Path(found["templates"]).is_relative_to(installed.site) and found["default"] is None
    files = found["files"]
    assert sorted(files) == ["yolo/1/model.onnx", "yolo/1/model.py", "yolo/config.pbtxt", "yolo/configs/cpu.pbtxt",
                            "yolo/configs/gpu.pbtxt"]
    assert Path(files["yolo/1/model.py"]).is_relative_to(installed.site)
    assert model_digest(model_path) in found["cpu"], "the served config describes the model in FRAMESTREAM_HOME"


def test_installed_serve_without_a_built_model_is_one_line_naming_where_the_model_goes(installed: Installed) -> None:
    home = installed.root / "empty-home"
    result = installed.framestream("serve", "--grpc-port", "1", FRAMESTREAM_HOME=str(home))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(home / "model.onnx") in result.stderr and "server_config.model build" in result.stderr


@pytest.mark.triton
def test_installed_serve_serves_the_packaged_configs_with_the_model_in_framestream_home_and_bulk_uses_it(
        installed: Installed, model_path: Path) -> None:
    from server_config import local

    from .triton_server import free_ports

    try:
        server_env = local.prepared_environment()
    except local.MissingPrerequisiteError as e:
        pytest.skip(f"the local server cannot start here: {e}")
    home = installed.root / "home-for-a-real-serve"
    home.mkdir(exist_ok=True)
    shutil.copyfile(model_path, home / "model.onnx")
    videos = installed.root / "videos-served"
    videos.mkdir(exist_ok=True)
    write_video(videos / "a.mp4", frames=2)
    grpc, http, metrics = map(str, free_ports(3))
    # The server's environment prepared once for the suite (it is keyed, not tied to the home).
    env = installed.env(FRAMESTREAM_HOME=str(home), FRAMESTREAM_TRITON_ENV=str(server_env.path))
    server = subprocess.Popen([str(installed.venv / "bin" / "framestream"), "serve", "--grpc-port", grpc,
                               "--http-port", http, "--metrics-port", metrics, "--instances", "1"],
                              cwd=installed.root, env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in server.stderr:  # ends when the server exits: a failure to start is not a hang
            lines.append(line)
            if "Triton ready" in line:
                break
        assert "Triton ready" in lines[-1], "".join(lines)[-3000:]
        result = installed.framestream("bulk", str(videos), "--out", str(installed.root / "out-served"),
                                       "--no-progress", "--server", f"127.0.0.1:{grpc}")
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads((installed.root / "out-served" / "summary.json").read_text())
        assert summary["model"]["digest"] == model_digest(model_path) and summary["files"][0]["frames"] == 2
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0


def test_the_server_s_environment_prepares_offline_from_a_wheelhouse_with_the_documented_commands(
        installed: Installed) -> None:
    """docs/triton.md's offline route: the requirements printed, a wheelhouse downloaded where an index
    answers, then one command without an index."""
    printed = installed.framestream("serve", "--requirements")
    assert printed.returncode == 0 and "nvidia-pytriton" in printed.stdout
    requirements = installed.root / "triton-requirements.txt"
    requirements.write_text(printed.stdout)
    wheels = installed.root / "triton-wheels"
    download = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheels),
                               "-r", str(requirements)], capture_output=True, text=True, timeout=600)
    if download.returncode != 0:
        pytest.skip(f"no package index answers here: {download.stderr.strip().splitlines()[-1:]}")
    target = installed.root / "triton-env"
    prepared = installed.framestream("serve", "--prepare", "--wheelhouse", str(wheels),
                                     FRAMESTREAM_TRITON_ENV=str(target), PIP_INDEX_URL="http://127.0.0.1:9/nowhere")
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    assert (target / "lib").is_dir() and list(target.glob("lib/python3.*/site-packages/pytriton/tritonserver/bin/tritonserver"))
    numpy_major = subprocess.run([str(target / "bin" / "python"), "-c", "import numpy; print(numpy.__version__)"],
                                 capture_output=True, text=True, check=True).stdout.split(".")[0]
    assert numpy_major == "1", "nvidia-pytriton's numpy pin lives in the server's environment"
    again = installed.framestream("serve", "--prepare", FRAMESTREAM_TRITON_ENV=str(target),
                                  PIP_INDEX_URL="http://127.0.0.1:9/nowhere")
    assert again.returncode == 0 and "preparing" not in again.stderr, "a ready environment is kept, not redone"


def test_installing_into_an_environment_with_numpy_2_keeps_numpy_2_and_the_embedded_run_works(
        installed: Installed) -> None:
    """A data-science environment already on numpy 2: framestream's extras never take it back."""
    venv = installed.root / "numpy2-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    first = subprocess.run([python, "-m", "pip", "install", "--quiet", "numpy>=2"], capture_output=True, text=True,
                           timeout=600)
    if first.returncode != 0:
        pytest.skip(f"no package index answers here: {first.stderr.strip().splitlines()[-1:]}")
    (wheel,) = (installed.root / "wheels").glob("framestream-*.whl")
    _pip("install", "--quiet", f"framestream[cpu,exact,parquet,metrics] @ {wheel.as_uri()}", python=python)
    version = subprocess.run([python, "-c", "import numpy; print(numpy.__version__)"], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert int(version.split(".")[0]) >= 2, f"installing framestream changed numpy to {version}"
    videos = installed.root / "videos-numpy2"
    videos.mkdir()
    write_video(videos / "a.mp4", frames=3)
    out = installed.root / "out-numpy2"
    env = installed.env(FRAMESTREAM_HOME=str(installed.root / "home-numpy2"))
    run = subprocess.run([str(venv / "bin" / "framestream"), "bulk", str(videos), "--out", str(out), "--no-progress",
                          "--format", "parquet"], cwd=installed.root, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["files"][0]["frames"] == 3


def test_every_package_folder_is_listed_in_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(REPO_ROOT).parts)
               for top in ("client", "server_config") for p in (REPO_ROOT / top).rglob("__init__.py")}
    assert folders <= listed, f"add {sorted(folders - listed)} to [tool.setuptools] packages in pyproject.toml"


@pytest.mark.parametrize(("env", "clone_model", "expected"), [
    ({"XDG_CACHE_HOME": "/x/cache"}, False, "/x/cache/framestream/model.onnx"),
    ({"XDG_CACHE_HOME": "relative/cache", "HOME": "/h"}, False, "/h/.cache/framestream/model.onnx"),
    ({"HOME": "/h"}, False, "/h/.cache/framestream/model.onnx"),
    ({"XDG_CACHE_HOME": "/x/cache"}, True, "CLONE"),  # built or wrapped in a clone before: still used
    ({"XDG_CACHE_HOME": "/x/cache", "FRAMESTREAM_HOME": "/fs"}, True, "/fs/model.onnx"),
])
def test_the_default_model_is_in_the_users_cache_unless_a_clone_has_one_or_framestream_home_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], clone_model: bool,
        expected: str) -> None:
    for name in ("XDG_CACHE_HOME", "FRAMESTREAM_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    repository = tmp_path / "model_repository"  # the clone's folder, as paths resolves it
    (repository / MODEL_NAME / "1").mkdir(parents=True)
    if clone_model:
        (repository / MODEL_NAME / "1" / "model.onnx").write_bytes(b"a wrapped, trained model")
    monkeypatch.setattr(paths, "MODEL_REPOSITORY", repository)
    clone = repository / MODEL_NAME / "1" / "model.onnx"
    assert paths.default_model_path() == (clone if expected == "CLONE" else Path(expected))


def test_an_unwritable_cache_is_one_line_naming_framestream_home(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder would go: unwritable even for root")
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", frames=2)
    env = {k: v for k, v in os.environ.items() if k != "FRAMESTREAM_HOME"}
    result = subprocess.run([sys.executable, "-m", "client.bulk", str(videos), "--out", str(tmp_path / "out"),
                             "--no-progress"], capture_output=True, text=True, timeout=180, cwd=REPO_ROOT,
                            env={**env, "FRAMESTREAM_HOME": str(blocker / "home")})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "FRAMESTREAM_HOME" in errors[0] and str(blocker / "home") in errors[0]
