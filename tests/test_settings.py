from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import ConfigurationError
from common.settings import (
    BrokerAddress,
    Settings,
    load_settings,
    parse_broker_hosts,
    parse_database_url,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_point_at_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    settings = load_settings()
    assert settings.database.host == "127.0.0.1"
    assert settings.database.user == "root"
    assert (settings.rabbitmq_host, settings.rabbitmq_port) == ("127.0.0.1", 5672)
    assert (settings.api_port, settings.task_queue, settings.rabbitmq_vhost) == (
        8000,
        "task_queue",
        "/",
    )
    assert (settings.processing_delay_min_seconds, settings.processing_delay_max_seconds) == (5, 10)
    assert settings.worker_concurrency == 16
    assert settings.max_body_bytes == 1_048_576


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSING_DELAY_MIN_SECONDS", "0.5")
    monkeypatch.setenv("PROCESSING_DELAY_MAX_SECONDS", "1.5")
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    monkeypatch.setenv("log_level", "debug")
    settings = load_settings()
    assert (settings.processing_delay_min_seconds, settings.processing_delay_max_seconds) == (
        0.5,
        1.5,
    )
    assert (settings.log_format, settings.log_level) == ("json", "DEBUG")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://u:p%40ss@db:3307/tasks", ("db", 3307, "u", "p@ss", "tasks")),
        ("mysql+mysqlconnector://u@db/tasks", ("db", 3306, "u", "", "tasks")),
        ("mysql+asyncmy://root:@127.0.0.1:3306/x_y", ("127.0.0.1", 3306, "root", "", "x_y")),
    ],
)
def test_database_url_forms(url: str, expected: tuple[object, ...]) -> None:
    address = parse_database_url(url)
    assert (
        address.host,
        address.port,
        address.user,
        address.password,
        address.database,
    ) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "postgres://u@h/db"),
        ("DATABASE_URL", "mysql://host-only"),
        ("DATABASE_URL", "mysql://u@h:99999/db"),
        ("API_PORT", "eighty"),
        ("API_PORT", "70000"),
        ("WORKER_CONCURRENCY", "0"),
        ("PROCESSING_DELAY_MIN_SECONDS", "-1"),
        ("LOG_FORMAT", "xml"),
        ("TASK_QUEUE", ""),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert name in str(raised.value)
    assert "\n" not in str(raised.value)


def test_min_delay_above_max_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSING_DELAY_MIN_SECONDS", "3")
    monkeypatch.setenv("PROCESSING_DELAY_MAX_SECONDS", "2")
    with pytest.raises(ConfigurationError, match="PROCESSING_DELAY_MIN_SECONDS"):
        load_settings()


@pytest.mark.parametrize("service", ["api-service", "worker-service"])
def test_service_refuses_to_start_with_one_line_naming_the_variable(service: str) -> None:
    result = subprocess.run(
        [sys.executable, "main.py"],
        cwd=ROOT / service / "src",
        env={"PYTHONPATH": str(ROOT), "API_PORT": "not-a-port", "WORKER_CONCURRENCY": "many"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "API_PORT" in lines[0] or "WORKER_CONCURRENCY" in lines[0]


def test_without_rabbitmq_hosts_the_one_broker_is_host_and_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RABBITMQ_HOSTS", raising=False)
    monkeypatch.setenv("RABBITMQ_HOST", "broker")
    monkeypatch.setenv("RABBITMQ_PORT", "5673")
    assert load_settings().broker_addresses == (BrokerAddress("broker", 5673),)
    monkeypatch.setenv("RABBITMQ_HOSTS", "  ")
    assert load_settings().broker_addresses == (BrokerAddress("broker", 5673),)


def test_rabbitmq_hosts_lists_the_nodes_in_order_with_rabbitmq_port_as_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RABBITMQ_HOSTS", "rabbit-1:5672, rabbit_2 ,10.0.0.3:5679,[fd00::4]")
    monkeypatch.setenv("RABBITMQ_PORT", "5680")
    monkeypatch.setenv("RABBITMQ_HOST", "ignored")
    assert load_settings().broker_addresses == (
        BrokerAddress("rabbit-1", 5672),
        BrokerAddress("rabbit_2", 5680),
        BrokerAddress("10.0.0.3", 5679),
        BrokerAddress("fd00::4", 5680),
    )
    assert [str(a) for a in parse_broker_hosts("[::1]:5672,h", default_port=1)] == [
        "[::1]:5672",
        "h:1",
    ]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("h1:5672,,h2:5672", "an empty entry"),
        ("h1:5672,", "an empty entry"),
        ("h1:0", "'h1:0': the port must be a number from 1 to 65535"),
        ("h1:65536", "from 1 to 65535"),
        ("h1:amqp", "'h1:amqp' is not host[:port]"),
        ("::1", "an IPv6 address goes in brackets"),
        ("h 1", "'h 1' is not host[:port]"),
        ("h1:5672,h1", "h1:5672 is listed twice"),
        ("amqp://guest:secret@h1:5672/", "not URLs"),
        ("guest:secret@h1", "not URLs"),
    ],
)
def test_a_bad_rabbitmq_hosts_entry_stops_start_up_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    monkeypatch.setenv("RABBITMQ_HOSTS", value)
    monkeypatch.delenv("RABBITMQ_PORT", raising=False)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    message = str(raised.value)
    assert message.startswith("invalid configuration: RABBITMQ_HOSTS: ")
    assert says in message
    assert "\n" not in message
    assert "secret" not in message  # a URL's password is never echoed


def test_a_node_listed_twice_is_found_with_rabbitmq_port_as_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RABBITMQ_HOSTS", "h1:5673,h1")
    monkeypatch.setenv("RABBITMQ_PORT", "5673")
    with pytest.raises(ConfigurationError, match="RABBITMQ_HOSTS: h1:5673 is listed twice"):
        load_settings()
