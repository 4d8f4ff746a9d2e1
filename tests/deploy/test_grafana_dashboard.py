"""deploy/grafana/tracked-jobs.json: a dashboard Grafana can load (its JSON shape, panels with
PromQL targets on the `datasource` variable), whose queries promtool parses and which shows
every metric the alerts read. That each name is one `/metrics` really exposes is checked on
a running stack: tests/e2e/test_dashboard_metrics.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promql import (
    alert_rules,
    dashboard,
    dashboard_panels,
    dashboard_queries,
    metric_names,
    promtool,
    with_grafana_values,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "heatmap", "text"}


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return dashboard()  # json.loads: a syntax error fails here


def test_the_dashboard_has_the_shape_grafana_loads(board: dict[str, Any]) -> None:
    assert isinstance(board["title"], str)
    assert board["title"]
    assert isinstance(board["uid"], str)
    assert 0 < len(board["uid"]) <= 40
    assert isinstance(board["schemaVersion"], int)
    assert "id" not in board or board["id"] is None  # Grafana gives it an id on import
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(dashboard_panels(board))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    graphs = [panel for panel in panels if panel["type"] != "row"]
    assert len(graphs) >= 10
    for panel in graphs:
        where = panel["title"]
        assert panel["type"] in PANEL_TYPES, where
        position = panel["gridPos"]
        assert all(isinstance(position[key], int) for key in ("h", "w", "x", "y")), where
        assert position["x"] >= 0, where
        assert position["x"] + position["w"] <= 24, where
        assert panel["datasource"] == DATASOURCE, where
        targets = panel["targets"]
        assert targets, f"{where}: no query"
        assert len({target["refId"] for target in targets}) == len(targets), where
        for target in targets:
            assert isinstance(target["expr"], str), where
            assert target["expr"].strip(), where
            assert target.get("datasource", DATASOURCE) == DATASOURCE, where


def test_panels_do_not_overlap(board: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard_panels(board):
        position = panel["gridPos"]
        for y in range(position["y"], position["y"] + position["h"]):
            for x in range(position["x"], position["x"] + position["w"]):
                assert (x, y) not in cells, f"{panel['title']} over {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_query_is_promql_that_promtool_parses(board: dict[str, Any], tmp_path: Path) -> None:
    """Catches: a query Prometheus would refuse (each is checked as a recording rule)."""
    queries = dashboard_queries(board)
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": with_grafana_values(query)}
                    for n, query in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(queries)} rules found" in checked.stdout


def test_the_dashboard_shows_every_metric_the_alerts_read(board: dict[str, Any]) -> None:
    shown = set().union(*(metric_names(query) for query in dashboard_queries(board)))
    for rule in alert_rules():
        assert metric_names(rule["expr"]) <= shown, rule["alert"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job="tracked-jobs"} == 0', {"up"}),
        (
            "sum by (queue, task) (max without (instance) "
            '(rate(bgjobs_finished_total{status="failed"}[5m]))) / sum by (queue, task) '
            "(rate(bgjobs_finished_total[$__rate_interval])) > 0.10",
            {"bgjobs_finished_total"},
        ),
        (
            "histogram_quantile(0.95, sum by (task, le) (rate(bgjobs_run_seconds_bucket[5m])))",
            {"bgjobs_run_seconds_bucket"},
        ),
        (
            'time() - max by (queue) (bgjobs_last{loop="a b (c)"}) > 3 * 3600 and on (queue) '
            "other_metric offset 1h unless bool_metric",
            {"bgjobs_last", "other_metric", "bool_metric"},
        ),
        ("sum(rate(x:recorded[1m:10s])) by (le) or vector(1e3)", {"x:recorded"}),
    ],
)
def test_the_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
