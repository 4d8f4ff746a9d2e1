"""The metric names a PromQL expression reads, and the deploy/ files that hold expressions
(the Prometheus alert rules, the Grafana dashboard).

No PromQL parser ships for Python; promtool checks the syntax (tests/deploy), and this reads
the names: what is left once strings, label matchers, ranges, label lists (`by (...)`,
`on (...)`), Grafana variables, numbers, keywords and function calls are taken out.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.support.servers import ROOT

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "tests"
DASHBOARD = ROOT / "deploy" / "grafana" / "tracked-jobs.json"
# Series Prometheus makes itself for every target, not read from /metrics.
PROMETHEUS_SERIES = frozenset({"up"})
# What Grafana puts in place of its variables, to hand promtool plain PromQL.
GRAFANA_VALUES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "queue": ".*"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_NAME = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
     "group_left", "group_right", "inf", "nan", "atan2"}
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects (`rate(x[5m])` -> {"x"}); Grafana variables allowed."""
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub("1", text)  # a variable stands for a value, never for a metric
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _LABEL_LIST.sub("", text)
    text = re.sub(r"\b\d[\w.]*", "", text)  # numbers and durations (5m, 1e3, 0.95)
    return {
        name for name, call in _NAME.findall(text) if not call and name.lower() not in _KEYWORDS
    }


def with_grafana_values(expr: str) -> str:
    """`expr` with Grafana's variables replaced by values a plain PromQL parser takes."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in GRAFANA_VALUES:
            raise AssertionError(f"{name}: a variable the dashboard does not define")
        return GRAFANA_VALUES[name]

    return _VARIABLE.sub(value, expr)


def alert_rules() -> list[dict[str, Any]]:
    loaded: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: its panels' and its variables' queries."""
    queries = [
        target["expr"] for panel in dashboard_panels(board) for target in panel.get("targets", [])
    ]
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            # label_values(metric, label): the metric is the PromQL part.
            queries.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", text))
    return queries


def used_metric_names() -> dict[str, set[str]]:
    """metric name -> where it is used ("alert X", "panel Y")."""
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    board = dashboard()
    for query in dashboard_queries(board):
        for name in metric_names(query):
            used.setdefault(name, set()).add(f"dashboard query {query!r}")
    return used


def promtool(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Prometheus' promtool, run to its end."""
    binary = shutil.which("promtool")
    assert binary, (
        "promtool is missing: `make test` and `make lint` install Debian's prometheus package "
        "as root (or: apt-get install prometheus)"
    )
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
    )
