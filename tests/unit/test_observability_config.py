"""Every Grafana panel and every alert rule queries metrics the worker exports; rules are valid PromQL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest
import yaml

from streams.metrics import Metrics
from streams.settings import load_settings
from streams.web import authorized
from tests.conftest import REPO

METRIC = re.compile(r"\bgeopush_[a-z_]+\b")
EXPORTED = Metrics().names()


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads((REPO / "config" / "grafana" / "dashboards" / "geopush.json").read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]


def rule_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load((REPO / "config" / "prometheus" / "alerts.yml").read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


@pytest.mark.parametrize(("where", "expr"), dashboard_exprs() + rule_exprs())
def test_queries_use_exported_metrics(where: str, expr: str) -> None:
    used = set(METRIC.findall(expr))
    assert used, f"{where}: queries no geopush metric"
    assert used <= EXPORTED, f"{where}: {sorted(used - EXPORTED)} not exported by the worker"


def test_the_required_alerts_and_panels_exist() -> None:
    alerts = {name for name, _ in rule_exprs()}
    assert {"GeopushLagGrowing", "GeopushDeadLetters", "GeopushFcmErrors"} <= alerts
    panels = " ".join(expr for _, expr in dashboard_exprs())
    for metric in (
        "geopush_consumer_lag",
        "geopush_deliveries_total",
        "geopush_decisions_total",
        "geopush_catalog_info",
    ):
        assert metric in panels


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with the prometheus package (scripts/system-packages.sh)"
    done = subprocess.run([promtool, "check", "rules", str(REPO / "config" / "prometheus" / "alerts.yml")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_provisioning_points_at_the_dashboards_and_datasource() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    provider = yaml.safe_load((REPO / "config/grafana/provisioning/dashboards/geopush.yml").read_text())
    assert mounts["./config/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    ds = yaml.safe_load((REPO / "config/grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in ds["datasources"]}
    board = json.loads((REPO / "config" / "grafana" / "dashboards" / "geopush.json").read_text())
    assert {p["datasource"]["uid"] for p in board["panels"]} <= uids


def request(headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(headers=headers or {}, query=query or {})


def test_dashboard_token_rules() -> None:
    loopback = load_settings({})
    assert authorized(loopback, request())
    exposed = load_settings({}, web_host="0.0.0.0")
    assert not authorized(exposed, request()), "no token configured: closed, not open"
    guarded = load_settings({}, web_host="0.0.0.0", web_token="t0ken")
    assert not authorized(guarded, request())
    assert not authorized(guarded, request({"Authorization": "Bearer nope"}))
    assert authorized(guarded, request({"Authorization": "Bearer t0ken"}))
    assert authorized(guarded, request(query={"token": "t0ken"}))


def test_ready_only_once_every_step_finished_its_first_assignment() -> None:
    """/readyz's steps_started: a step that got no partition still counts as started; a step
    whose first assignment is still restoring (not reported yet) keeps the worker unready."""
    m = Metrics()
    groups = ["g-decide", "g-budget", "g-delivery"]
    assert not m.started(groups)
    m.set_assigned("g-decide", "pings", 12)
    m.set_assigned("g-budget", "outbox", 0)
    assert not m.started(groups)
    m.set_assigned("g-delivery", "notifications", 3)
    assert m.started(groups)
    m.set_assigned("g-decide", "pings", 0)  # a later revocation does not un-start the step
    assert m.started(groups)
