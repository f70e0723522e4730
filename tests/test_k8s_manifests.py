"""The Kubernetes manifests (deploy/k8s), as `kubectl kustomize` renders the base and the dev
overlay, held against the code: the settings, .env.example, the Dockerfiles, docker-compose.yml,
the services' routes and the queue topology. `make k8s-check` checks them against the schemas.

One test runs the init containers' script (deploy/k8s/base/wait_for_schema.py) against the real
database; the others need no services.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from common.amqp.topology import Topology
from common.mysql.revision import SCHEMA_REVISION
from common.settings import Settings
from testkit.deployment import ROOT, env_example, load_compose
from testkit.inprocess import load_main
from testkit.polling import wait_until
from testkit.processes import service_process
from testkit.scratch import service_environment
from testkit.sql import query

K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev"}
WAIT_SCRIPT = K8S / "base" / "wait_for_schema.py"
SETTINGS = {name.upper() for name in Settings.model_fields}
# .env.example's last section is docker compose's own (the MySQL and RabbitMQ containers'
# users, the published ports, Grafana): nothing a service reads, so nothing in the cluster.
COMPOSE_ONLY_SECTION = "# --- docker compose only"
# Where config.env differs from .env.example, each said why in config.env: addresses inside the
# cluster, every interface for the probes, JSON logs, and a CPU pool sized to the pod's limit.
IN_CLUSTER = {"RABBITMQ_HOST", "API_HOST", "WORKER_HEALTH_HOST", "LOG_FORMAT", "CPU_POOL_SIZE"}
# The images' user (USER 10001:10001 in both Dockerfiles).
IMAGE_USER = 10001

unit = pytest.mark.unit


# --- the rendered manifests ---------------------------------------------------------------


@functools.cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "kubectl not found: install kubectl 1.21 or later (this machine kind ships 1.32)"
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(KUSTOMIZATIONS[kustomization])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Debian 12's kubectl (1.20) carries a kustomize too old for these kustomizations.
    assert result.returncode == 0, (
        f"kubectl kustomize {kustomization} (needs kubectl 1.21 or later): {result.stderr}"
    )
    return tuple(document for document in yaml.safe_load_all(result.stdout) if document)


@pytest.fixture(params=sorted(KUSTOMIZATIONS))
def objects(request: pytest.FixtureRequest) -> tuple[dict[str, Any], ...]:
    return render(request.param)


def find(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    """The object of `kind` named `name` (or, for a generated one, `name` and its hash)."""
    found = [
        obj
        for obj in objects
        if obj["kind"] == kind
        and re.fullmatch(rf"{name}(-[a-z0-9]{{10}})?", obj["metadata"]["name"])
    ]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def config(objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    data: dict[str, str] = find(objects, "ConfigMap", "task-service-config")["data"]
    return data


def config_name(objects: tuple[dict[str, Any], ...]) -> str:
    name: str = find(objects, "ConfigMap", "task-service-config")["metadata"]["name"]
    return name


def secret_data(objects: tuple[dict[str, Any], ...], name: str) -> dict[str, str]:
    """The decoded data of the Secret `name` (generated: with its hash)."""
    data = find(objects, "Secret", name).get("data") or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def pod(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def workloads(objects: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] in ("Deployment", "Job")]


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in pod(workload)["containers"] if c["name"] == name]
    assert len(found) == 1, name
    return found[0]


def port_number(container: dict[str, Any], port: int | str) -> int:
    """A probe's or a Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def secret_refs(objects: tuple[dict[str, Any], ...]) -> set[tuple[str, str, str]]:
    """(environment variable, Secret, key) of every secretKeyRef in every container."""
    return {
        (env["name"], ref["name"], ref["key"])
        for workload in workloads(objects)
        for c in all_containers(pod(workload))
        for env in c.get("env", [])
        if (ref := env.get("valueFrom", {}).get("secretKeyRef"))
    }


def base_name(name: str) -> str:
    """A generated object's name without kustomize's hash suffix."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


# --- what the code says -------------------------------------------------------------------


def exposed_port(dockerfile: str) -> int:
    [port] = re.findall(r"^EXPOSE (\d+)$", (ROOT / dockerfile).read_text(), re.M)
    return int(port)


def api_paths() -> set[str]:
    """The API's GET routes, from its OpenAPI document (kept current by the API's tests)."""
    document = json.loads((ROOT / "docs" / "openapi.json").read_text())
    return {path for path, operations in document["paths"].items() if "get" in operations}


def worker_paths() -> set[str]:
    """The routes of the worker's health port, from its own route table."""
    main = load_main("worker-service")
    return set(main.health_routes(readiness=None))


def settings_from(values: dict[str, str]) -> Settings:
    """The settings a process would start with, from these variables (raises if it would not)."""
    return Settings.model_validate({name.lower(): value for name, value in values.items()})


# --- configuration ------------------------------------------------------------------------


@unit
def test_the_configmap_and_the_secrets_hold_every_variable_of_env_example(
    objects: tuple[dict[str, Any], ...],
) -> None:
    configured = set(config(objects))
    secret = {variable for variable, _, _ in secret_refs(objects)}
    assert not configured & secret, "a variable both in the ConfigMap and from a Secret"
    assert configured | secret == set(env_example(before=COMPOSE_ONLY_SECTION))


@unit
def test_the_configmap_has_env_example_values_except_in_cluster_ones(
    objects: tuple[dict[str, Any], ...],
) -> None:
    example = env_example(before=COMPOSE_ONLY_SECTION)
    changed = {name for name, value in config(objects).items() if value != example[name]}
    assert changed <= IN_CLUSTER, f"not .env.example's values: {changed - IN_CLUSTER}"


@unit
def test_every_variable_a_pod_gets_is_a_setting(objects: tuple[dict[str, Any], ...]) -> None:
    names = set(config(objects)) | {variable for variable, _, _ in secret_refs(objects)}
    for workload in workloads(objects):
        for c in all_containers(pod(workload)):
            names |= {env["name"] for env in c.get("env", [])}
            assert [ref["configMapRef"]["name"] for ref in c["envFrom"]] == [
                config_name(objects)
            ], f"{c['name']}: the ConfigMap, whole"
    assert names <= SETTINGS, f"no setting reads {names - SETTINGS}"


@unit
def test_the_dev_overlay_configures_services_that_start() -> None:
    objects = render("dev")
    services = secret_data(objects, "task-service-secrets")
    settings = settings_from({**config(objects), **services})
    assert settings.webhook_secret is not None, "the dev sender would exit at once"
    migrate = secret_data(objects, "task-service-migrate")
    assert settings_from({**config(objects), **migrate}).database.user != settings.database.user


@unit
def test_every_reference_of_the_dev_overlay_resolves() -> None:
    objects = render("dev")
    names = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
    for variable, secret, key in secret_refs(objects):
        assert ("Secret", secret) in names, f"{variable}: no Secret {secret}"
        assert key in secret_data(objects, base_name(secret)), f"{variable}: no {key} in {secret}"
    for workload in workloads(objects):
        for volume in pod(workload)["volumes"]:
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names
    # Each Secret holds what the pods read from it, nothing more.
    for obj in objects:
        if obj["kind"] == "Secret":
            read = {
                key for _, secret, key in secret_refs(objects) if secret == obj["metadata"]["name"]
            }
            assert set(obj["data"]) == read, obj["metadata"]["name"]


@unit
def test_the_base_brings_no_secret() -> None:
    assert not [obj for obj in render("base") if obj["kind"] == "Secret"]


# --- the API --------------------------------------------------------------------------------


@unit
def test_the_api_listens_where_its_probes_and_service_look(
    objects: tuple[dict[str, Any], ...],
) -> None:
    api = container(find(objects, "Deployment", "task-api"), "api")
    port = int(config(objects)["API_PORT"])
    compose_port = int(load_compose()["services"]["api_service"]["ports"][0].rsplit(":", 1)[1])
    assert port == Settings().api_port == exposed_port("api-service/Dockerfile") == compose_port
    assert port_number(api, "http") == port
    assert config(objects)["API_HOST"] == "0.0.0.0"  # the kubelet probes from outside
    paths = api_paths()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert port_number(api, api[probe]["httpGet"]["port"]) == port, probe
        assert api[probe]["httpGet"]["path"] in paths, probe
    assert api["livenessProbe"]["httpGet"]["path"] == "/health/live"  # never asks a backend
    assert api["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    service = find(objects, "Service", "task-api")
    assert [port_number(api, p["targetPort"]) for p in service["spec"]["ports"]] == [port]


@unit
def test_the_api_finishes_its_requests_before_it_is_killed(
    objects: tuple[dict[str, Any], ...],
) -> None:
    api = find(objects, "Deployment", "task-api")
    pause = container(api, "api")["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    grace = float(config(objects)["API_SHUTDOWN_GRACE_SECONDS"]) + float(pause[1])
    assert pod(api)["terminationGracePeriodSeconds"] > grace


@unit
def test_the_api_runs_the_image_command_as_compose_does(
    objects: tuple[dict[str, Any], ...],
) -> None:
    api = container(find(objects, "Deployment", "task-api"), "api")
    assert "command" not in api
    assert "args" not in api
    assert "command" not in load_compose()["services"]["api_service"]


@unit
def test_the_disruption_budget_and_the_service_select_the_api_pods(
    objects: tuple[dict[str, Any], ...],
) -> None:
    labels = find(objects, "Deployment", "task-api")["spec"]["template"]["metadata"]["labels"]
    budget = find(objects, "PodDisruptionBudget", "task-api")["spec"]
    service = find(objects, "Service", "task-api")["spec"]
    for selector in (budget["selector"]["matchLabels"], service["selector"]):
        assert selector.items() <= labels.items()
    assert budget["maxUnavailable"] == 1


# --- the worker -----------------------------------------------------------------------------


@unit
def test_the_worker_probes_its_health_port(objects: tuple[dict[str, Any], ...]) -> None:
    worker = container(find(objects, "Deployment", "task-worker"), "worker")
    port = int(config(objects)["WORKER_HEALTH_PORT"])
    assert port == Settings().worker_health_port == exposed_port("worker-service/Dockerfile")
    assert port_number(worker, "health") == port
    assert config(objects)["WORKER_HEALTH_HOST"] == "0.0.0.0"  # probed from outside
    paths = worker_paths()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert port_number(worker, worker[probe]["httpGet"]["port"]) == port, probe
        assert worker[probe]["httpGet"]["path"] in paths, probe
    assert worker["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/health/ready"


@unit
def test_the_worker_is_given_longer_than_its_shutdown_grace(
    objects: tuple[dict[str, Any], ...],
) -> None:
    worker = find(objects, "Deployment", "task-worker")
    grace = float(config(objects)["WORKER_SHUTDOWN_GRACE_SECONDS"])
    assert pod(worker)["terminationGracePeriodSeconds"] > grace
    assert "replicas" not in worker["spec"], "KEDA's autoscaler owns the worker's replicas"


@unit
def test_the_cpu_pool_fits_the_worker_cpu_limit(objects: tuple[dict[str, Any], ...]) -> None:
    limit = container(find(objects, "Deployment", "task-worker"), "worker")["resources"]["limits"]
    cores = (
        float(limit["cpu"].removesuffix("m")) / 1000
        if limit["cpu"].endswith("m")
        else float(limit["cpu"])
    )
    assert 1 <= int(config(objects)["CPU_POOL_SIZE"]) <= max(1, int(cores))


@unit
def test_keda_scales_the_worker_on_the_work_queue(objects: tuple[dict[str, Any], ...]) -> None:
    scaled = find(objects, "ScaledObject", "task-worker")["spec"]
    worker = find(objects, "Deployment", "task-worker")
    values = config(objects)
    assert scaled["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert scaled["minReplicaCount"] == 1
    assert scaled["maxReplicaCount"] >= scaled["minReplicaCount"]
    [trigger] = scaled["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "rabbitmq"
    queue = Topology.from_settings(settings_from(values)).work_queue
    assert meta["queueName"] == queue == values["TASK_QUEUE"]
    assert meta["mode"] == "QueueLength"
    assert float(meta["value"]) > 0
    assert float(meta["activationValue"]) >= 0
    # KEDA connects from its own namespace: the host must name the namespace too.
    address = urlsplit(meta["host"])
    assert (address.scheme, address.hostname, address.port) == (
        "amqp",
        values["RABBITMQ_HOST"],
        int(values["RABBITMQ_PORT"]),
    )
    assert "." in values["RABBITMQ_HOST"], "a bare Service name resolves in KEDA's namespace"
    assert meta["vhostName"] == values["RABBITMQ_VHOST"]
    # The credentials: the worker container's own variables, which KEDA resolves.
    first = pod(worker)["containers"][0]
    names = {env["name"] for env in first["env"]}
    assert {meta["usernameFromEnv"], meta["passwordFromEnv"]} == {
        "RABBITMQ_USER",
        "RABBITMQ_PASSWORD",
    }
    assert {meta["usernameFromEnv"], meta["passwordFromEnv"]} <= names


# --- the webhook sender and the migration -----------------------------------------------------


@unit
def test_the_sender_runs_as_compose_runs_it(objects: tuple[dict[str, Any], ...]) -> None:
    sender = find(objects, "Deployment", "task-webhook-sender")
    api = container(find(objects, "Deployment", "task-api"), "api")
    compose = load_compose()["services"]["webhook_sender"]
    main = container(sender, "webhook-sender")
    assert main["args"] == compose["command"]
    assert main["image"] == api["image"]
    assert sender["spec"]["replicas"] == 1
    grace = float(config(objects)["WEBHOOK_TIMEOUT_SECONDS"])
    assert pod(sender)["terminationGracePeriodSeconds"] > grace


@unit
def test_the_migration_job_runs_compose_migrate_command(
    objects: tuple[dict[str, Any], ...],
) -> None:
    job = find(objects, "Job", "task-migrate")
    api = container(find(objects, "Deployment", "task-api"), "api")
    migrate = container(job, "migrate")
    assert migrate["args"] == load_compose()["services"]["migrate"]["command"]
    assert migrate["image"] == api["image"], "the API's image: the one with Alembic"
    [url] = [
        env["valueFrom"]["secretKeyRef"] for env in migrate["env"] if env["name"] == "DATABASE_URL"
    ]
    assert base_name(url["name"]) == "task-service-migrate", "the migration user, not the services'"
    assert pod(job)["restartPolicy"] == "Never"


@unit
def test_no_service_starts_before_the_schema_is_migrated(
    objects: tuple[dict[str, Any], ...],
) -> None:
    scripts = find(objects, "ConfigMap", "task-service-scripts")
    assert scripts["data"]["wait_for_schema.py"] == WAIT_SCRIPT.read_text()
    for workload in workloads(objects):
        if workload["kind"] != "Deployment":
            continue
        spec = pod(workload)
        [wait] = spec["initContainers"]
        assert wait["image"] == spec["containers"][0]["image"], "the revision of this image's code"
        assert wait["args"] == ["python", "/opt/task-service/wait_for_schema.py"]
        [mount] = wait["volumeMounts"]
        [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert mount["mountPath"] == "/opt/task-service"
        assert volume["configMap"]["name"] == scripts["metadata"]["name"]
        [url] = [
            env["valueFrom"]["secretKeyRef"] for env in wait["env"] if env["name"] == "DATABASE_URL"
        ]
        assert base_name(url["name"]) == "task-service-secrets", "the services' own user"


# --- every pod ------------------------------------------------------------------------------


@unit
def test_every_pod_runs_restricted_with_requests_and_limits(
    objects: tuple[dict[str, Any], ...],
) -> None:
    for workload in workloads(objects):
        spec = pod(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == IMAGE_USER
        assert spec["enableServiceLinks"] is False
        assert spec["automountServiceAccountToken"] is False
        for c in all_containers(spec):
            where = f"{workload['metadata']['name']}/{c['name']}"
            assert c["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, where
            for kind in ("requests", "limits"):
                assert set(c["resources"][kind]) == {"cpu", "memory"}, where
        for c in spec["containers"]:
            # The one writable place, as compose's tmpfs: the root filesystem is read-only.
            mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
            assert mounts.get("tmp") == "/tmp", c["name"]


# --- the init container's script, against the real database ------------------------------------


@pytest.mark.integration
async def test_the_init_container_waits_for_this_revision_then_exits(
    direct: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "wait.log"
    await query(direct.database, "UPDATE alembic_version SET version_num = '0001'")
    try:
        env = service_environment(direct)
        with service_process("worker-service", env, log, script=str(WAIT_SCRIPT)) as process:

            async def reported() -> bool:
                return "found=0001" in log.read_text()

            await wait_until(reported, timeout=30, what="the script to report revision 0001")
            assert process.poll() is None, log.read_text()
            await query(
                direct.database, "UPDATE alembic_version SET version_num = %s", SCHEMA_REVISION
            )
            code = await asyncio.to_thread(process.wait, 30)
    finally:
        await query(direct.database, "UPDATE alembic_version SET version_num = %s", SCHEMA_REVISION)
    assert code == 0, log.read_text()
    assert "schema at the revision this image needs" in log.read_text()
