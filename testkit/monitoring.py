"""The monitoring profile (monitoring/) read as data, the metric names the services export, and
a real Prometheus (the `prometheus` binary) run on the committed configuration, for
tests/test_monitoring_config.py and tests/test_monitoring.py."""

from __future__ import annotations

import copy
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from testkit.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
ALERT_RULES = MONITORING / "prometheus" / "alerts.yml"
GRAFANA = MONITORING / "grafana"
GRAFANA_DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "task-service.yml"
DASHBOARD = GRAFANA / "dashboards" / "task-service.json"

# What the API's GET /metrics and the worker's (on its health port) export, with their labels
# (issue 14). The dashboard and the alerts may read these, RabbitMQ's own rabbitmq_* metrics
# and (the alerts) Prometheus's `up`, nothing else.
API_METRICS: dict[str, tuple[str, ...]] = {
    "task_api_http_requests_total": ("method", "route", "status_class"),
    "task_api_http_request_duration_seconds": ("method", "route"),
    "task_api_tasks_accepted_total": ("type",),
    "task_api_publishes_total": ("outcome",),
    "task_api_publish_duration_seconds": (),
    "task_api_outbox_backlog": (),
    "task_api_outbox_oldest_age_seconds": (),
    "task_api_idempotent_replays_total": (),
    "task_api_event_streams_open": (),
}
WORKER_METRICS: dict[str, tuple[str, ...]] = {
    "task_worker_tasks_finished_total": ("type", "outcome"),
    "task_worker_attempt_duration_seconds": ("type",),
    "task_worker_queue_wait_seconds": ("type",),
    "task_worker_tasks_in_flight": (),
    "task_worker_reconnects_total": ("backend",),
}
HISTOGRAMS = frozenset(
    {
        "task_api_http_request_duration_seconds",
        "task_api_publish_duration_seconds",
        "task_worker_attempt_duration_seconds",
        "task_worker_queue_wait_seconds",
    }
)
BROKER_PREFIX = "rabbitmq_"
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def exported_metric(series: str) -> str:
    """The metric a series belongs to: a histogram's `_bucket`, `_sum` and `_count` are its own."""
    for suffix in _HISTOGRAM_SERIES:
        if series.endswith(suffix) and series.removesuffix(suffix) in HISTOGRAMS:
            return series.removesuffix(suffix)
    return series


def series_names(metric: str) -> set[str]:
    """The series names Prometheus stores for `metric` (a histogram: its buckets, sum, count)."""
    if metric in HISTOGRAMS:
        return {metric + suffix for suffix in _HISTOGRAM_SERIES}
    return {metric}


def is_exported(series: str) -> bool:
    metric = exported_metric(series)
    return metric in API_METRICS or metric in WORKER_METRICS or series.startswith(BROKER_PREFIX)


# Enough PromQL to find the metric names in an expression: strings, label matchers, ranges and
# grouping clauses removed, what is left is functions (a name before "("), keywords, numbers
# and the metric names.
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan"}
)


def metric_names(expression: str) -> set[str]:
    """The series names a PromQL expression (Grafana's $variables allowed) reads."""
    text = _STRING.sub('""', expression)
    for pattern in (_MATCHERS, _RANGE, _GROUPING):
        text = pattern.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        is_function = text[match.end() :].lstrip().startswith("(")
        if not is_function and match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboard_panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included; rows themselves left out."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for each query of each panel."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERT_RULES)["groups"] for rule in group["rules"]]


def local_scrape_config(
    *, targets: Mapping[str, str], extra_rule_files: list[Path], interval: str = "1s"
) -> dict[str, Any]:
    """The committed prometheus.yml with each job of `targets` scraping only that address
    (instead of Compose's service names and DNS discovery), the jobs not named there left out,
    every interval `interval`, and the committed rule files (by absolute path) plus
    `extra_rule_files`."""
    config: dict[str, Any] = copy.deepcopy(load_yaml(PROMETHEUS_CONFIG))
    timing = {"scrape_interval": interval, "scrape_timeout": interval}
    config["global"] = {**config.get("global", {}), **timing, "evaluation_interval": interval}
    committed_rules = [PROMETHEUS_CONFIG.parent / name for name in config.get("rule_files", [])]
    config["rule_files"] = [str(path) for path in [*committed_rules, *extra_rule_files]]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] not in targets:
            continue
        kept = {
            key: value
            for key, value in job.items()
            if not key.endswith("_sd_configs") and key not in {"static_configs", *timing}
        }
        jobs.append({**kept, "static_configs": [{"targets": [targets[job["job_name"]]]}]})
    missing = set(targets) - {job["job_name"] for job in jobs}
    assert not missing, f"prometheus.yml has no job {missing}"
    config["scrape_configs"] = jobs
    return config


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


@contextmanager
def prometheus_server(config: Mapping[str, Any], workdir: Path) -> Iterator[Prometheus]:
    """`prometheus` run on `config` (written to `workdir`, its data there too) on a free port of
    127.0.0.1; stopped on exit."""
    binary = prometheus_binary()
    assert binary is not None, "no prometheus binary on PATH"
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    url = f"http://127.0.0.1:{free_port()}"
    log = workdir / "prometheus.log"
    command = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            yield Prometheus(url, process, log)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def instant_query(client: httpx.AsyncClient, expression: str) -> list[dict[str, Any]]:
    """The result vector of an instant query; an error (a bad expression) raises."""
    response = await client.get("/api/v1/query", params={"query": expression})
    body: dict[str, Any] = response.json()
    assert body.get("status") == "success", f"{expression}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result
