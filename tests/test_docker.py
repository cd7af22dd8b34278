"""docker/compose.yaml's and the Dockerfiles' invariants, checked without a Docker engine.

tests/test_compose.py runs the cpu profile for real where an engine runs; the GPU profile
cannot run on these machines, so what it shares with the cpu profile is checked here."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from client import bulk
from server_config import local
from server_config.model.paths import REPO_ROOT

yaml = pytest.importorskip("yaml", reason="needs pyyaml (the test extra)")

DOCKER = REPO_ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
LONG_RUNNING = ["triton", "triton-cpu", "prometheus", "grafana"]
BULK = ["bulk", "bulk-cpu"]


def default(value: str) -> str:
    """What compose substitutes for ``${VAR:-default}`` when VAR is unset (the value itself otherwise)."""
    m = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    return m.group(1) if m else value


def dockerfile_base(dockerfile: str) -> tuple[str, str]:
    """(build arg, its default) of the image a Dockerfile builds FROM: every stage the same."""
    text = (DOCKER / dockerfile).read_text()
    froms = set(re.findall(r"^FROM \$\{(\w+)\}", text, re.M))
    assert len(froms) == 1 and len(re.findall(r"^FROM ", text, re.M)) >= 1, f"{dockerfile}: FROM ${{ARG}} in every stage"
    (arg,) = froms
    return arg, re.search(rf"^ARG {arg}=(\S+)$", text, re.M).group(1)


def volumes(service: str) -> dict[str, str]:
    """container path -> mode ('ro' or 'rw') of each mount."""
    out = {}
    for spec in SERVICES[service].get("volumes", []):
        # The source may hold ':' itself (${VAR:-./data}); the target is the absolute path after it.
        m = re.fullmatch(r"(.+):(/[^:]*)(?::(ro|rw))?", spec)
        out[m.group(2)] = m.group(3) or "rw"
    return out


def test_every_service_has_a_pinned_image_or_a_build() -> None:
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
        image = default(service.get("image", ""))
        if "build" not in service:
            assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), f"{name}: pin {image!r}"


def test_published_ports_bind_to_loopback_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"
            assert re.fullmatch(r"127\.0\.0\.1:(\d+|\$\{\w+:-\d+\}):\d+", port), port


def test_model_repository_and_input_are_read_only_output_writable() -> None:
    for name in ["triton", "triton-cpu", *BULK]:
        assert volumes(name)["/models"] == "ro", name
    for name in BULK:
        assert volumes(name)["/data"] == "ro" and volumes(name)["/out"] == "rw", name
    assert volumes("model-init")["/models"] == "rw"


def test_long_running_services_have_healthchecks_and_restart_policies() -> None:
    for name in LONG_RUNNING:
        assert SERVICES[name]["healthcheck"]["test"], name
        assert SERVICES[name]["restart"] == "unless-stopped", name
    for name in ["model-init", *BULK]:
        assert SERVICES[name]["restart"] == "no", f"{name} is one-shot"


def gpu_capabilities(name: str) -> set[str]:
    (device,) = SERVICES[name]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
    return set(device["capabilities"])


def test_gpu_services_reserve_a_gpu_and_the_client_can_use_nvdec() -> None:
    assert "video" in SERVICES["bulk"]["environment"]["NVIDIA_DRIVER_CAPABILITIES"].split(",")
    assert gpu_capabilities("bulk") >= {"gpu", "video"} and gpu_capabilities("triton") >= {"gpu"}


@pytest.mark.parametrize(("name", "needed"), [("bulk", {"compute", "utility", "video"}), ("triton", {"compute", "utility"})])
def test_gpu_capabilities_list_every_driver_capability_the_service_uses(name: str, needed: set[str]) -> None:
    # The toolkit writes NVIDIA_DRIVER_CAPABILITIES from this list (all but "gpu"), overriding
    # the image and the environment: [gpu, video] left the client without CUDA (compute).
    listed = gpu_capabilities(name) - {"gpu"}
    assert listed >= needed, f"{name}: capabilities lack {sorted(needed - listed)}"
    written = SERVICES[name].get("environment", {}).get("NVIDIA_DRIVER_CAPABILITIES")
    assert written is None or set(written.split(",")) == listed, f"{name}: environment and capabilities disagree"


def test_the_gpu_client_shares_cuda_ipc_with_triton_without_living_in_triton_s_namespace() -> None:
    # CUDA IPC needs distinct PIDs, so one shared PID namespace; held by a service of its own,
    # a restarting Triton no longer takes the client down with it (pid: service:triton did).
    holder = SERVICES["gpu-namespaces"]
    for name in ["triton", "bulk"]:
        assert SERVICES[name]["pid"] == "service:gpu-namespaces", name
        assert SERVICES[name]["ipc"] == "service:gpu-namespaces", name
    assert [n for n, s in SERVICES.items() if s.get("pid") in ("service:triton", "service:triton-cpu")] == []
    assert holder["ipc"] == "shareable" and holder["shm_size"] and holder["init"] is True
    assert holder["restart"] == "unless-stopped" and "depends_on" not in holder and "deploy" not in holder
    assert SERVICES["triton"]["depends_on"]["gpu-namespaces"]["condition"] == "service_started"


def test_startup_order_model_then_healthy_triton_then_client() -> None:
    for server in ["triton", "triton-cpu"]:
        assert SERVICES[server]["depends_on"]["model-init"]["condition"] == "service_completed_successfully"
    assert SERVICES["bulk"]["depends_on"]["triton"]["condition"] == "service_healthy"
    assert SERVICES["bulk-cpu"]["depends_on"]["triton-cpu"]["condition"] == "service_healthy"


def test_shared_memory_settings_match_what_the_transports_need() -> None:
    triton_flags = SERVICES["triton"]["command"]
    assert "--allow-client-shm=true" in triton_flags  # the pinned image is Triton 2.73 (>= 2.69)
    assert "--model-control-mode=none" in triton_flags and "--model-repository=/models" in triton_flags
    assert SERVICES["triton"]["ipc"] == SERVICES["bulk"]["ipc"] == "service:gpu-namespaces"
    assert SERVICES["triton-cpu"]["ipc"] == "shareable" and SERVICES["bulk-cpu"]["ipc"] == "service:triton-cpu"


@pytest.mark.parametrize("name", BULK)
def test_client_command_is_accepted_by_the_real_cli(name: str) -> None:
    command = SERVICES[name]["command"]
    assert command[:3] == ["python", "-m", "client.bulk"]
    args = bulk.parser().parse_args(command[3:])  # exits (SystemExit) on an unknown flag
    assert args.paths == ["/data"] and str(args.out) == "/out" and args.server.endswith(":8001")
    assert args.metrics_port == 9100 and args.metrics_addr == "0.0.0.0"  # scraped from the prometheus container
    # The GPU client keeps frames on the GPU into Triton's CUDA shared memory; the CPU one uses system memory.
    assert (args.device, args.shm) == (("gpu", "cuda") if name == "bulk" else ("auto", "system"))


def test_cpu_triton_command_is_accepted_by_server_config_local() -> None:
    command = SERVICES["triton-cpu"]["command"]
    assert command[:3] == ["python", "-m", "server_config.local"]
    args = local.parser().parse_args(command[3:])
    assert args.host == "0.0.0.0" and str(args.model_repository) == "/models" and args.grpc_port == 8001


def test_prometheus_scrapes_triton_and_the_client() -> None:
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]}
    assert {"triton:8002", "triton-cpu:8002", "bulk:9100", "bulk-cpu:9100"} <= targets


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu"])
def test_images_run_as_a_non_root_user_from_a_pinned_base(dockerfile: str) -> None:
    text = (DOCKER / dockerfile).read_text()
    _, base = dockerfile_base(dockerfile)
    assert re.search(r":\d[\w.-]*$", base), f"pin the base image: {base}"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")


@pytest.mark.parametrize(("service", "dockerfile"), [("bulk", "Dockerfile"), ("bulk-cpu", "Dockerfile.cpu")])
def test_base_images_are_build_args_whose_compose_default_is_the_dockerfiles(service: str, dockerfile: str) -> None:
    build = SERVICES[service]["build"]
    assert build["dockerfile"] == f"docker/{dockerfile}"
    arg, base = dockerfile_base(dockerfile)
    value = build["args"][arg]
    assert value.startswith("${FRAMESTREAM_") and default(value) == base  # overridable; docker build agrees


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu"])
def test_both_images_install_from_the_wheelhouse_without_an_index_when_it_holds_wheels(dockerfile: str) -> None:
    text = (DOCKER / dockerfile).read_text()
    assert "COPY docker/wheelhouse/ /wheels/" in text
    assert re.search(r"if ls /wheels/\*\.whl .*; then set -- --no-index --find-links /wheels; fi", text)
    assert re.search(r"pip install \"\$@\" -e '\.\[[\w,]+\]'", text)
    # The wheels stay in the build stage: the final image copies the virtual environment alone.
    final = text.rsplit("\nFROM ", 1)[1]
    assert "/wheels" not in final and "COPY --from=build /opt/venv /opt/venv" in final


def test_the_wheelhouse_directory_is_in_git_and_its_wheels_are_not() -> None:
    assert (DOCKER / "wheelhouse" / ".gitignore").read_text().split() == ["*", "!.gitignore"]


def test_prometheus_image_can_be_replaced_and_model_files_stay_out_of_the_build_context() -> None:
    assert SERVICES["prometheus"]["image"].startswith("${FRAMESTREAM_PROMETHEUS_IMAGE:-prom/prometheus:")
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert "**/*.onnx" in ignored  # a model built on the host (model_repository/yolo/1/) is not baked in


def test_cpu_triton_runs_as_the_bulk_clients_user_who_owns_the_shared_memory_regions() -> None:
    # The client creates its system shared-memory regions with mode 0600 (multiprocessing's
    # default): only a server running as the same user can open them.
    assert SERVICES["triton-cpu"]["user"] == SERVICES["bulk-cpu"]["user"]
    assert SERVICES["bulk-cpu"]["user"].startswith("${FRAMESTREAM_UID:-10001}:")


def test_compose_file_validates_with_docker_compose() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    for profiles in ([], ["--profile", "cpu", "--profile", "dashboard"]):
        result = subprocess.run([tool, "-f", str(DOCKER / "compose.yaml"), *profiles, "config", "-q"],
                                capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu"])
def test_the_build_stage_has_every_package_folder_before_its_editable_install(dockerfile: str) -> None:
    """pyproject.toml lists its packages (one is model_repository/, mapped): the editable install
    in the build stage fails without their folders, as it did once; the GPU image can't be built here."""
    tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with Python 3.11's tomllib")
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setuptools.get("package-dir", {})
    folders = {mapped.get(p, p.replace(".", "/")).split("/")[0] for p in setuptools["packages"]}
    text = (DOCKER / dockerfile).read_text()
    build_stage = text[: text.index("pip install")]
    copied = set(re.findall(r"^COPY (\S+) \./\1\s*$", build_stage, re.M))
    assert folders <= copied, f"{dockerfile}: the build stage lacks {sorted(folders - copied)}"


def test_the_gpu_image_and_the_gpu_extra_use_one_cuda_and_say_the_driver_it_needs() -> None:
    """A CUDA 12 base under CUDA 13 wheels (or the reverse) builds and then cannot start the
    CUDA provider: the base image's major version, CuPy's wheel, cuda-python's pin and
    onnxruntime-gpu's floor must agree."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    _, base = dockerfile_base("Dockerfile")
    major = int(re.search(r"nvidia/cuda:(\d+)\.", base).group(1))
    assert "cudnn" in base, f"{base}: onnxruntime-gpu's CUDA provider loads cuDNN 9"
    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    gpu = {r.name.lower(): r for r in map(Requirement, extra)}
    assert [n for n in gpu if n.startswith("cupy-cuda")] == [f"cupy-cuda{major}x"]
    cuda_python = gpu["cuda-python"].specifier
    assert cuda_python.contains(f"{major}.0.0") and cuda_python.contains(f"{major}.9.9")
    assert not cuda_python.contains(f"{major - 1}.9.0") and not cuda_python.contains(f"{major + 1}.0.0")
    floor = min(Version(s.version) for s in gpu["onnxruntime-gpu"].specifier if s.operator == ">=")
    assert major != 13 or floor >= Version("1.27"), "onnxruntime-gpu below 1.27 is a CUDA 12 build"
    assert re.search(r"driver >= 580", (DOCKER / "Dockerfile").read_text()), "say the minimum driver"
