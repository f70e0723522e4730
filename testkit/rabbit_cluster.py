"""A RabbitMQ cluster of the test run's own: three extra nodes on this machine, beside the
local broker and never touching it.

    with rabbit_cluster(3) as cluster:      # started in parallel, joined, stopped and removed
        settings = settings.model_copy(update={"rabbitmq_hosts": cluster.hosts})
        cluster.stop(cluster.nodes[0])      # under load (or .nodes[0].kill(): a crash)
        cluster.start_stopped()             # back in the cluster

Each node has a name of its own (`failover-<run>-1@localhost`), its own AMQP and distribution
ports on 127.0.0.1, and its database, logs, pid file, configuration (none of /etc/rabbitmq's)
and enabled plugins (none) under one temporary directory. The nodes run as the `rabbitmq`
user with its home, as the local broker does, so they share its Erlang cookie
(/var/lib/rabbitmq/.erlang.cookie), which is also the one `rabbitmqctl` uses as root (Debian's
wrapper runs it as `rabbitmq`): the commands below need no cookie of their own. Needs root
(or the `rabbitmq` user).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from testkit.processes import free_port

START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 60.0
CTL_TIMEOUT_SECONDS = 60.0


def rabbitmq_installed() -> bool:
    return shutil.which("rabbitmq-server") is not None and shutil.which("rabbitmqctl") is not None


@dataclass(eq=False)
class RabbitNode:
    name: str  # the Erlang node name, as rabbitmqctl -n takes it
    amqp_port: int
    dist_port: int
    base: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.amqp_port}"

    @property
    def log(self) -> Path:
        return self.base / "console.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def environment(self) -> dict[str, str]:
        """The node's RABBITMQ_* variables: everything of its own, nothing from /etc."""
        files = {
            "RABBITMQ_CONFIG_FILE": self.base / "rabbitmq.conf",
            "RABBITMQ_ADVANCED_CONFIG_FILE": self.base / "advanced.config",  # none
            "RABBITMQ_CONF_ENV_FILE": self.base / "rabbitmq-env.conf",  # empty
            "RABBITMQ_ENABLED_PLUGINS_FILE": self.base / "enabled_plugins",
            "RABBITMQ_MNESIA_BASE": self.base / "mnesia",
            "RABBITMQ_LOG_BASE": self.base / "log",
            "RABBITMQ_PID_FILE": self.base / "rabbitmq.pid",
        }
        return {
            **os.environ,
            **{name: str(path) for name, path in files.items()},
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            # Inter-node traffic on loopback only, as the local broker's rabbitmq-env.conf has it.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def write_files(self) -> None:
        for directory in (self.base, self.base / "mnesia", self.base / "log"):
            directory.mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
        )
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[].\n")

    def start(self) -> None:
        """Start the node in the background, in a process group of its own that holds all
        of it: the server script itself (not Debian's wrapper, whose `su` puts the node in a
        session of its own), as `rabbitmq` with its home, where the cookie is."""
        account = pwd.getpwnam("rabbitmq") if os.geteuid() == 0 else None
        env = self.environment()
        if account is not None:
            env |= {"HOME": account.pw_dir, "USER": "rabbitmq", "LOGNAME": "rabbitmq"}
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [_server_script()],
                cwd=account.pw_dir if account is not None else None,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=account.pw_uid if account is not None else None,
                group=account.pw_gid if account is not None else None,
                extra_groups=[] if account is not None else None,
            )

    def wait_listening(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Poll the AMQP port until it accepts a connection (it opens last in the boot)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise AssertionError(f"{self.name} exited while starting:\n{self.tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.amqp_port), timeout=1),
            ):
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.name} not listening after {timeout} s:\n{self.tail()}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL to the node's whole process group (su, the script, the Erlang VM), as a
        crash would end it; returns once the group is gone."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        _wait_group_gone(self.process.pid)
        # Should the VM ever have left the group, its pid file still names it.
        vm = self._vm_pid()
        if vm is not None:
            os.kill(vm, signal.SIGKILL)

    def _vm_pid(self) -> int | None:
        """The Erlang VM's pid from the node's pid file, if that process is this node."""
        try:
            pid = int((self.base / "rabbitmq.pid").read_text().strip())
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if f"RABBITMQ_NODENAME={self.name}".encode() in environ.split(b"\0") else None

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class RabbitCluster:
    nodes: list[RabbitNode]

    @property
    def hosts(self) -> str:
        """RABBITMQ_HOSTS for this cluster, its nodes in order."""
        return ",".join(node.address for node in self.nodes)

    def node_at(self, address: str) -> RabbitNode:
        """The node whose AMQP listener is `address` (host:port)."""
        return next(node for node in self.nodes if node.address == address)

    def ctl(self, node: RabbitNode, *args: str, timeout: float = CTL_TIMEOUT_SECONDS) -> str:
        """`rabbitmqctl -n NODE -q ARGS`; its output, or AssertionError with its errors."""
        result = subprocess.run(
            ["rabbitmqctl", "-n", node.name, "-q", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"rabbitmqctl -n {node.name} {' '.join(args)} failed ({result.returncode}):"
                f"\n{result.stdout}{result.stderr}"
            )
        return result.stdout

    def stop(self, node: RabbitNode) -> None:
        """Stop the node as an operator would (`rabbitmqctl stop`): it closes its client
        connections and leaves the cluster's running nodes; returns once it has exited."""
        self.ctl(node, "stop", timeout=STOP_TIMEOUT_SECONDS)
        if node.process is not None:
            node.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def start_stopped(self) -> None:
        """Start again every node that is not running; each rejoins the cluster by itself."""
        stopped = [node for node in self.nodes if not node.running]
        for node in stopped:
            node.start()
        for node in stopped:
            node.wait_listening()

    def join(self) -> None:
        """Join every node to the first one; one at a time, as RabbitMQ advises."""
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")

    def quorum_members(self, queue: str, *, vhost: str = "/") -> list[str]:
        """The nodes holding a replica of quorum queue `queue`, asked of a running node."""
        node = next(node for node in self.nodes if node.running)
        output = self.ctl(
            node, "list_queues", "-p", vhost, "name", "members", "--formatter", "json"
        )
        for row in json.loads(output):
            if row["name"] == queue:
                return sorted(str(member) for member in row["members"])
        raise AssertionError(f"no queue {queue!r} on the cluster")


@contextlib.contextmanager
def rabbit_cluster(size: int = 3, *, prefix: str = "failover") -> Iterator[RabbitCluster]:
    """`size` new nodes started in parallel and joined into one cluster; whatever happens,
    every node is killed and its directory removed at the end."""
    run = uuid.uuid4().hex[:6]
    base = Path(tempfile.mkdtemp(prefix=f"rabbit-{prefix}-"))
    nodes = [
        RabbitNode(f"{prefix}-{run}-{n}@localhost", free_port(), free_port(), base / f"node{n}")
        for n in range(1, size + 1)
    ]
    cluster = RabbitCluster(nodes)
    try:
        for node in nodes:
            node.write_files()
        _hand_to_rabbitmq(base)
        for node in nodes:
            node.start()
        with ThreadPoolExecutor(max_workers=size) as pool:
            list(pool.map(lambda node: node.wait_listening(), nodes))
        cluster.join()
        yield cluster
    finally:
        for node in nodes:
            node.kill()
        shutil.rmtree(base, ignore_errors=True)


def _server_script() -> str:
    # Debian's /usr/sbin/rabbitmq-server only switches to the rabbitmq user and runs this.
    script = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    return str(script) if script.exists() else shutil.which("rabbitmq-server") or "rabbitmq-server"


def _hand_to_rabbitmq(base: Path) -> None:
    """The nodes run as `rabbitmq` (through the wrappers, when we are root): their files too."""
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam("rabbitmq")
    for directory, _, names in os.walk(base):
        for path in (directory, *(os.path.join(directory, name) for name in names)):
            os.chown(path, user.pw_uid, user.pw_gid)


def _wait_group_gone(pgid: int, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"process group {pgid} still alive after SIGKILL")
