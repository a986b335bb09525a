"""deploy/: the Prometheus alert rules pass promtool's checks and unit tests, and the rules
and the Grafana dashboard query only series that the monitor and the scheduler export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import core.metrics
import monitor_svc.metrics
from core.domain import JobState, RunStatus, SkipReason
from tests.support.promql import (
    ALERTS,
    DASHBOARD,
    PROMETHEUS,
    ROOT,
    SCRAPE_JOBS,
    alert_rules,
    catalog_of,
    dashboard_queries,
    parse,
    problems,
)

# Every series the processes export, from the instruments themselves.
CATALOG = catalog_of([getattr(module, name) for module in (monitor_svc.metrics, core.metrics) for name in dir(module)])
LABEL_VALUES = {
    "status": {s.value for s in RunStatus},
    "reason": {r.value for r in SkipReason},
    "state": {s.value for s in JobState},
    "job": SCRAPE_JOBS,
}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: make test-tools (Debian package prometheus)"
    return path


def run_promtool(*args: str, cwd: Path = ROOT) -> None:
    result = subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_catalog_knows_the_exported_series() -> None:
    assert {"jobmesh_runs_finished_total", "jobmesh_schedule_lateness_seconds_bucket", "jobmesh_workers_alive",
            "grpc_server_handled_total"} <= CATALOG.keys()  # fmt: skip
    assert CATALOG["jobmesh_runs_finished_total"] == {"status"}
    assert "le" in CATALOG["jobmesh_run_duration_seconds_bucket"]


def test_promtool_checks_the_rules_and_the_config() -> None:
    run_promtool("check", "rules", str(ALERTS))
    run_promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))


def test_promtool_rule_unit_tests_pass() -> None:
    run_promtool("test", "rules", "alerts.test.yml", cwd=PROMETHEUS)


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in alert_rules():
        name = rule["alert"]
        assert any(c["alertname"] == name and c.get("exp_alerts") for c in cases), f"{name} never fires in a test"
        assert any(c["alertname"] == name and not c.get("exp_alerts") for c in cases), f"{name} never stays silent"


def test_every_alert_has_for_severity_summary_description_and_runbook() -> None:
    readme = (ROOT / "README.md").read_text()
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: no for:"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert annotations["summary"] and len(annotations["description"]) > 60, name
        assert annotations["runbook_url"] == "README.md#alerts-and-dashboard", name
        assert f"`{name}`" in readme, f"README.md's runbook table lacks {name}"
    assert "### Alerts and dashboard" in readme


def test_alert_rules_use_only_exported_metrics_and_labels() -> None:
    for rule in alert_rules():
        assert problems(rule["expr"], CATALOG, LABEL_VALUES) == [], rule["alert"]


def test_a_rule_on_a_metric_that_does_not_exist_fails(tmp_path: Path) -> None:
    """The checks above catch a misspelt metric, label or label value in a rule."""
    text = ALERTS.read_text()
    for good, bad in (
        ("jobmesh_workers_alive", "jobmesh_worker_alive"),
        ('status="LOST"', 'status="LOSTT"'),
        ("sum by (reason)", "sum by (reasons)"),
        ("jobmesh_schedule_lateness_seconds_bucket", "jobmesh_schedule_lateness_bucket"),
    ):
        assert good in text
        broken = tmp_path / "alerts.yml"
        broken.write_text(text.replace(good, bad, 1))
        found = [p for rule in alert_rules(broken) for p in problems(rule["expr"], CATALOG, LABEL_VALUES)]
        assert found, f"{bad} went unnoticed"


def test_the_scrape_jobs_are_the_readmes() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} == SCRAPE_JOBS
    readme = (ROOT / "README.md").read_text()
    for job in SCRAPE_JOBS:
        assert f"job_name: {job}" in readme


def test_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 10
    for where, expr in queries:
        assert problems(expr, CATALOG, LABEL_VALUES) == [], where
    used = {s.metric for _, expr in queries for s in parse(expr).selectors}
    for wanted in ("jobmesh_runs", "jobmesh_runs_finished_total", "jobmesh_schedule_lateness_seconds_bucket",
                   "jobmesh_queue_depth", "jobmesh_workers_alive", "jobmesh_run_duration_seconds_bucket",
                   "jobmesh_runs_skipped_total", "jobmesh_oldest_pending_age_seconds"):  # fmt: skip
        assert wanted in used, f"the dashboard shows no {wanted}"


def test_dashboard_has_a_prometheus_datasource_variable_used_by_every_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for variable in variables.values():
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
            assert match, variable["definition"]
            assert match.group(2) in CATALOG[match.group(1)], variable["definition"]
    ids = []
    for panel in dashboard["panels"]:
        ids.append(panel["id"])
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("expr", "wanted"),
    [
        ('sum(rate(jobmesh_runs_finished_total{status="FAILED"}[5m]))', []),
        ("jobmesh_no_such_metric > 0", ["unknown metric jobmesh_no_such_metric"]),
        ('jobmesh_runs{colour="red"}', ["jobmesh_runs has no label colour"]),
        ('jobmesh_runs{status=~"QUEUED|WAITING"}', ["jobmesh_runs{status} never has the value 'WAITING'"]),
        ("sum by (queue) (jobmesh_runs)", ["grouping by queue, which no metric of the expression has"]),
        ('up{job="jobmesh-scheduler"} == 0', []),
        ('sum by (queue) (jobmesh_queue_depth{queue=~"$queue"})', []),
    ],
)
def test_the_expression_checker(expr: str, wanted: list[str]) -> None:
    assert problems(expr, CATALOG, LABEL_VALUES) == wanted
