"""testkit/backends.py, through which `make test` runs its suites: which backends answer, what
it then does (the decision, a pure function), the environment it gives the tests when it starts
Compose's containers, and running the command (its exit code kept, a SIGTERM passed on). The
container path itself needs a Docker engine; it is run by `make test` where nothing answers
(README, Testing)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from common.settings import load_settings
from testkit.backends import (
    AMQP_HEADER,
    COMPOSE_FILES,
    COMPOSE_VALUES,
    MANAGEMENT_PORT,
    PUBLISHED_PORTS,
    Plan,
    answers_amqp,
    answers_mysql,
    configured_backends,
    container_environment,
    decide,
    missing_message,
    run,
)
from testkit.deployment import ROOT, load_compose
from testkit.processes import free_port


def mysql_packet(payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + b"\x00" + payload


# A server's first packet: MariaDB's greeting (protocol 10), a refusal (an error packet) and
# RabbitMQ's connection.start.
MYSQL_GREETING = mysql_packet(b"\x0a5.5.5-10.11.6-MariaDB\x00\x2a\x00\x00\x00")
MYSQL_REFUSAL = mysql_packet(b"\xff\x69\x04Host '172.18.0.1' is blocked")
CONNECTION_START = b"\x01\x00\x00\x00\x00\x00\x08\x00\x0a\x00\x0a\x00\x09\xce"
QUICK = 0.3  # seconds: the probes' timeout where a server says nothing

Behaviour = Callable[[socket.socket], None]


@contextlib.contextmanager
def one_connection(behaviour: Behaviour) -> Iterator[int]:
    """A port of 127.0.0.1 where the first connection gets `behaviour`; its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError):
            connection, _ = listener.accept()
            with connection:
                behaviour(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(timeout=10)
        listener.close()


def until_closed(connection: socket.socket) -> None:
    connection.settimeout(10)
    while connection.recv(1024):
        pass


def greets(packet: bytes) -> Behaviour:
    def behaviour(connection: socket.socket) -> None:
        connection.sendall(packet)
        until_closed(connection)

    return behaviour


def answers_header(reply: bytes, *, then_close: bool = False) -> Behaviour:
    def behaviour(connection: socket.socket) -> None:
        connection.settimeout(10)
        header = b""
        while len(header) < len(AMQP_HEADER):
            chunk = connection.recv(len(AMQP_HEADER) - len(header))
            if not chunk:
                return
            header += chunk
        if header == AMQP_HEADER:
            connection.sendall(reply)
        if not then_close:
            until_closed(connection)

    return behaviour


def closes(connection: socket.socket) -> None:
    """As docker-proxy does on a published port while nothing listens behind it."""


@pytest.mark.unit
@pytest.mark.parametrize(
    ("behaviour", "mysql", "amqp"),
    [
        (greets(MYSQL_GREETING), True, False),
        (greets(MYSQL_REFUSAL), True, False),
        (answers_header(CONNECTION_START), False, True),
        # A broker of another protocol version answers with its own header and closes.
        (answers_header(b"AMQP\x00\x01\x00\x00", then_close=True), False, True),
        (closes, False, False),
        (until_closed, False, False),
    ],
    ids=["mysql", "mysql-refusing", "amqp", "amqp-other-version", "closes", "silent"],
)
def test_a_backend_answers_only_with_its_own_protocol(
    behaviour: Behaviour, mysql: bool, amqp: bool
) -> None:
    with one_connection(behaviour) as port:
        assert answers_mysql("127.0.0.1", port, timeout=QUICK) is mysql
    with one_connection(behaviour) as port:
        assert answers_amqp("127.0.0.1", port, timeout=QUICK) is amqp


@pytest.mark.unit
def test_nothing_listening_is_no_answer_at_once() -> None:
    port = free_port()
    started = time.monotonic()
    assert not answers_mysql("127.0.0.1", port)
    assert not answers_amqp("127.0.0.1", port)
    assert time.monotonic() - started < 1


@pytest.mark.unit
@pytest.mark.parametrize("docker", [True, False])
def test_when_both_answer_the_command_runs_as_it_is(docker: bool) -> None:
    assert decide({"mysql_db": True, "rabbitmq": True}, docker=docker) == Plan()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("database", "broker", "silent"),
    [
        (False, False, ("mysql_db", "rabbitmq")),
        (False, True, ("mysql_db",)),
        (True, False, ("rabbitmq",)),
    ],
)
def test_only_what_does_not_answer_is_started_or_missing(
    database: bool, broker: bool, silent: tuple[str, ...]
) -> None:
    answering = {"mysql_db": database, "rabbitmq": broker}
    assert decide(answering, docker=True) == Plan(start=silent)
    assert decide(answering, docker=False) == Plan(missing=silent)


@pytest.mark.unit
def test_the_missing_message_is_one_line_naming_what_and_where(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root@db.example:3399/tasks")
    monkeypatch.setenv("RABBITMQ_HOST", "mq.example")
    monkeypatch.setenv("RABBITMQ_PORT", "5699")
    backends = configured_backends(load_settings())
    line = missing_message(backends, ["rabbitmq"])
    assert "\n" not in line
    assert "RabbitMQ at mq.example:5699 (RABBITMQ_HOST, RABBITMQ_PORT)" in line
    assert "db.example" not in line
    assert "Docker" in line
    both = missing_message(backends, ["mysql_db", "rabbitmq"])
    assert "MariaDB/MySQL at db.example:3399 (DATABASE_URL) and RabbitMQ" in both
    # A cluster's nodes: the first one listed is where the services go first.
    monkeypatch.setenv("RABBITMQ_HOSTS", "mq1.example:5701,mq2.example:5702")
    _, cluster = configured_backends(load_settings())
    assert "RabbitMQ at mq1.example:5701 (RABBITMQ_HOSTS)" in missing_message(
        [cluster], ["rabbitmq"]
    )


PORTS = {"MYSQL_PUBLISHED_PORT": 41001, "RABBITMQ_PUBLISHED_PORT": 41002, MANAGEMENT_PORT: 41003}


@pytest.mark.unit
def test_the_tests_are_pointed_at_the_started_containers_only() -> None:
    broker = container_environment(["rabbitmq"], PORTS)
    assert not {"DATABASE_URL", "MYSQL_TEST_USER", "MYSQL_TEST_PASSWORD"} & set(broker)
    assert broker["RABBITMQ_HOST"] == "127.0.0.1"
    assert broker["RABBITMQ_PORT"] == "41002"
    assert broker["RABBITMQ_MANAGEMENT_URL"] == "http://127.0.0.1:41003"
    assert broker["RABBITMQ_ADMIN_USER"] == COMPOSE_VALUES["RABBITMQ_ADMIN_USER"]
    assert broker["RABBITMQ_USER"] == COMPOSE_VALUES["RABBITMQ_DEFAULT_USER"]
    database = container_environment(["mysql_db"], PORTS)
    assert set(database) == {"DATABASE_URL", "MYSQL_TEST_USER", "MYSQL_TEST_PASSWORD"}
    assert database["MYSQL_TEST_USER"] == COMPOSE_VALUES["MYSQL_TEST_USER"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATABASE_URL", database["DATABASE_URL"])
        address = load_settings().database
    assert (address.host, address.port, address.user) == ("127.0.0.1", 41001, "tasks")


@pytest.mark.unit
def test_the_compose_file_takes_the_ports_and_users_it_is_given() -> None:
    services = load_compose()["services"]
    published = {
        "mysql_db": [PUBLISHED_PORTS["mysql_db"]],
        "rabbitmq": [PUBLISHED_PORTS["rabbitmq"], MANAGEMENT_PORT],
    }
    for service, names in published.items():
        ports = [str(port).split(":-")[0] for port in services[service]["ports"]]
        assert ports == [f"127.0.0.1:${{{name}" for name in names], service
    given = str({name: services[name] for name in published})
    assert all(f"${{{name}:-" in given for name in COMPOSE_VALUES)
    override = yaml.safe_load((ROOT / COMPOSE_FILES[1]).read_text())["services"]
    assert set(override) <= set(published)
    assert all("ports" not in service for service in override.values())


@pytest.mark.unit
def test_without_docker_it_stops_at_once_with_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    env = {
        "PATH": str(tmp_path),  # no docker on it
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"mysql://root@127.0.0.1:{free_port()}/tasks",
        "RABBITMQ_PORT": str(free_port()),
    }
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "testkit.backends", "--", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - started < 10
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "MariaDB/MySQL at 127.0.0.1" in done.stderr
    assert "RabbitMQ at 127.0.0.1" in done.stderr
    assert not marker.exists()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("code", "expected"),
    [("sys.exit(0)", 0), ("sys.exit(3)", 3), ("os.kill(os.getpid(), signal.SIGTERM)", 143)],
)
def test_the_command_s_exit_code_is_kept(code: str, expected: int) -> None:
    command = [sys.executable, "-c", f"import os, signal, sys; {code}"]
    assert run(command, os.environ) == expected


@pytest.mark.unit
def test_a_sigterm_is_passed_on_to_the_command_and_its_code_kept(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    child = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(42))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )
    wrapper = (
        "import os, sys\n"
        "from testkit.backends import run\n"
        f"sys.exit(run([sys.executable, '-c', {child!r}], os.environ))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, "-c", wrapper], env=env) as process:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline, "the command did not start"
            assert process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 42


@pytest.mark.integration
def test_the_configured_backends_answer_and_only_with_their_own_protocol() -> None:
    database, broker = configured_backends(load_settings())
    assert answers_mysql(database.host, database.port)
    assert answers_amqp(broker.host, broker.port)
    assert not answers_amqp(database.host, database.port, timeout=QUICK)
    assert not answers_mysql(broker.host, broker.port, timeout=QUICK)


@pytest.mark.integration
def test_where_both_answer_the_command_runs_unchanged() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    show = "import json, os, sys; print(json.dumps(dict(os.environ))); sys.exit(7)"
    done = subprocess.run(
        [sys.executable, "-m", "testkit.backends", "--", sys.executable, "-c", show],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 7, done.stderr
    assert json.loads(done.stdout) == env
    assert done.stderr.endswith("answer: the tests use them\n")
