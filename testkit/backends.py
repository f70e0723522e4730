"""The MariaDB/MySQL and RabbitMQ a test run uses: the configured ones when they answer,
otherwise Compose's own, started for the run and removed after it (`make test` runs its three
suites through this).

    python -m testkit.backends -- COMMAND [ARG...]

Each backend is asked at the address the settings give it (DATABASE_URL; RABBITMQ_HOST and
RABBITMQ_PORT), with a short timeout and a real protocol exchange: a MySQL server's greeting,
a broker's answer to the AMQP protocol header. When both answer, this process becomes COMMAND,
which runs as it would alone. When one does not and a Docker engine with Compose answers, the
missing ones are started from docker-compose.yml (mysql_db, rabbitmq; testkit/compose.test.yml
over it) as a Compose project of their own, published on free ports of 127.0.0.1; once they are
healthy, COMMAND runs with the environment pointed at them (as the Compose file's users: the
scratch databases made as MYSQL_TEST_USER, the scratch vhosts through the management API), and
they are removed afterwards (`down -v`), after a failure or Ctrl-C too. The exit code is
COMMAND's. When a backend does not answer and there is no Docker, it stops at once with one
line saying what is missing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from common.errors import ConfigurationError
from common.settings import Settings, load_settings
from testkit.polling import wait_until
from testkit.processes import ROOT, free_port

PROBE_TIMEOUT_SECONDS = 2.0
START_TIMEOUT_SECONDS = 300.0
COMPOSE_FILES = ("docker-compose.yml", "testkit/compose.test.yml")
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
# An AMQP method frame on channel 0 carrying connection.start (class 10, method 10).
_CONNECTION_START = (b"\x01\x00\x00", b"\x00\x0a\x00\x0a")

# What Compose substitutes into mysql_db and rabbitmq, given in its environment so that a .env
# cannot change them (the shell's values win over .env's): the users the tests then connect as.
COMPOSE_VALUES = {
    "MYSQL_ROOT_PASSWORD": "root-test-only",
    "MYSQL_DATABASE": "tasks",
    "MYSQL_USER": "tasks",
    "MYSQL_PASSWORD": "tasks",
    "MYSQL_MIGRATE_USER": "tasks_migrate",
    "MYSQL_MIGRATE_PASSWORD": "tasks-migrate",
    "MYSQL_TEST_USER": "tasks_tests",
    "MYSQL_TEST_PASSWORD": "tasks-tests",
    "RABBITMQ_DEFAULT_USER": "tasks",
    "RABBITMQ_DEFAULT_PASS": "tasks",
    "RABBITMQ_VHOST": "/",
    "RABBITMQ_ADMIN_USER": "tasks-admin",
    "RABBITMQ_ADMIN_PASSWORD": "tasks-admin",
}
# The variables of the host ports docker-compose.yml publishes the two on, 127.0.0.1 only.
PUBLISHED_PORTS = {"mysql_db": "MYSQL_PUBLISHED_PORT", "rabbitmq": "RABBITMQ_PUBLISHED_PORT"}
MANAGEMENT_PORT = "RABBITMQ_MANAGEMENT_PUBLISHED_PORT"


class NotStarted(Exception):
    """Compose's containers did not come up healthy; the message says which and how."""


# --- Who answers ---------------------------------------------------------------------------


def first_bytes(host: str, port: int, send: bytes, wanted: int, timeout: float) -> bytes:
    """What the server at host:port sends first (after `send`): `wanted` bytes, fewer if it
    closes the connection or stops within `timeout`; b"" if nothing listens there."""
    deadline = time.monotonic() + timeout
    received = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(send)
            while len(received) < wanted:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(wanted - len(received))
                if not chunk:
                    break
                received += chunk
    except OSError:  # refused, unreachable, reset, or silent until the deadline
        pass
    return received


def answers_mysql(host: str, port: int, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """A MySQL or MariaDB server greets at host:port: protocol 10, or an error packet (a server
    refusing this client, which is still the server the settings name)."""
    packet = first_bytes(host, port, b"", 5, timeout)
    return len(packet) == 5 and packet[3] == 0 and packet[4] in (0x0A, 0xFF)


def answers_amqp(host: str, port: int, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """An AMQP broker answers the 0-9-1 protocol header at host:port, with connection.start or
    with the header of the protocol it speaks instead."""
    reply = first_bytes(host, port, AMQP_HEADER, 11, timeout)
    start, method = _CONNECTION_START
    return reply.startswith(b"AMQP") or (reply[:3] == start and reply[7:11] == method)


@dataclass(frozen=True)
class Backend:
    """One of the two servers the tests need, where the settings put it."""

    service: str  # the Compose service that stands in for it
    name: str
    setting: str  # the variables that say where it is
    host: str
    port: int
    answers: Callable[[str, int], bool]

    @property
    def where(self) -> str:
        return f"{self.name} at {self.host}:{self.port} ({self.setting})"


def configured_backends(settings: Settings) -> tuple[Backend, Backend]:
    database = settings.database
    # The node the services try first: RABBITMQ_HOSTS' first when it lists a cluster.
    broker = settings.broker_addresses[0]
    broker_setting = "RABBITMQ_HOSTS" if settings.rabbitmq_hosts else "RABBITMQ_HOST, RABBITMQ_PORT"
    return (
        Backend(
            "mysql_db", "MariaDB/MySQL", "DATABASE_URL", database.host, database.port, answers_mysql
        ),
        Backend("rabbitmq", "RabbitMQ", broker_setting, broker.host, broker.port, answers_amqp),
    )


# --- What to do ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Before the command: the Compose services to start for it, or the backends that do not
    answer and that nothing can stand in for. Neither: the command runs as it is."""

    start: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


def decide(answering: Mapping[str, bool], *, docker: bool) -> Plan:
    """`answering`: for each backend (by its Compose service) whether its configured address
    answered; `docker`: whether a Docker engine with Compose is there to start the others."""
    silent = tuple(service for service, answered in answering.items() if not answered)
    if not silent:
        return Plan()
    return Plan(start=silent) if docker else Plan(missing=silent)


def missing_message(backends: Sequence[Backend], missing: Sequence[str]) -> str:
    """One line: what does not answer, where, and the ways out."""
    silent = [backend for backend in backends if backend.service in missing]
    where = " and ".join(backend.where for backend in silent)
    return (
        f"backends: nothing answers as {where}, and there is no Docker engine with Compose "
        "(`docker info`; `docker compose` or `docker-compose`) to start one for the tests: "
        "start the server there, point the variables at one that runs, or install Docker"
    )


def container_environment(services: Sequence[str], ports: Mapping[str, int]) -> dict[str, str]:
    """The variables that point the tests at the started services (the others stay as they
    are), with the users docker-compose.yml makes from COMPOSE_VALUES."""
    values = COMPOSE_VALUES
    env: dict[str, str] = {}
    if "mysql_db" in services:
        user = f"{values['MYSQL_USER']}:{values['MYSQL_PASSWORD']}"
        address = f"127.0.0.1:{ports['MYSQL_PUBLISHED_PORT']}"
        env |= {
            "DATABASE_URL": f"mysql://{user}@{address}/{values['MYSQL_DATABASE']}",
            "MYSQL_TEST_USER": values["MYSQL_TEST_USER"],
            "MYSQL_TEST_PASSWORD": values["MYSQL_TEST_PASSWORD"],
        }
    if "rabbitmq" in services:
        env |= {
            "RABBITMQ_HOSTS": "",  # a cluster's nodes, which would win over RABBITMQ_HOST
            "RABBITMQ_HOST": "127.0.0.1",
            "RABBITMQ_PORT": str(ports["RABBITMQ_PUBLISHED_PORT"]),
            "RABBITMQ_USER": values["RABBITMQ_DEFAULT_USER"],
            "RABBITMQ_PASSWORD": values["RABBITMQ_DEFAULT_PASS"],
            "RABBITMQ_VHOST": values["RABBITMQ_VHOST"],
            "RABBITMQ_MANAGEMENT_URL": f"http://127.0.0.1:{ports[MANAGEMENT_PORT]}",
            "RABBITMQ_ADMIN_USER": values["RABBITMQ_ADMIN_USER"],
            "RABBITMQ_ADMIN_PASSWORD": values["RABBITMQ_ADMIN_PASSWORD"],
        }
    return env


# --- Docker --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Docker:
    cli: str  # for `docker inspect`
    compose: tuple[str, ...]  # `docker compose` (v2) or `docker-compose` (v1)


def _succeeds(*command: str) -> bool:
    try:
        done = subprocess.run(command, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def find_docker() -> Docker | None:
    """The Docker CLI and a Compose, when the engine answers `docker info`."""
    cli = shutil.which("docker")
    if cli is None or not _succeeds(cli, "info"):
        return None
    if _succeeds(cli, "compose", "version"):
        return Docker(cli, (cli, "compose"))
    v1 = shutil.which("docker-compose")
    if v1 is not None and _succeeds(v1, "version"):
        return Docker(cli, (v1,))
    return None


class ComposeProject:
    """Compose's mysql_db and/or rabbitmq as a project of this process's own, published on free
    ports of 127.0.0.1, so that it meets nothing else on the machine (3306, 5672, another run)."""

    def __init__(self, docker: Docker, services: Sequence[str]) -> None:
        self.docker = docker
        self.services = tuple(services)
        self.name = f"task-service-test-{os.getpid()}"
        self.ports = {name: free_port() for name in (*PUBLISHED_PORTS.values(), MANAGEMENT_PORT)}
        ports = {name: str(port) for name, port in self.ports.items()}
        self._env = {**os.environ, **COMPOSE_VALUES, **ports}

    def compose(self, *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
        files = [option for name in COMPOSE_FILES for option in ("-f", name)]
        command = [*self.docker.compose, "-p", self.name, *files, *args]
        # A session of its own: a Ctrl-C at the terminal stops us, and we stop the containers.
        return subprocess.run(
            command,
            cwd=ROOT,
            env=self._env,
            text=True,
            capture_output=capture,
            check=False,
            start_new_session=True,
        )

    def up(self) -> None:
        # Compose's own lines only when it fails: a run's log shows the tests.
        done = self.compose("up", "-d", *self.services, capture=True)
        if done.returncode != 0:
            sys.stderr.write(done.stdout + done.stderr)
            raise NotStarted(f"`up -d {' '.join(self.services)}` failed (its output is above)")

    def state(self, service: str) -> str:
        """`healthy`, `starting`, `unhealthy`, or without a healthcheck the container's status
        (`exited`...); `missing` when there is no container."""
        container = self.compose("ps", "-q", service, capture=True).stdout.strip()
        if not container:
            return "missing"
        template = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
        command = [self.docker.cli, "inspect", "-f", template, container]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=30, check=False, start_new_session=True
        )
        return done.stdout.strip() or "missing"

    def answer(self) -> bool:
        """Each started service answers its protocol on its published port (docker-proxy
        accepts connections before the server behind it does)."""
        probes = {"mysql_db": answers_mysql, "rabbitmq": answers_amqp}
        return all(
            probes[service]("127.0.0.1", self.ports[PUBLISHED_PORTS[service]])
            for service in self.services
        )

    def addresses(self) -> str:
        found = [f"{s} on 127.0.0.1:{self.ports[PUBLISHED_PORTS[s]]}" for s in self.services]
        if "rabbitmq" in self.services:
            found.append(f"its management API on 127.0.0.1:{self.ports[MANAGEMENT_PORT]}")
        return ", ".join(found)

    def ready(self) -> bool:
        states = {service: self.state(service) for service in self.services}
        failed = {s: state for s, state in states.items() if state not in ("healthy", "starting")}
        if failed:
            for service in failed:
                self.compose("logs", "--tail", "30", service)
            raise NotStarted(f"not healthy: {failed} (the logs are above)")
        return all(state == "healthy" for state in states.values()) and self.answer()

    async def wait_healthy(self) -> None:
        async def healthy() -> bool:
            return await asyncio.to_thread(self.ready)

        what = f"{', '.join(self.services)} to be healthy"
        try:
            await wait_until(healthy, timeout=START_TIMEOUT_SECONDS, interval=1.0, what=what)
        except AssertionError as exc:
            raise NotStarted(str(exc)) from None

    def down(self) -> None:
        done = self.compose("down", "-v", "--remove-orphans", "-t", "5", capture=True)
        if done.returncode != 0:
            sys.stderr.write(done.stdout + done.stderr)
            again = f"{' '.join(self.docker.compose)} -p {self.name} down -v"
            say(f"`down -v` failed: remove the rest with `{again}` (from {ROOT})")


# --- Running the command -------------------------------------------------------------------

_STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_Handler = Callable[[int, FrameType | None], None]


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """A handler that does nothing; unlike SIG_IGN, a child does not inherit it."""


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _signals(handlers: Mapping[signal.Signals, _Handler]) -> Iterator[None]:
    """`handlers` for as long as the block runs; a signal we were started ignoring (nohup, a
    background job) stays ignored, for us and for the command, which inherits that."""
    handling = {s: h for s, h in handlers.items() if signal.getsignal(s) != signal.SIG_IGN}
    previous = {signum: signal.signal(signum, handler) for signum, handler in handling.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run(command: Sequence[str], env: Mapping[str, str]) -> int:
    """Run `command` to its end: its exit code, or 128+N when signal N ended it. Ctrl-C reaches
    it from the terminal (it is in our process group), so here SIGINT only must not end us
    before the clean-up; a SIGTERM or SIGHUP sent to us alone is passed on to it."""
    children: list[subprocess.Popen[bytes]] = []
    pending: list[int] = []

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        if children:
            children[0].send_signal(signum)
        else:
            pending.append(signum)

    handlers: dict[signal.Signals, _Handler] = {signal.SIGINT: _ignore}
    handlers |= {signal.SIGTERM: pass_on, signal.SIGHUP: pass_on}
    with _signals(handlers):
        children.append(subprocess.Popen(command, env=env))
        for signum in pending:
            children[0].send_signal(signum)
        code = children[0].wait()
    return code if code >= 0 else 128 - code


def run_with_containers(command: Sequence[str], docker: Docker, silent: Sequence[Backend]) -> int:
    project = ComposeProject(docker, [backend.service for backend in silent])
    where = " and ".join(backend.where for backend in silent)
    say(
        f"nothing answers as {where}: starting Compose's {', '.join(project.services)} as "
        f"project {project.name} ({' '.join(docker.compose)}; the first run pulls their images)"
    )
    started = time.monotonic()
    try:
        with _signals({signal.SIGTERM: _interrupt, signal.SIGHUP: _interrupt}):
            project.up()
            asyncio.run(project.wait_healthy())
            say(f"healthy after {time.monotonic() - started:.0f} s: {project.addresses()}")
            env = container_environment(project.services, project.ports)
            return run(command, {**os.environ, **env})
    except NotStarted as exc:
        say(str(exc))
        return 1
    finally:
        with _signals(dict.fromkeys(_STOPPING, _ignore)):  # a second Ctrl-C must not leave them
            say(f"removing project {project.name} (down -v)")
            project.down()


def say(line: str) -> None:
    print(f"backends: {line}", file=sys.stderr, flush=True)


def main(argv: Sequence[str]) -> int:
    command = list(argv[1:] if argv[:1] == ["--"] else argv)
    if not command:
        say("usage: python -m testkit.backends -- COMMAND [ARG...]")
        return 2
    try:
        backends = configured_backends(load_settings())
    except ConfigurationError as exc:
        say(str(exc))
        return 2
    answering = {
        backend.service: backend.answers(backend.host, backend.port) for backend in backends
    }
    docker = None if all(answering.values()) else find_docker()
    plan = decide(answering, docker=docker is not None)
    if plan.missing:
        print(missing_message(backends, plan.missing), file=sys.stderr)
        return 1
    if docker is None or not plan.start:
        say(" and ".join(backend.where for backend in backends) + " answer: the tests use them")
        sys.stdout.flush()
        os.execvp(command[0], command)
    silent = [backend for backend in backends if backend.service in plan.start]
    try:
        return run_with_containers(command, docker, silent)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
