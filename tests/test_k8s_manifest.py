"""docker/k8s/bulk-indexed-job.yaml, checked offline: against Kubernetes' own schemas, then
against the code and docker/compose.yaml it must agree with.

No cluster runs here, so the schema check (kubernetes-validate: the API's JSON schemas, strict,
so an unknown field fails too) proves the manifest is one the API server accepts; the checks
below prove it runs framestream as the code expects: a command the CLI parses, the shard
environment the code reads, the sidecar's port and model repository where the client and
compose's model-init put them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from client import bulk
from client.shards import Shard, shard_from_env
from server_config.model.paths import REPO_ROOT

yaml = pytest.importorskip("yaml", reason="needs pyyaml (the test extra)")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="needs kubernetes-validate (the test extra)")

MANIFEST = REPO_ROOT / "docker" / "k8s" / "bulk-indexed-job.yaml"
COMPOSE = REPO_ROOT / "docker" / "compose.yaml"
# The oldest Kubernetes the manifest needs (DRA resource.k8s.io/v1; native sidecars and
# per-index retries are on by default before it), and the newest the validator carries.
VERSIONS = ("1.34.0", kubernetes_validate.latest_version())
CLI = ["python", "-m", "client.bulk"]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def documents(path: Path = MANIFEST) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{MANIFEST.name}: expected one {kind}, found {len(found)}"
    return found[0]


def pod(docs: list[dict]) -> dict:
    return one(docs, "Job")["spec"]["template"]["spec"]


def container(docs: list[dict], name: str) -> dict:
    spec = pod(docs)
    found = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    assert len(found) == 1, f"{MANIFEST.name}: expected one container {name!r}"
    return found[0]


def flags(command: list[str]) -> dict[str, str]:
    """tritonserver's ``--key=value`` arguments as a dict."""
    return dict(arg.removeprefix("--").split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


def mount(c: dict, path: str) -> dict:
    found = [m for m in c.get("volumeMounts", []) if m["mountPath"] == path]
    assert len(found) == 1, f"container {c['name']!r} mounts nothing at {path}"
    return found[0]


def bulk_args(docs: list[dict]):
    command = container(docs, "bulk")["command"]
    assert command[:3] == CLI, f"the bulk container runs {command[:3]}, not {' '.join(CLI)}"
    return bulk.parser().parse_args(command[3:])  # a usage mistake exits 1 here: SystemExit fails the test


@pytest.mark.parametrize("version", VERSIONS)
def test_every_document_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    docs = documents()
    assert {d["kind"] for d in docs} == {"PersistentVolumeClaim", "ResourceClaimTemplate", "Job"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def _set(path: tuple[str, ...], value: object) -> Callable[[list[dict]], None]:
    def change(docs: list[dict]) -> None:
        target = one(docs, "Job")
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _drop_container_name(docs: list[dict]) -> None:
    del container(docs, "bulk")["name"]


@pytest.mark.parametrize("change, expected", [
    (_set(("spec", "completions"), "8"), "is not of type"),  # a number as a string
    (_set(("spec", "template", "spec", "shareProcessNamespace"), "yes"), "is not of type"),
    (_set(("spec", "completionMode"), ["Indexed"]), "is not of type"),
    (_set(("spec", "completionsCount"), 8), "Additional properties"),  # a field Kubernetes lacks
    (_drop_container_name, "'name' is a required property"),
])
def test_the_schema_check_rejects_a_broken_job(change, expected: str) -> None:
    docs = copy.deepcopy(documents())
    change(docs)
    with pytest.raises(kubernetes_validate.ValidationError, match=expected):
        kubernetes_validate.validate(one(docs, "Job"), VERSIONS[0], strict=True)


def test_the_container_runs_a_framestream_command_that_parses_on_the_shared_volume() -> None:
    docs = documents()
    args = bulk_args(docs)
    c = container(docs, "bulk")
    (path,) = args.paths  # one directory: the shared volume's input
    data, out = mount(c, path), mount(c, str(args.out))
    assert data.get("readOnly") is True and not out.get("readOnly")
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod(docs)["volumes"]
              if "persistentVolumeClaim" in v}
    pvc = one(docs, "PersistentVolumeClaim")
    assert claims[data["name"]] == claims[out["name"]] == pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # every pod at once
    assert data.get("subPath") != out.get("subPath")  # results never land among the videos


def test_every_pod_is_one_shard_and_the_pods_are_every_shard() -> None:
    docs = documents()
    job = one(docs, "Job")["spec"]
    assert job["completionMode"] == "Indexed"  # Kubernetes sets JOB_COMPLETION_INDEX
    assert bulk_args(docs).shard is None  # --shard would override the pod's index
    env = {e["name"]: e["value"] for e in container(docs, "bulk")["env"]}
    assert "JOB_COMPLETION_INDEX" not in env  # set by Kubernetes per pod, never by hand
    shards = [shard_from_env({**env, "JOB_COMPLETION_INDEX": str(i)}) for i in range(job["completions"])]
    assert shards == [Shard(i, job["completions"]) for i in range(job["completions"])]
    assert 1 <= job["parallelism"] <= job["completions"]


def test_a_usage_error_fails_its_shard_without_retries() -> None:
    rules = one(documents(), "Job")["spec"]["podFailurePolicy"]["rules"]
    (rule,) = [r for r in rules if "onExitCodes" in r]
    assert rule["action"] == "FailIndex" and rule["onExitCodes"]["containerName"] == "bulk"
    assert rule["onExitCodes"]["operator"] == "In" and rule["onExitCodes"]["values"] == [bulk.EXIT_USAGE]


def test_the_client_reaches_the_triton_sidecar_on_the_pod_s_loopback() -> None:
    docs = documents()
    args, spec, triton = bulk_args(docs), pod(docs), container(docs, "triton")
    assert triton in spec["initContainers"] and triton["restartPolicy"] == "Always"  # a native sidecar
    host, _, port = args.server.rpartition(":")
    served = flags(triton["command"])
    assert host in LOOPBACK and port == served["grpc-port"]
    assert served["grpc-address"] in LOOPBACK
    probe = urlsplit(triton["startupProbe"]["exec"]["command"][-1])
    assert probe.hostname in LOOPBACK and str(probe.port) == served["http-port"]
    assert probe.path == "/v2/health/ready"
    if args.shm != "off":
        assert served["allow-client-shm"] == "true"
    if args.shm == "cuda":  # CUDA IPC: one GPU seen by both containers, one PID namespace
        assert spec["shareProcessNamespace"] is True
        both = [{c["name"] for c in container(docs, n)["resources"]["claims"]} for n in ("bulk", "triton")]
        assert both[0] == both[1] == {c["name"] for c in spec["resourceClaims"]}
        assert args.device == "gpu"


def test_images_and_the_model_repository_are_those_docker_compose_uses() -> None:
    docs = documents()
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    triton, init = container(docs, "triton"), container(docs, "model-init")
    assert triton["image"] == services["triton"]["image"]
    assert container(docs, "bulk")["image"] == services["bulk"]["image"]
    assert init["image"] == services["model-init"]["image"]
    assert init["command"] == services["model-init"]["command"]
    repository = flags(triton["command"])["model-repository"]
    assert repository == flags(services["triton"]["command"])["model-repository"]
    compose_mounts = dict(v.split(":")[:2] for v in services["model-init"]["volumes"])
    assert compose_mounts["model-repository"] == repository  # where model-init.sh writes
    assert mount(init, repository)["name"] == mount(triton, repository)["name"]
    assert mount(triton, repository).get("readOnly") is True
