"""The cluster profile (`docker compose --profile cluster up`) held against the default stack,
the settings and its own config files: the RabbitMQ nodes' static list names the node services,
the replicas reach every node and are otherwise the default services, HAProxy balances the API
replicas on their ready route, and `docker compose up` starts what it started before.
docs/scaling.md has the profile run for real."""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Any

import pytest
from test_deployment import SETTINGS, TEST_ONLY  # the setting names, the in-container test users

from common.settings import Settings
from testkit.deployment import ROOT, compose_environment, load_compose, read_dockerfile, substitute

pytestmark = pytest.mark.unit

PROFILE = "cluster"
DEFAULT_SERVICES = {
    "mysql_db",
    "rabbitmq",
    "migrate",
    "api_service",
    "worker_service",
    "webhook_sender",
}
NODES = ("rabbitmq1", "rabbitmq2", "rabbitmq3")
# Each replica service: the default service it runs on the cluster, and how many of it.
REPLICAS = {"api_replica": ("api_service", 2), "worker_replica": ("worker_service", 3)}
PROXY = "api_proxy"
CLUSTER_DIR = ROOT / "rabbitmq" / "cluster"
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
HAPROXY_CONFIG_IN_IMAGE = "/usr/local/etc/haproxy/haproxy.cfg"
AMQP_PORT = 5672
_NODE_ENTRY = re.compile(r"cluster_formation\.classic_config\.nodes\.(\d+)")


def services() -> dict[str, Any]:
    found: dict[str, Any] = load_compose()["services"]
    return found


def cluster_conf() -> dict[str, str]:
    """rabbitmq/cluster/cluster.conf (rabbitmq.conf's `key = value` format) as a dict."""
    entries = {}
    for line in (CLUSTER_DIR / "cluster.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            entries[key.strip()] = value.strip()
    return entries


def listed_nodes() -> list[str]:
    """The static node list, in its order."""
    numbered = [
        (int(match[1]), value)
        for key, value in cluster_conf().items()
        if (match := _NODE_ENTRY.fullmatch(key))
    ]
    return [value for _, value in sorted(numbered)]


def haproxy_sections() -> dict[str, list[list[str]]]:
    """deploy/haproxy/haproxy.cfg: each section ("backend api_replicas") with its lines, as words."""
    sections: dict[str, list[list[str]]] = {}
    current: list[list[str]] = []
    for line in HAPROXY_CONFIG.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if line[0].isspace():
            current.append(words)
        else:
            current = sections.setdefault(" ".join(words), [])
    return sections


def mounts(service: str) -> dict[str, str]:
    """Each bind mount of `service`: the container path by the repository path."""
    found = {}
    for volume in services()[service].get("volumes", []):
        source, target, *_ = str(volume).split(":")
        if source.startswith("./"):
            found[source] = target
    return found


def published_host_ports(service: str) -> list[str]:
    """host_ip:port of each published port, with every variable at its default."""
    found = []
    for port in services()[service].get("ports", []):
        *host, _container = substitute(str(port)).split(":")
        found.append(":".join(host) if len(host) == 2 else f"0.0.0.0:{host[0]}")
    return found


def test_the_cluster_services_start_only_with_their_profile() -> None:
    by_profile = {name: s.get("profiles", []) for name, s in services().items()}
    assert {name for name, profiles in by_profile.items() if not profiles} == DEFAULT_SERVICES
    cluster = {name for name, profiles in by_profile.items() if PROFILE in profiles}
    assert cluster == {*NODES, *REPLICAS, PROXY}
    for name in cluster:
        assert by_profile[name] == [PROFILE], name
        assert "backend" in services()[name]["networks"], name


def test_the_static_node_list_names_the_node_services() -> None:
    conf = cluster_conf()
    assert conf["cluster_formation.peer_discovery_backend"] == "classic_config"
    # Each node is rabbit@<its hostname>, and its hostname is its service name, which the others
    # (and the replicas) resolve on the network.
    assert listed_nodes() == [f"rabbit@{node}" for node in NODES]
    for node in NODES:
        assert services()[node]["hostname"] == node
        assert compose_environment(node)["RABBITMQ_NODENAME"] == f"rabbit@{node}"


def test_the_nodes_run_the_single_nodes_definitions_with_one_cookie() -> None:
    single, single_mounts = compose_environment("rabbitmq"), mounts("rabbitmq")
    cookies = set()
    for node in NODES:
        environment, node_mounts = compose_environment(node), mounts(node)
        assert {name: environment[name] for name in single} == single, node
        assert services()[node]["image"] == services()["rabbitmq"]["image"], node
        assert {source: node_mounts[source] for source in single_mounts} == single_mounts, node
        assert f"{node}_data:/var/lib/rabbitmq" in services()[node]["volumes"], node
        # The entrypoint and the healthcheck are the scripts of the mounted rabbitmq/cluster/.
        directory = node_mounts["./rabbitmq/cluster"]
        interpreter, entrypoint = services()[node]["entrypoint"]
        assert (interpreter, entrypoint) == ("bash", f"{directory}/node.sh"), node
        assert services()[node]["healthcheck"]["test"] == [
            "CMD",
            "bash",
            f"{directory}/healthcheck.sh",
        ], node
        # Its advanced.config is ours (empty), not whatever the image ships.
        advanced = PurePosixPath(environment["RABBITMQ_ADVANCED_CONFIG_FILE"])
        assert advanced.parent == PurePosixPath(directory), node
        assert (CLUSTER_DIR / advanced.name).is_file(), node
        cookies.add(environment["RABBITMQ_CLUSTER_COOKIE"])
    (cookie,) = cookies
    # From .env, with a development default node.sh accepts.
    raw = services()["rabbitmq1"]["environment"]["RABBITMQ_CLUSTER_COOKIE"]
    assert raw.startswith("${RABBITMQ_CLUSTER_COOKIE:-")
    assert "[A-Za-z0-9_-]{20,255}" in (CLUSTER_DIR / "node.sh").read_text()
    assert re.fullmatch(r"[A-Za-z0-9_-]{20,255}", cookie)
    # node.sh hands over to definitions.sh, beside the mounted directory.
    assert '"$HERE/../definitions.sh"' in (CLUSTER_DIR / "node.sh").read_text()
    beside = PurePosixPath(directory).parent / "definitions.sh"
    assert single_mounts["./rabbitmq/definitions.sh"] == str(beside)


def test_the_nodes_start_together_and_the_replicas_once_all_of_them_are_healthy() -> None:
    # Blank nodes lock before they look for peers: none needs to wait for another (and one
    # waiting for a node that was not the last to stop would wait for ever).
    for node in NODES:
        assert "depends_on" not in services()[node], node
    for replica in REPLICAS:
        depends_on = services()[replica]["depends_on"]
        for node in (*NODES, "mysql_db"):
            assert depends_on[node] == {"condition": "service_healthy"}, (replica, node)
        assert depends_on["migrate"] == {"condition": "service_completed_successfully"}
        assert "rabbitmq" not in depends_on, replica
    assert services()[PROXY]["depends_on"] == {"api_replica": {"condition": "service_healthy"}}


@pytest.mark.parametrize("replica", sorted(REPLICAS))
def test_the_replicas_reach_every_node_through_rabbitmq_hosts(replica: str) -> None:
    environment = compose_environment(replica)
    assert {"RABBITMQ_HOSTS", "RABBITMQ_HOST"} <= SETTINGS
    entries = [entry.rpartition(":") for entry in environment["RABBITMQ_HOSTS"].split(",")]
    assert [(host, int(port)) for host, _, port in entries] == [(n, AMQP_PORT) for n in NODES]
    assert environment["RABBITMQ_HOST"] in NODES  # not the single node, whatever happens
    assert int(environment["RABBITMQ_PORT"]) == AMQP_PORT


@pytest.mark.parametrize("replica", sorted(REPLICAS))
def test_the_replicas_are_the_default_services_on_the_cluster(replica: str) -> None:
    default, count = REPLICAS[replica]
    ours, theirs = compose_environment(replica), compose_environment(default)
    differing = {name for name in ours.keys() | theirs.keys() if ours.get(name) != theirs.get(name)}
    assert differing == {"RABBITMQ_HOST", "RABBITMQ_HOSTS"} | (TEST_ONLY & theirs.keys())
    assert not set(ours) - SETTINGS, f"{replica} gets variables no setting reads"
    image_env = read_dockerfile(ROOT / services()[default]["build"]["dockerfile"]).env
    Settings.model_validate(
        {name.lower(): value for name, value in {**image_env, **ours}.items() if name in SETTINGS}
    )
    definition = services()[replica]
    assert definition["build"] == services()[default]["build"]
    assert definition["deploy"]["replicas"] == count
    assert not definition.get("ports"), "replicas publish nothing: the proxy is the way in"
    assert "container_name" not in definition


def test_every_worker_replica_answers_on_its_health_port() -> None:
    assert int(compose_environment("worker_replica")["WORKER_HEALTH_PORT"]) > 0
    assert "healthcheck" not in services()["worker_replica"]  # the image's, on that port


def test_the_proxy_balances_the_api_replicas_on_their_ready_route() -> None:
    sections = haproxy_sections()
    backend = sections["backend api_replicas"]
    assert ["balance", "roundrobin"] in backend
    assert ["option", "httpchk", "GET", "/health/ready"] in backend
    assert ["http-check", "expect", "status", "200"] in backend
    openapi = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert "/health/ready" in openapi["paths"]
    # One slot per API replica, at the replicas' service name (Docker's DNS gives each
    # replica's address) and the API's port, health-checked, found through that DNS.
    [template] = [line for line in backend if line[0] == "server-template"]
    _, _, slots, address, *options = template
    assert int(slots) == services()["api_replica"]["deploy"]["replicas"]
    host, _, port = address.rpartition(":")
    assert host == "api_replica"
    assert int(port) == Settings.model_fields["api_port"].default
    assert "API_PORT" not in compose_environment("api_replica")  # so the default it is
    assert "check" in options
    assert options[options.index("resolvers") + 1] == "docker"
    assert ["nameserver", "docker", "127.0.0.11:53"] in sections["resolvers docker"]
    # The frontend listens on the container port the proxy publishes.
    frontend = sections["frontend api"]
    assert ["default_backend", "api_replicas"] in frontend
    [[_, bind]] = [line for line in frontend if line[0] == "bind"]
    api_port = substitute(str(services()[PROXY]["ports"][0])).rsplit(":", 1)[1]
    assert bind == f":{api_port}"
    assert mounts(PROXY) == {"./deploy/haproxy/haproxy.cfg": HAPROXY_CONFIG_IN_IMAGE}


def test_the_profile_publishes_no_host_port_twice() -> None:
    # The services Compose starts with the profile: the default ones and the profile's.
    started = DEFAULT_SERVICES | {*NODES, *REPLICAS, PROXY}
    ports = [port for name in sorted(started) for port in published_host_ports(name)]
    assert len(ports) == len(set(ports)), ports
    assert not published_host_ports("rabbitmq1"), "the nodes are reached on the network only"
    # The proxy's status page is for this host only, as are the brokers' and MySQL's ports.
    stats = [port for port in published_host_ports(PROXY) if port.endswith(":8404")]
    assert stats == ["127.0.0.1:8404"]
