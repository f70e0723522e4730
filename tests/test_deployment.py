"""docker-compose.yml, the Dockerfiles, the settings and .env.example held against each other."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from common.settings import Settings
from testkit.deployment import (
    APP_SERVICES,
    ROOT,
    compose_environment,
    env_example,
    load_compose,
    read_dockerfile,
)

pytestmark = pytest.mark.unit

SETTINGS = {name.upper() for name in Settings.model_fields}
# Read by the test helpers in the API image only (testkit/scratch.py), not by the services: the
# management API, and the users the in-container tests make their scratch database and vhost as.
TEST_ONLY = {
    "RABBITMQ_MANAGEMENT_URL",
    "RABBITMQ_ADMIN_USER",
    "RABBITMQ_ADMIN_PASSWORD",
    "MYSQL_TEST_USER",
    "MYSQL_TEST_PASSWORD",
}
# Every container built from our Dockerfiles, by the Dockerfile it is built from.
IMAGE_SERVICES = {
    "api_service": "api-service/Dockerfile",
    "worker_service": "worker-service/Dockerfile",
    "webhook_sender": "api-service/Dockerfile",
    "migrate": "api-service/Dockerfile",
    # The cluster profile's (tests/test_compose_cluster.py).
    "api_replica": "api-service/Dockerfile",
    "worker_replica": "worker-service/Dockerfile",
}
DML = {"SELECT", "INSERT", "UPDATE", "DELETE"}
# GRANT <privileges> ON <target> TO '${<shell variable>}' in the MySQL init scripts.
_GRANT = re.compile(r"^GRANT ([A-Z, ]+?) ON (\S+) TO '\$\{(\w+)\}'", re.M)
# What each stand-in image is known to ship, for the healthchecks compose runs inside them.
IMAGE_COMMANDS = {
    "mysql:8.4": {"mysqladmin", "mysql"},
    "rabbitmq:4-management": {"rabbitmq-diagnostics", "rabbitmqctl"},
}


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_compose_passes_only_variables_the_settings_read(service: str) -> None:
    unknown = set(compose_environment(service)) - SETTINGS - TEST_ONLY
    assert not unknown, f"{service} gets variables no setting reads: {unknown}"


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_compose_sets_every_setting_without_a_default(service: str) -> None:
    required = {name.upper() for name, f in Settings.model_fields.items() if f.is_required()}
    assert required <= set(compose_environment(service))


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_compose_environment_is_valid_for_the_settings(service: str) -> None:
    environment = compose_environment(service)
    image_env = read_dockerfile(ROOT / APP_SERVICES[service] / "Dockerfile").env
    values = {
        name.lower(): value
        for name, value in {**image_env, **environment}.items()
        if name in SETTINGS
    }
    Settings.model_validate(values)  # raises on anything the service would refuse at start


def test_both_services_declare_the_queues_with_the_same_arguments() -> None:
    api, worker = compose_environment("api_service"), compose_environment("worker_service")
    shared = [name for name in SETTINGS if name.startswith(("TASK_QUEUE", "RETRY_BACKOFF"))]
    for name in [*shared, "MAX_ATTEMPTS", "RABBITMQ_VHOST"]:
        assert api.get(name) == worker.get(name), name


def test_env_example_lists_every_setting() -> None:
    listed = set(env_example())
    assert not SETTINGS - listed, f"missing from .env.example: {SETTINGS - listed}"


def test_every_default_in_env_example_matches_the_settings() -> None:
    listed = env_example()
    for name in SETTINGS:
        value = Settings.model_fields[name.lower()].default
        expected = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        if expected is None:  # unset by default: an empty value in .env.example
            assert listed[name] == "", name
            continue
        parsed = type(expected)(listed[name]) if not isinstance(expected, str) else listed[name]
        assert parsed == expected, name


@pytest.mark.parametrize(("service", "directory"), sorted(APP_SERVICES.items()))
def test_dockerfile_cmd_runs_a_file_that_exists(service: str, directory: str) -> None:
    dockerfile = read_dockerfile(ROOT / directory / "Dockerfile")
    program, script = dockerfile.cmd
    assert program == "python"
    in_image = Path(dockerfile.workdir) / script
    assert in_image.is_relative_to("/app")
    assert (ROOT / in_image.relative_to("/app")).is_file()


def healthcheck_request(service: str) -> tuple[str, str, str]:
    """The image's HEALTHCHECK, a python one-liner: the variable naming its port, that
    variable's default there, and the path it asks."""
    code = read_dockerfile(ROOT / APP_SERVICES[service] / "Dockerfile").healthcheck[-1]
    compile(code, "healthcheck", "exec")
    [(variable, default)] = re.findall(r"os\.environ\.get\('([A-Z_]+)', '(\d+)'\)", code)
    [path] = re.findall(r"'(/[a-z/]+)'", code)
    return variable, default, path


def test_api_healthcheck_asks_its_live_route_on_the_api_port() -> None:
    variable, default, path = healthcheck_request("api_service")
    assert (variable, default) == ("API_PORT", str(Settings.model_fields["api_port"].default))
    # Liveness: an API whose database or broker is away still answers, and recovers by itself.
    assert path == "/health/live"
    openapi = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert path in openapi["paths"]


def test_worker_healthcheck_asks_its_ready_route_on_the_health_port() -> None:
    variable, default, path = healthcheck_request("worker_service")
    assert variable == "WORKER_HEALTH_PORT" in SETTINGS
    assert default == str(Settings.model_fields["worker_health_port"].default)
    assert path == "/health/ready"
    assert f'"{path}"' in (ROOT / "worker-service" / "src" / "api" / "health.py").read_text()
    # Reachable from outside the container, on a port the HEALTHCHECK can know (not 0).
    assert read_dockerfile(ROOT / "worker-service" / "Dockerfile").env["WORKER_HEALTH_HOST"] == (
        "0.0.0.0"
    )
    assert int(compose_environment("worker_service")[variable]) > 0


@pytest.mark.parametrize("service", ["mysql_db", "rabbitmq"])
def test_compose_healthchecks_use_commands_their_images_ship(service: str) -> None:
    definition = load_compose()["services"][service]
    test = definition["healthcheck"]["test"]
    command = test[1].split()[0] if test[0] == "CMD-SHELL" else test[1]
    assert command in IMAGE_COMMANDS[definition["image"]]


def test_app_images_run_as_non_root_on_a_slim_python() -> None:
    for directory in APP_SERVICES.values():
        text = (ROOT / directory / "Dockerfile").read_text()
        assert re.search(r"^USER (?!root|0\b)\S+", text, re.M)
        assert all(
            base.startswith("python:3.12-slim")
            for base in read_dockerfile(ROOT / directory / "Dockerfile").bases
        )


def test_worker_can_scale_and_data_survives_recreation() -> None:
    compose = load_compose()
    worker = compose["services"]["worker_service"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert compose["services"]["rabbitmq"].get("hostname")
    volumes = " ".join(
        str(v) for s in ("mysql_db", "rabbitmq") for v in compose["services"][s]["volumes"]
    )
    assert "mysql_data:/var/lib/mysql" in volumes
    assert "rabbitmq_data:/var/lib/rabbitmq" in volumes
    for name in ("mysql_db", "rabbitmq"):
        assert all(str(p).startswith("127.0.0.1:") for p in compose["services"][name]["ports"])


def test_the_webhook_sender_runs_from_the_api_image_with_the_apis_webhook_settings() -> None:
    sender = load_compose()["services"]["webhook_sender"]
    assert sender["build"]["dockerfile"] == "api-service/Dockerfile"
    interpreter, script = sender["command"]
    in_image = Path(read_dockerfile(ROOT / "api-service" / "Dockerfile").workdir) / script
    assert interpreter == "python"
    assert in_image.name == "sender.py"
    assert (ROOT / in_image.relative_to("/app")).is_file()
    environment = compose_environment("webhook_sender")
    assert not set(environment) - SETTINGS - TEST_ONLY
    Settings.model_validate({n.lower(): v for n, v in environment.items() if n in SETTINGS})
    # The API refuses callback URLs with the same allow-list the sender connects with.
    api = compose_environment("api_service")
    for name in ("WEBHOOK_SECRET", "WEBHOOK_SECRET_PREVIOUS", "WEBHOOK_ALLOWED_HOSTS"):
        assert api[name] == environment[name], name


def test_every_container_of_our_images_runs_read_only_with_a_tmpfs_for_tmp() -> None:
    services = load_compose()["services"]
    built = {name for name, service in services.items() if "build" in service}
    assert built == set(IMAGE_SERVICES)
    for name, dockerfile in IMAGE_SERVICES.items():
        service = services[name]
        assert service["build"]["dockerfile"] == dockerfile, name
        assert service.get("read_only") is True, name
        assert any(str(mount).split(":")[0] == "/tmp" for mount in service["tmpfs"]), name
        assert "user" not in service, f"{name}: the image's USER applies"


@pytest.mark.parametrize("dockerfile", sorted(set(IMAGE_SERVICES.values())))
def test_our_images_run_as_non_root_and_cannot_change_their_code(dockerfile: str) -> None:
    text = re.sub(r"\\\n", " ", (ROOT / dockerfile).read_text())
    final_stage = re.split(r"^FROM .*$", text, flags=re.M)[-1]
    users = re.findall(r"^USER (\S+)", final_stage, re.M)
    assert users, "no USER in the final stage"
    assert users[-1].split(":")[0] not in {"root", "0"}
    # The code stays root's: the user the image runs as may read it, not rewrite it.
    assert "--chown" not in final_stage


def test_only_the_api_container_gets_the_test_credentials() -> None:
    secrets = {name for name in TEST_ONLY if "PASSWORD" in name or "USER" in name}
    assert secrets <= set(compose_environment("api_service"))
    for name in IMAGE_SERVICES.keys() - {"api_service"}:
        assert not secrets & set(compose_environment(name)), name
    scratch = (ROOT / "testkit" / "scratch.py").read_text()
    assert all(f'"{name}"' in scratch for name in TEST_ONLY)


def rabbitmq_definitions() -> dict[str, Any]:
    """rabbitmq/definitions.json, the template rabbitmq/definitions.sh fills in: placeholders
    such as @APP_USER@ stand for the values Compose gives the rabbitmq container."""
    document: dict[str, Any] = json.loads((ROOT / "rabbitmq" / "definitions.json").read_text())
    return document


def test_rabbitmq_gets_its_users_from_the_definitions_and_not_the_images_default_user() -> None:
    rabbitmq = load_compose()["services"]["rabbitmq"]
    environment = compose_environment("rabbitmq")
    # The image would make RABBITMQ_DEFAULT_USER an administrator.
    assert not {"RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"} & set(environment)
    interpreter, script = rabbitmq["entrypoint"]
    assert interpreter == "bash"
    mounts = dict(str(volume).split(":")[1::-1] for volume in rabbitmq["volumes"])
    assert mounts[script] == "./rabbitmq/definitions.sh"
    template = re.search(r"TEMPLATE:-(\S+)\}", (ROOT / "rabbitmq" / "definitions.sh").read_text())
    assert template is not None
    assert mounts[template[1]] == "./rabbitmq/definitions.json"
    placeholders = set(re.findall(r"@([A-Z_]+)@", json.dumps(rabbitmq_definitions())))
    assert all(environment[name] for name in placeholders)


@pytest.mark.parametrize("service", sorted(IMAGE_SERVICES.keys() - {"migrate"}))
def test_the_services_rabbitmq_user_is_no_administrator(service: str) -> None:
    broker, app = compose_environment("rabbitmq"), compose_environment(service)
    assert (broker["APP_USER"], broker["APP_PASSWORD"]) == (
        app["RABBITMQ_USER"],
        app["RABBITMQ_PASSWORD"],
    )
    assert broker["APP_VHOST"] == app["RABBITMQ_VHOST"]
    assert broker["ADMIN_USER"] != broker["APP_USER"]
    definitions = rabbitmq_definitions()
    users = {user["name"]: user for user in definitions["users"]}
    assert users["@APP_USER@"]["tags"] == []
    assert users["@ADMIN_USER@"]["tags"] == ["administrator"]
    granted = [p for p in definitions["permissions"] if p["user"] == "@APP_USER@"]
    assert [p["vhost"] for p in granted] == ["@APP_VHOST@"]
    assert [v["name"] for v in definitions["vhosts"]] == ["@APP_VHOST@"]


def mysql_grants() -> dict[str, list[tuple[set[str], str]]]:
    """The GRANTs of the MySQL init scripts, by the shell variable naming the grantee."""
    found: dict[str, list[tuple[set[str], str]]] = {}
    for script in ("users.sh", "test-grants.sh"):
        for privileges, target, grantee in _GRANT.findall((ROOT / "db" / script).read_text()):
            found.setdefault(grantee, []).append(
                ({p.strip() for p in privileges.split(",")}, target)
            )
    return found


def test_mysql_runs_the_init_scripts_that_set_up_its_users_in_order() -> None:
    volumes = [str(volume) for volume in load_compose()["services"]["mysql_db"]["volumes"]]
    scripts = {
        target: source
        for source, target, *_ in (volume.split(":") for volume in volumes)
        if target.startswith("/docker-entrypoint-initdb.d/")
    }
    assert [scripts[target] for target in sorted(scripts)] == [
        "./db/init.sql",
        "./db/users.sh",
        "./db/test-grants.sh",
    ]


def test_the_services_mysql_user_may_only_read_and_write_rows_of_its_database() -> None:
    users = (ROOT / "db" / "users.sh").read_text()
    assert 'app=$(sql_string "$MYSQL_USER")' in users
    # The image grants MYSQL_USER ALL on MYSQL_DATABASE: that goes first, at every level.
    revoke = users.index("REVOKE ALL PRIVILEGES, GRANT OPTION FROM '${app}'@'%';")
    assert revoke < users.index("TO '${app}'")
    assert mysql_grants()["app"] == [(DML, "\\`${database}\\`.*")]
    for script in ("init.sql", "users.sh", "test-grants.sh"):
        text = (ROOT / "db" / script).read_text()
        assert not re.search(r"\bON\s+\*\.\*", text, re.I), f"{script}: a global grant"
        assert "WITH GRANT OPTION" not in text.upper(), script
    for service in IMAGE_SERVICES.keys() - {"migrate"}:
        url = compose_environment(service)["DATABASE_URL"]
        assert url.startswith(f"mysql://{compose_environment('mysql_db')['MYSQL_USER']}:"), service


def test_migrations_and_tests_use_users_of_their_own() -> None:
    grants = mysql_grants()
    [(migrator, database)] = grants["migrator"]
    assert database == "\\`${database}\\`.*"
    assert DML < migrator <= DML | {"CREATE", "ALTER", "DROP", "INDEX", "REFERENCES"}
    assert grants["tester"] == [({"ALL PRIVILEGES"}, "\\`tasks\\\\_test\\\\_%\\`.*")]
    assert set(grants) == {"app", "migrator", "tester"}
    mysql = compose_environment("mysql_db")
    assert len({mysql["MYSQL_USER"], mysql["MYSQL_MIGRATE_USER"], mysql["MYSQL_TEST_USER"]}) == 3
    migrate_url = compose_environment("migrate")["DATABASE_URL"]
    assert migrate_url.startswith(f"mysql://{mysql['MYSQL_MIGRATE_USER']}:")
    assert compose_environment("api_service")["MYSQL_TEST_USER"] == mysql["MYSQL_TEST_USER"]


def test_env_example_lists_every_variable_compose_substitutes() -> None:
    listed = set(env_example())
    substituted = set(re.findall(r"\$\{([A-Z0-9_]+)", json.dumps(load_compose())))
    assert not substituted - listed, f"missing from .env.example: {substituted - listed}"
