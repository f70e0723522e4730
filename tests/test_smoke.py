"""`make smoke`: both services started exactly as their Dockerfiles' CMDs start them (same
working directories, same arguments), with the environment compose gives them, pointed at the
local MariaDB and RabbitMQ; one task submitted and followed to COMPLETED, and each image's
HEALTHCHECK command run against the live processes."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from common.settings import Settings
from testkit.deployment import APP_SERVICES, ROOT, compose_environment, read_dockerfile
from testkit.polling import wait_until
from testkit.processes import api_client, free_port
from testkit.scratch import scratch_environment, service_environment

pytestmark = pytest.mark.integration

# Where compose's values name the stack's own hosts and credentials, the local ones go instead.
POINTED_AT_LOCAL = (
    "DATABASE_URL",
    "RABBITMQ_HOST",
    "RABBITMQ_PORT",
    "RABBITMQ_USER",
    "RABBITMQ_PASSWORD",
    "RABBITMQ_VHOST",
)


@pytest.fixture(scope="module")
async def local() -> AsyncIterator[Settings]:
    async with scratch_environment() as settings:
        yield settings


def container_environment(service: str, local: Settings) -> dict[str, str]:
    dockerfile = read_dockerfile(ROOT / APP_SERVICES[service] / "Dockerfile")
    env = {name: value for name, value in dockerfile.env.items() if "$" not in value}
    env |= compose_environment(service)
    local_env = service_environment(local)
    env |= {name: local_env[name] for name in POINTED_AT_LOCAL}
    # Loopback instead of the images' 0.0.0.0, and free ports: this machine is shared.
    env |= {"API_HOST": "127.0.0.1", "API_PORT": str(local.api_port)}
    env |= {"WORKER_HEALTH_HOST": "127.0.0.1", "WORKER_HEALTH_PORT": str(local.worker_health_port)}
    env |= {"PYTHONPATH": str(ROOT)}
    return {**local_env, **env} | {"PATH": local_env.get("PATH", "/usr/bin:/bin")}


@pytest.fixture(scope="module")
def stack(
    local: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("smoke")
    local = local.model_copy(update={"api_port": free_port(), "worker_health_port": free_port()})
    envs = {service: container_environment(service, local) for service in APP_SERVICES}
    with contextlib.ExitStack() as running:
        for service, directory in APP_SERVICES.items():
            dockerfile = read_dockerfile(ROOT / directory / "Dockerfile")
            cwd = ROOT / Path(dockerfile.workdir).relative_to("/app")
            command = [sys.executable, *dockerfile.cmd[1:]]  # "python" is the venv's here
            log = running.enter_context((tmp / f"{service}.log").open("wb"))
            process = running.enter_context(
                subprocess.Popen(command, cwd=cwd, env=envs[service], stdout=log, stderr=log)
            )
            running.callback(process.terminate)  # runs before Popen's exit waits for it
        yield envs


def healthcheck(service: str, env: dict[str, str]) -> int:
    """Run the image's HEALTHCHECK command, with this interpreter as its python."""
    command = read_dockerfile(ROOT / APP_SERVICES[service] / "Dockerfile").healthcheck
    return subprocess.run(
        [sys.executable, *command[1:]], env=env, timeout=30, check=False
    ).returncode


async def test_one_task_goes_through_the_services_as_the_containers_run_them(
    stack: dict[str, dict[str, str]],
) -> None:
    api_env = stack["api_service"]
    base_url = f"http://127.0.0.1:{api_env['API_PORT']}"
    async with api_client(base_url) as client:

        async def api_healthy() -> bool:
            return healthcheck("api_service", api_env) == 0

        await wait_until(api_healthy, timeout=60, interval=0.5, what="the API's HEALTHCHECK")
        response = await client.post("/api/tasks", json={"title": "smoke", "description": "test"})
        assert response.status_code == 202
        task_id = response.json()["task_id"]

        async def completed() -> bool:
            status: str = (await client.get(f"/api/tasks/{task_id}")).json()["status"]
            return status == "COMPLETED"

        # compose's default simulated work takes 5-10 s
        await wait_until(completed, timeout=60, interval=0.5, what="COMPLETED")

    async def worker_healthy() -> bool:
        return healthcheck("worker_service", stack["worker_service"]) == 0

    await wait_until(worker_healthy, timeout=30, interval=0.5, what="the worker's HEALTHCHECK")
