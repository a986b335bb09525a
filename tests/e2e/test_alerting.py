"""The alert rules and the dashboard against a live mesh: every series and label they
query is in what the monitor's and the scheduler's /metrics really serve."""

from __future__ import annotations

import time
import urllib.request

import pytest

import core.metrics
import monitor_svc.metrics
from tests.support.promql import catalog_of, catalog_of_exposition, deployed_expressions, problems
from tests.support.real_mesh import RealMesh, final, wait_runs

pytestmark = pytest.mark.e2e


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text: str = resp.read().decode()
    return text


def label_values(text: str, label: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.labels[label] for f in text_string_to_metric_families(text) for s in f.samples if label in s.labels}


@pytest.mark.timeout(120)
def test_rules_and_dashboard_query_what_the_live_mesh_exports(real_mesh: RealMesh) -> None:
    mesh = real_mesh
    token, _ = mesh.user("alerting")
    for script in ("print(1)", "raise SystemExit(1)"):
        job = mesh.create_one_time(token, script)
        wait_runs(mesh, token, job["jobId"], final)
    time.sleep(6)  # the monitor observes finished runs 5 s behind
    assert mesh.call("GET", "/api/health")[0] == 200  # an RPC the monitor's gRPC instruments count
    text = scrape(mesh.monitor_http + "/metrics") + scrape(mesh.scheduler_metrics + "/metrics")
    live = catalog_of_exposition(text)
    # What the unit tests check against (the instruments' own catalog) is what is served.
    declared = catalog_of([getattr(m, n) for m in (monitor_svc.metrics, core.metrics) for n in dir(m)])
    for name, labels in declared.items():
        if not name.endswith("_created"):
            assert live.get(name) == labels, name
    values = {label: label_values(text, label) for label in ("status", "reason")}
    assert {"LOST", "FAILED", "SUCCEEDED"} <= values["status"] and {"misfire", "overlap"} <= values["reason"]
    for where, expr in deployed_expressions():
        assert problems(expr, live, values) == [], where
