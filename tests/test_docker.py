"""docker/compose.yaml's invariants, checked offline (no Docker engine on these machines)."""

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
        image = service.get("image", "")
        if "build" not in service:
            assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), f"{name}: pin {image!r}"


def test_published_ports_bind_to_loopback_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


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


def test_gpu_services_reserve_a_gpu_and_the_client_can_use_nvdec() -> None:
    for name in ["triton", "bulk"]:
        (device,) = SERVICES[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "video" in SERVICES["bulk"]["environment"]["NVIDIA_DRIVER_CAPABILITIES"].split(",")


def test_startup_order_model_then_healthy_triton_then_client() -> None:
    for server in ["triton", "triton-cpu"]:
        assert SERVICES[server]["depends_on"]["model-init"]["condition"] == "service_completed_successfully"
    assert SERVICES["bulk"]["depends_on"]["triton"]["condition"] == "service_healthy"
    assert SERVICES["bulk-cpu"]["depends_on"]["triton-cpu"]["condition"] == "service_healthy"


def test_shared_memory_settings_match_what_the_transports_need() -> None:
    triton_flags = SERVICES["triton"]["command"]
    assert "--allow-client-shm=true" in triton_flags  # the pinned image is Triton 2.73 (>= 2.69)
    assert "--model-control-mode=none" in triton_flags and "--model-repository=/models" in triton_flags
    assert SERVICES["triton"]["ipc"] == "shareable" and SERVICES["bulk"]["ipc"] == "service:triton"
    assert SERVICES["bulk"]["pid"] == "service:triton"  # CUDA IPC across containers
    assert SERVICES["triton-cpu"]["ipc"] == "shareable" and SERVICES["bulk-cpu"]["ipc"] == "service:triton-cpu"


@pytest.mark.parametrize("name", BULK)
def test_client_command_is_accepted_by_the_real_cli(name: str) -> None:
    command = SERVICES[name]["command"]
    assert command[:3] == ["python", "-m", "client.bulk"]
    args = bulk.parser().parse_args(command[3:])  # exits (SystemExit) on an unknown flag
    assert str(args.dir) == "/data" and str(args.out) == "/out" and args.server.endswith(":8001")
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
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert re.search(r":\d[\w.-]*$", base), f"pin the base image: {base}"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")


def test_compose_file_validates_with_docker_compose() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    for profiles in ([], ["--profile", "cpu", "--profile", "dashboard"]):
        result = subprocess.run([tool, "-f", str(DOCKER / "compose.yaml"), *profiles, "config", "-q"],
                                capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr
