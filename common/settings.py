"""The one place where configuration is read from the environment.

Each entry point calls `load_settings()` once and passes the result down; nothing reads the
environment at import time.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.api_keys import parse_api_keys
from common.errors import ConfigurationError

_MYSQL_SCHEMES = frozenset(
    {
        "mysql",
        "mariadb",
        "mysql+mysqlconnector",
        "mysql+asyncmy",
        "mysql+aiomysql",
        "mysql+pymysql",
    }
)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """One RabbitMQ node: where its AMQP listener is."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


# host[:port]: a name or IPv4 address, or an IPv6 address in brackets.
_BROKER_ENTRY = re.compile(
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+))(?::(?P<port>\d+))?"
)


def parse_broker_hosts(value: str, *, default_port: int) -> tuple[BrokerAddress, ...]:
    """RABBITMQ_HOSTS (`h1:5672,h2,[::1]:5673`) as addresses, in the order given; an entry
    without a port has `default_port`. Raises ValueError naming the first bad entry."""
    addresses: list[BrokerAddress] = []
    for entry in (part.strip() for part in value.split(",")):
        address = _broker_address(entry, default_port=default_port)
        if address in addresses:
            raise ValueError(f"{address} is listed twice")
        addresses.append(address)
    return tuple(addresses)


def _broker_address(entry: str, *, default_port: int) -> BrokerAddress:
    if not entry:
        raise ValueError("an empty entry: expected host[:port] entries separated by commas")
    if "://" in entry or "@" in entry:
        # Not echoed: a URL may carry a password.
        raise ValueError(
            "entries are host[:port], not URLs: the user, password and vhost are"
            " RABBITMQ_USER, RABBITMQ_PASSWORD and RABBITMQ_VHOST, the same for every node"
        )
    match = _BROKER_ENTRY.fullmatch(entry)
    if match is None:
        hint = " (an IPv6 address goes in brackets: [::1]:5672)" if entry.count(":") > 1 else ""
        raise ValueError(f"{entry!r} is not host[:port]{hint}")
    port = int(match["port"]) if match["port"] else default_port
    if not 1 <= port <= 65535:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    return BrokerAddress(host=match["ipv6"] or match["host"], port=port)


@dataclass(frozen=True, slots=True)
class DatabaseAddress:
    host: str
    port: int
    user: str
    password: str
    database: str


def parse_database_url(url: str) -> DatabaseAddress:
    """Split `mysql://user:pass@host:port/db` (or `mysql+driver://...`) into its parts."""
    parts = urlsplit(url)
    if parts.scheme not in _MYSQL_SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(sorted(_MYSQL_SCHEMES))}")
    database = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not database or "/" in database:
        raise ValueError("expected mysql://user:password@host:port/database")
    try:
        port = parts.port or 3306
    except ValueError as exc:
        raise ValueError("port must be a number from 1 to 65535") from exc
    return DatabaseAddress(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=database,
    )


class Settings(BaseSettings):
    """Every variable either service reads. Names match the environment variables."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    database_url: SecretStr = SecretStr("mysql://root@127.0.0.1:3306/tasks")
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_timeout_seconds: float = Field(default=5.0, gt=0)

    rabbitmq_host: str = "127.0.0.1"
    rabbitmq_port: int = Field(default=5672, ge=1, le=65535)
    # The nodes of a cluster, comma-separated host[:port] (port: RABBITMQ_PORT). Each connect
    # tries them in turn, from the one after the node a lost connection was on; empty: only
    # RABBITMQ_HOST:RABBITMQ_PORT. See broker_addresses.
    rabbitmq_hosts: str = ""
    rabbitmq_user: str = "guest"
    rabbitmq_password: SecretStr = SecretStr("guest")
    rabbitmq_vhost: str = "/"
    task_queue: str = Field(default="task_queue", min_length=1, max_length=200)
    task_queue_type: Literal["quorum", "classic"] = "quorum"
    # Quorum queues only: deliveries of one message (crashed consumers included) before it
    # is dead-lettered.
    task_queue_delivery_limit: int = Field(default=10, ge=1)
    publish_timeout_seconds: float = Field(default=5.0, gt=0)
    # Small, so that the link is back within seconds of a broker returning (see docs/reliability.md).
    broker_reconnect_max_seconds: float = Field(default=2.0, gt=0)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_workers: int = Field(default=1, ge=1, le=64)
    api_shutdown_grace_seconds: int = Field(default=20, ge=1)
    # Prometheus metrics: the API's /metrics and the worker's (on its health port).
    metrics_enabled: bool = True
    # API keys (common.api_keys): `name:sha256-hex` pairs, comma-separated; empty, the API is
    # open to anyone who reaches it. With keys on, /docs (and /openapi.json) and /metrics stay
    # open unless these say false.
    api_keys: str = ""
    docs_public: bool = True
    metrics_public: bool = True
    # Browsers may call the API from these origins (CORS): exact origins, comma-separated, as
    # https://app.example.com. Empty, no CORS headers at all (the browser's same-origin rule).
    cors_origins: str = ""
    # The largest `metadata`, and likewise `payload`, of a new task: bytes of its compact JSON.
    max_metadata_bytes: int = Field(default=16_384, ge=256)
    # A token bucket per caller on /api/ (per API key, or per client address while keys are
    # off), in each API process: RATE_LIMIT_BURST requests at once (0: one second's worth),
    # refilled at RATE_LIMIT_PER_SECOND (0: no limit).
    # Backpressure: past MAX_BACKLOG tasks waiting (the outbox backlog, or the work queue's
    # ready messages, whichever is more), new submissions are a 503 (0: no bound). The work
    # queue itself holds at most MAX_QUEUE_LENGTH; a publish past it is refused by the
    # broker, and the outbox sends that task once there is room.
    max_backlog: int = Field(default=500_000, ge=0)
    max_queue_length: int = Field(default=1_000_000, ge=1)
    rate_limit_per_second: float = Field(default=0.0, ge=0)
    rate_limit_burst: int = Field(default=0, ge=0, le=1_000_000)
    # Event streams one tenant may hold open on one API process at once.
    max_streams_per_tenant: int = Field(default=100, ge=1)
    # A request must arrive whole (head and body) within this long of its connection opening
    # or of its first byte (408 otherwise), with at most MAX_HEADERS headers of at most
    # MAX_HEADER_BYTES in all (431 otherwise): see api-service/src/api/http_guard.py.
    request_read_timeout_seconds: float = Field(default=30.0, gt=0)
    max_headers: int = Field(default=100, ge=10, le=10_000)
    max_header_bytes: int = Field(default=32_768, ge=1024, le=16 * 1024 * 1024)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    retry_after_seconds: int = Field(default=5, ge=1)
    dispatch_interval_seconds: float = Field(default=1.0, gt=0)
    dispatch_min_age_seconds: float = Field(default=2.0, ge=0)
    dispatch_batch_size: int = Field(default=200, ge=1, le=5000)
    # The Retry-After of a 202: when a client that polls should first look at the task.
    poll_after_seconds: int = Field(default=1, ge=1)
    idempotency_key_ttl_hours: float = Field(default=24.0, gt=0, le=24 * 365)
    # Expired keys are deleted this often, in batches of IDEMPOTENCY_PURGE_BATCH.
    idempotency_purge_interval_seconds: float = Field(default=60.0, gt=0)
    idempotency_purge_batch: int = Field(default=1000, ge=1, le=100_000)
    # A comment line on an idle event stream, so that proxies keep it open.
    events_heartbeat_seconds: float = Field(default=15.0, gt=0)

    processing_delay_min_seconds: float = Field(default=5.0, ge=0)
    processing_delay_max_seconds: float = Field(default=10.0, ge=0)
    worker_concurrency: int = Field(default=16, ge=1, le=10_000)
    task_lease_seconds: float = Field(default=60.0, gt=0)
    requeue_pause_seconds: float = Field(default=1.0, ge=0)
    worker_shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    # The worker's own HTTP port: GET /health/live and /health/ready. Every worker on one host
    # needs a port of its own (0: any free one, logged at start); the image listens on 0.0.0.0.
    worker_health_host: str = Field(default="127.0.0.1", min_length=1)
    worker_health_port: int = Field(default=8001, ge=0, le=65535)
    max_attempts: int = Field(default=5, ge=1, le=100)
    retry_backoff_base_seconds: float = Field(default=1.0, gt=0)
    retry_backoff_factor: float = Field(default=4.0, ge=1)
    retry_backoff_max_seconds: float = Field(default=300.0, gt=0)
    unknown_task_max_lookups: int = Field(default=3, ge=1)
    processing_failure_rate: float = Field(default=0.0, ge=0, le=1)
    # Task types (common.task_types): the largest result a handler may return, how many
    # workers without a handler for a task's type pass it on before it is FAILED, and the
    # processes that run CPU-bound handlers (0: one per core).
    result_max_bytes: int = Field(default=65_536, ge=1, le=16 * 1024 * 1024)
    unknown_type_max_attempts: int = Field(default=5, ge=1)
    cpu_pool_size: int = Field(default=0, ge=0, le=256)

    # Scheduled tasks: how far ahead run_at / delay_seconds may be (30 days).
    max_delay_seconds: int = Field(default=30 * 86_400, ge=1)

    # Completion webhooks (Standard Webhooks): the signing secret ("whsec_" and base64; the
    # previous one too while it is rotated), where they may go besides public addresses, and
    # how the sender tries: each attempt within WEBHOOK_TIMEOUT_SECONDS, retried after
    # BASE * 2^n seconds (capped at WEBHOOK_RETRY_MAX_SECONDS, plus up to 20% jitter) until
    # WEBHOOK_MAX_ATTEMPTS (the defaults spread 18 attempts over about 35 hours).
    webhook_secret: SecretStr | None = None
    webhook_secret_previous: SecretStr | None = None
    webhook_allowed_hosts: str = ""
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=21_600.0, gt=0)
    webhook_max_attempts: int = Field(default=18, ge=1, le=100)
    webhook_concurrency: int = Field(default=64, ge=1, le=10_000)
    webhook_poll_interval_seconds: float = Field(default=1.0, gt=0)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "text"

    # Traces (common.tracing), the OpenTelemetry SDK's own variables: spans are exported over
    # OTLP/HTTP to this base URL when it is set (the SDK reads it, and its other OTEL_*
    # variables, itself); empty, none are made. OTEL_SERVICE_NAME names the service in them
    # (empty: task-api or task-worker).
    otel_exporter_otlp_endpoint: str = ""
    otel_service_name: str = ""

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _normalise_case(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return value.lower() if value.lower() in ("json", "text") else value.upper()

    @field_validator("otel_exporter_otlp_endpoint")
    @classmethod
    def _check_otlp_endpoint(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError("must be an http:// or https:// URL, such as http://collector:4318")
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: str) -> str:
        parse_api_keys(value)
        return value

    @property
    def api_key_digests(self) -> Mapping[str, bytes]:
        """API_KEYS: each name's key digest (empty: keys are off)."""
        return parse_api_keys(self.api_keys)

    @field_validator("cors_origins")
    @classmethod
    def _check_cors_origins(cls, value: str) -> str:
        # Lower-cased: a browser's Origin is, and the match is exact.
        origins = [origin.strip().lower() for origin in value.split(",") if origin.strip()]
        for origin in origins:
            if origin == "*":
                raise ValueError("must list exact origins: * (any site at all) is not allowed")
            if not re.fullmatch(
                r"https?://(\[[0-9a-f:.]+\]|[a-z0-9-]+(\.[a-z0-9-]+)*)(:\d{1,5})?", origin
            ):
                raise ValueError(
                    f"{origin!r} is not an origin: expected scheme://host[:port], such as"
                    " https://app.example.com (no path, no trailing /)"
                )
        return ",".join(origins)

    @property
    def cors_allowed_origins(self) -> tuple[str, ...]:
        """CORS_ORIGINS as a tuple of origins (empty: CORS is off)."""
        return tuple(self.cors_origins.split(",")) if self.cors_origins else ()

    @field_validator("rabbitmq_hosts")
    @classmethod
    def _check_rabbitmq_hosts(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if value:  # with the port broker_addresses will give entries without one
            parse_broker_hosts(value, default_port=info.data.get("rabbitmq_port", 5672))
        return value

    @property
    def broker_addresses(self) -> tuple[BrokerAddress, ...]:
        """The RabbitMQ nodes to connect to, in order: RABBITMQ_HOSTS, or the one
        RABBITMQ_HOST:RABBITMQ_PORT when that is empty."""
        if not self.rabbitmq_hosts:
            return (BrokerAddress(self.rabbitmq_host, self.rabbitmq_port),)
        return parse_broker_hosts(self.rabbitmq_hosts, default_port=self.rabbitmq_port)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        parse_database_url(value.get_secret_value())
        return value

    @field_validator("webhook_secret", "webhook_secret_previous", mode="before")
    @classmethod
    def _check_webhook_secret(cls, value: object) -> object:
        if value in (None, ""):
            return None
        if not isinstance(value, str | SecretStr):
            return value
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not text.startswith("whsec_"):
            raise ValueError("must start with whsec_ (make webhook-secret prints one)")
        try:
            key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            raise ValueError("must be whsec_ followed by base64") from None
        if len(key) < 24:
            raise ValueError("must hold at least 24 random bytes (make webhook-secret prints one)")
        return value

    @property
    def webhook_hosts(self) -> frozenset[str]:
        """WEBHOOK_ALLOWED_HOSTS as a set of lower-case host names and IP literals."""
        hosts = (host.strip().lower() for host in self.webhook_allowed_hosts.split(","))
        return frozenset(host.strip("[]") for host in hosts if host)

    @model_validator(mode="after")
    def _check_delays(self) -> Settings:
        if self.processing_delay_min_seconds > self.processing_delay_max_seconds:
            raise ValueError(
                "PROCESSING_DELAY_MIN_SECONDS must not exceed PROCESSING_DELAY_MAX_SECONDS"
            )
        return self

    @property
    def retry_delays_seconds(self) -> tuple[float, ...]:
        """The backoff before attempt 2, 3, ... MAX_ATTEMPTS: base * factor^n, capped."""
        return tuple(
            min(
                self.retry_backoff_base_seconds * self.retry_backoff_factor**n,
                self.retry_backoff_max_seconds,
            )
            for n in range(max(self.max_attempts - 1, 1))
        )

    @property
    def database(self) -> DatabaseAddress:
        return parse_database_url(self.database_url.get_secret_value())


def load_settings(**overrides: object) -> Settings:
    """Read the environment; a bad value raises ConfigurationError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    names = [str(part).upper() for part in first["loc"] if isinstance(part, str)]
    message = first["msg"].removeprefix("Value error, ")
    if not names:
        return f"invalid configuration: {message}"
    return f"invalid configuration: {names[0]}: {message}"
