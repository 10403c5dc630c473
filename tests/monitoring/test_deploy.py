"""deploy/: the Prometheus alert rules pass promtool and their own unit tests (each alert raised
and resolved), and every metric the rules and the Grafana dashboard name is one we export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from monitoring import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "wedsync-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "wedsync-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "wedsync-realtime.json"
OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"

_METRIC_NAME = re.compile(r"\bwedsync_[a-z0-9_]+")
_SAMPLE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def exported_sample_names() -> set[str]:
    """Every sample name monitoring/metrics.py can export, labelled or not, incremented or not."""
    names: set[str] = set()
    for declared in vars(metrics).values():
        if isinstance(declared, MetricWrapperBase | metrics.DatabasePoolCollector):
            for family in declared.describe():
                names.update(family.name + suffix for suffix in _SAMPLE_SUFFIXES[family.type])
    return names


def _rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def _dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_the_export_list_is_read_from_the_declarations() -> None:
    names = exported_sample_names()
    assert {"wedsync_delivery_latency_seconds_bucket", "wedsync_socket_closes_total", "wedsync_sockets_open"} <= names
    assert "wedsync_db_pool_timeouts_total" in names  # from the scrape-time collector
    assert "wedsync_sockets_open_total" not in names


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_the_rules_and_the_dashboard_name_is_exported(source: str) -> None:
    expressions = _rule_expressions() if source == "rules" else _dashboard_expressions()
    named = {name for expression in expressions for name in _METRIC_NAME.findall(expression)}
    assert len(named) >= 5, named
    assert sorted(named - exported_sample_names()) == []


def test_every_alert_has_a_runbook_in_the_operations_guide() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    headings = {line.removeprefix("### ").strip() for line in OPERATIONS.read_text().splitlines()}
    for rule in (rule for group in groups for rule in group["rules"]):
        assert rule["alert"] in headings, f"docs/operations.md has no '### {rule['alert']}' runbook"
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"


@pytest.mark.requires_promtool
def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
