"""The monitoring profile's committed files held against the services and the Compose file:
the dashboard and the alerts read only metrics that exist, Grafana finds its data source and
dashboard where Compose mounts them, Prometheus scrapes every service. Run by `make lint` too,
beside promtool's checks of the same files; tests/test_monitoring.py runs them for real."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import pytest

from testkit.deployment import ROOT, compose_environment, load_compose, substitute
from testkit.monitoring import (
    API_METRICS,
    DASHBOARD,
    GRAFANA_DASHBOARD_PROVIDERS,
    GRAFANA_DATASOURCES,
    PROMETHEUS_CONFIG,
    WORKER_METRICS,
    alert_rules,
    dashboard_panels,
    dashboard_queries,
    exported_metric,
    is_exported,
    load_yaml,
    metric_names,
)

pytestmark = pytest.mark.unit

PROFILE = "monitoring"
GRID_COLUMNS = 24


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def mounts(service: str) -> dict[str, PurePosixPath]:
    """Each bind mount of `service`: the container path by the repository path."""
    found = {}
    for volume in load_compose()["services"][service].get("volumes", []):
        source, target, *_ = str(volume).split(":")
        if source.startswith("./"):
            found[str((ROOT / source).resolve().relative_to(ROOT))] = PurePosixPath(target)
    return found


def scrape_job(name: str) -> dict[str, Any]:
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    job: dict[str, Any] = jobs[name]
    return job


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        (
            "sum by (type) (rate(task_api_tasks_accepted_total[$__rate_interval]))",
            {"task_api_tasks_accepted_total"},
        ),
        (
            'histogram_quantile(0.99, sum by (le) (rate(x_bucket{a=~"$q([.]b)?"}[5m]))) > 1e3',
            {"x_bucket"},
        ),
        (
            '(sum(rate(a{s="5xx"}[1m])) or vector(0)) / on (job) group_left (x) b offset 5m',
            {"a", "b"},
        ),
        ('absent(up{job="w"} == 1)', {"up"}),
    ],
)
def test_metric_names_finds_the_series_an_expression_reads(
    expression: str, names: set[str]
) -> None:
    assert metric_names(expression) == names


def test_every_dashboard_query_reads_only_exported_metrics() -> None:
    queries = dashboard_queries(dashboard())
    assert queries
    for title, expression in queries:
        names = metric_names(expression)
        assert names, f"{title}: {expression} reads no metric"
        unknown = {name for name in names if not is_exported(name)}
        assert not unknown, f"panel {title!r} reads {unknown}, which nothing exports"


def test_every_exported_metric_is_on_the_dashboard() -> None:
    shown = {exported_metric(n) for _, e in dashboard_queries(dashboard()) for n in metric_names(e)}
    assert not (set(API_METRICS) | set(WORKER_METRICS)) - shown


def test_every_alert_reads_only_exported_metrics() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= {
        "TaskQueueWaitHigh",
        "TaskDeadLetterQueueGrowing",
        "TaskOutboxStale",
        "TaskTargetDown",
    }
    for rule in rules:
        unknown = {n for n in metric_names(rule["expr"]) if not is_exported(n) and n != "up"}
        assert not unknown, f"alert {rule['alert']} reads {unknown}, which nothing exports"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_dashboard_panels_use_the_provisioned_datasource_and_fit_the_grid() -> None:
    (datasource,) = load_yaml(GRAFANA_DATASOURCES)["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    panels = dashboard_panels(dashboard())
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        for source in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert source == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= GRID_COLUMNS, panel["title"]


def test_grafana_reads_the_files_where_compose_mounts_them() -> None:
    grafana = mounts("grafana")
    provisioning = PurePosixPath("/etc/grafana/provisioning")
    assert (
        grafana[str(GRAFANA_DATASOURCES.parent.relative_to(ROOT))] == provisioning / "datasources"
    )
    assert grafana[str(GRAFANA_DASHBOARD_PROVIDERS.parent.relative_to(ROOT))] == (
        provisioning / "dashboards"
    )
    (provider,) = load_yaml(GRAFANA_DASHBOARD_PROVIDERS)["providers"]
    dashboards = grafana[str(DASHBOARD.parent.relative_to(ROOT))]
    assert PurePosixPath(provider["options"]["path"]) == dashboards
    home = compose_environment("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert PurePosixPath(home) == dashboards / DASHBOARD.name


def test_prometheus_reads_the_committed_config_and_rules() -> None:
    prometheus = mounts("prometheus")
    config = prometheus[str(PROMETHEUS_CONFIG.relative_to(ROOT))]
    assert config == PurePosixPath("/etc/prometheus/prometheus.yml")  # the image's CMD reads it
    for rule_file in load_yaml(PROMETHEUS_CONFIG)["rule_files"]:
        committed = (PROMETHEUS_CONFIG.parent / rule_file).relative_to(ROOT)
        assert prometheus[str(committed)] == config.parent / rule_file


def test_prometheus_scrapes_the_api_every_worker_replica_and_rabbitmq() -> None:
    assert scrape_job("task-api")["static_configs"] == [{"targets": ["api_service:8000"]}]
    (discovery,) = scrape_job("task-worker")["dns_sd_configs"]
    worker_port = int(compose_environment("worker_service")["WORKER_HEALTH_PORT"])
    assert discovery == {**discovery, "names": ["worker_service"], "type": "A", "port": worker_port}
    broker = scrape_job("rabbitmq")
    assert broker["static_configs"] == [{"targets": ["rabbitmq:15692"]}]
    assert broker["metrics_path"] == "/metrics/per-object"  # each queue's depth, by name


def test_the_monitoring_services_start_only_with_their_profile() -> None:
    services = load_compose()["services"]
    assert services["prometheus"]["profiles"] == [PROFILE]
    assert services["grafana"]["profiles"] == [PROFILE]
    for name in ("mysql_db", "rabbitmq", "api_service", "worker_service"):
        assert PROFILE not in services[name].get("profiles", []), name
    for name in ("prometheus", "grafana"):
        assert "backend" in services[name]["networks"], name
        for port in services[name]["ports"]:
            assert substitute(str(port)).startswith("127.0.0.1:"), name


def test_rabbitmq_enables_its_prometheus_plugin_and_keeps_the_management_ui() -> None:
    plugins = compose_environment("rabbitmq")["RABBITMQ_ENABLED_PLUGINS"].split(",")
    assert {"rabbitmq_prometheus", "rabbitmq_management"} <= set(plugins)
