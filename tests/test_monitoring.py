"""deploy/monitoring/: every series the Grafana dashboard and the Prometheus alert rules query is one the service
exports, with the labels it has, and every expression parses as PromQL, so a renamed metric or tag fails here, not
on an on-call engineer's empty panel. And the ingress records its stage seconds by endpoint, without a sample for a
stage that did not run. tests/test_service.py::test_product_metrics_are_exported_for_prometheus checks the same
names on a real app's Prometheus endpoint."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import promql_parser
import pytest
import yaml
from ray.serve.metrics import Counter, Gauge, Histogram

from deployments.errors import error_outcome
from deployments.metrics import STAGES, RecognizerMetrics
from pipeline.core.paths import REPO_ROOT
from tests.ingress_fakes import Service, in_process_service, shelf_photo, use_policy

MONITORING = REPO_ROOT / "deploy" / "monitoring"
SERVE_TAGS = {"deployment", "replica", "application"}  # what Serve adds to a replica's metrics (ray.serve.metrics)

RAY_SERVE_SERIES = {
    # Ray Serve 2.60's own series as Prometheus sees them (`ray_` prefix, counters' `_total`), with their tags;
    # registered in ray/serve/_private/request_ingress_metrics.py (`serve_num_{protocol}_requests`,
    # `serve_{protocol}_request_latency_ms`), deployment_state.py, batching.py. The real app's scrape checks them.
    "ray_serve_num_http_requests_total": {"route", "method", "application", "status_code"},
    "ray_serve_http_request_latency_ms_bucket": {"route", "method", "application", "status_code", "le"},
    "ray_serve_deployment_replica_healthy": {"deployment", "replica", "application"},
    "ray_serve_deployment_status": {"deployment", "application"},
    "ray_serve_actual_batch_size_sum": SERVE_TAGS | {"function_name"},
    "ray_serve_actual_batch_size_count": SERVE_TAGS | {"function_name"},
}


def product_series() -> dict[str, set[str]]:
    """The series deployments/metrics.py's metrics export, with their tags: {name: labels}."""
    series = {}
    for metric in vars(RecognizerMetrics(error_outcome)).values():
        if not isinstance(metric, Counter | Gauge | Histogram):
            continue
        name, tags = f"ray_{metric._name}", set(metric._tag_keys) | SERVE_TAGS
        if isinstance(metric, Counter):
            series[f"{name}_total"] = tags
        elif isinstance(metric, Histogram):
            series |= {f"{name}_bucket": tags | {"le"}, f"{name}_sum": tags, f"{name}_count": tags}
        else:
            series[name] = tags
    return series


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for each of the dashboard's queries; Grafana's $__rate_interval read as 5m."""
    for panel in json.loads((MONITORING / "grafana-dashboard.json").read_text())["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"].replace("$__rate_interval", "5m")


def alert_queries() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load((MONITORING / "alert-rules.yaml").read_text())["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "for", "labels", "annotations"} <= set(rule), rule
            yield rule["alert"], rule["expr"]


def series_and_labels(expression: str) -> tuple[dict[str, set[str]], set[str]]:
    """The series an expression selects, each with the labels its matchers name, and the labels it groups by."""
    selected: dict[str, set[str]] = {}
    grouped: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            selected.setdefault(node.name or "", set()).update(matcher.name for matcher in node.matchers.matchers)
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouped.update(node.modifier.labels)

    promql_parser.walk(promql_parser.parse(expression), visit)  # ValueError: not PromQL
    return selected, grouped


def test_the_product_metrics_are_named_by_prometheus_conventions():
    series = product_series()
    assert "ray_product_stage_seconds_bucket" in series and {"endpoint", "stage"} <= series["ray_product_stage_seconds_bucket"]
    assert not any(name.endswith("_ms") or "_ms_" in name for name in series), series  # seconds, not milliseconds


@pytest.mark.parametrize("source", [dashboard_queries, alert_queries])
def test_every_queried_series_is_exported_with_the_labels_queried(source):
    exported = product_series() | RAY_SERVE_SERIES
    queries = list(source())
    assert queries
    for where, expression in queries:
        selected, grouped = series_and_labels(expression)
        assert selected, where
        for name, labels in selected.items():
            assert name in exported, f"{where}: {name} is not exported"
            assert labels <= exported[name], f"{where}: {name} has no {labels - exported[name]}"
        available = set().union(*(exported[name] for name in selected))
        assert grouped <= available, f"{where}: grouped by {grouped - available}, which none of {set(selected)} has"


def test_the_alerts_cover_errors_latency_shedding_and_replicas():
    queried = {name: series_and_labels(expression)[0] for name, expression in alert_queries()}
    assert "ray_serve_deployment_replica_healthy" in queried["ProductModelDeploymentNoHealthyReplica"]
    assert "ray_product_stage_seconds_bucket" in queried["ProductLatencyP99High"]
    assert "ray_serve_num_http_requests_total" in queried["ProductShedRateHigh"]
    assert "ray_serve_num_http_requests_total" in queried["ProductErrorRatioHigh"]


@pytest.fixture
def service(monkeypatch) -> Iterator[Service]:
    yield from in_process_service(monkeypatch)


def test_stage_seconds_are_observed_by_endpoint_and_only_for_the_stages_that_ran(service):
    """/hello under the whole-photo policy (the shipped model's) with no product enrolled answers from the whole
    photo without asking the detector: it observes no detect stage; /v1/recognize observes all six, in seconds."""
    use_policy(service.replica, "whole_photo")
    observed = []

    class Recorder:
        def observe(self, value, tags=None):
            observed.append((tags["endpoint"], tags["stage"], value))

    service.replica.metrics.stage_seconds = Recorder()
    hello = service.hello(shelf_photo())
    assert hello.status_code == 200
    assert not service.detector.detect.calls
    assert [stage for endpoint, stage, _ in observed if endpoint == "/hello"] == [s for s in STAGES if s != "detect"]
    observed.clear()
    answer = service.recognize(shelf_photo())
    assert answer.status_code == 200 and service.detector.detect.calls
    assert [(endpoint, stage) for endpoint, stage, _ in observed] == [("/v1/recognize", stage) for stage in STAGES]
    seconds = {stage: value for _, stage, value in observed}
    timings = answer.json()["timings"]
    assert seconds["total"] == pytest.approx(timings["total_ms"] / 1000, abs=1e-4)
    assert seconds["detect"] == pytest.approx(timings["detect_ms"] / 1000, abs=1e-4) and seconds["detect"] > 0


def test_the_health_check_sets_the_in_flight_gauges_again(service):
    """Ray drops a gauge not set within two metrics export intervals: an idle replica's in-flight count is set
    again at each health check (every 10 s), so it reads 0 instead of vanishing."""
    gauge_sets = []

    class Recorder:
        def set(self, value, tags=None):
            gauge_sets.append((tags["endpoint"], value))

    service.replica.metrics.in_flight = Recorder()
    assert service.hello(shelf_photo()).status_code == 200
    assert gauge_sets == [("/hello", 1), ("/hello", 0)]
    gauge_sets.clear()
    asyncio.run(service.replica.check_health())
    assert gauge_sets == [("/hello", 0)]
