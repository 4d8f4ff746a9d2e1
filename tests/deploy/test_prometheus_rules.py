"""deploy/prometheus/alerts.yml: promtool's unit tests of every alert pass, each alert has a
case that fires and one that does not, written with the series the rules read, and the
firing cases fail when the alert never fires."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT
from tests.support.promql import ALERT_TESTS, ALERTS, alert_rules, metric_names, promtool

NEVER = "vector(1) < 0"  # an empty result: the alert never fires


def test_the_rules_file_is_valid() -> None:
    checked = promtool("check", "rules", ALERTS, cwd=ALERTS.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alerts_unit_tests_pass() -> None:
    files = sorted(ALERT_TESTS.glob("*.yml"))
    assert files
    tested = promtool("test", "rules", *files, cwd=ALERT_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def unit_test_cases() -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """(file, test group, alert_rule_test entry) of every unit test."""
    cases = []
    for path in sorted(ALERT_TESTS.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["tests"]:
            cases += [(path, group, entry) for entry in group.get("alert_rule_test", [])]
    return cases


ALERT_NAMES = [rule["alert"] for rule in alert_rules()]


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_each_alert_has_a_case_that_fires_and_one_that_does_not(alert: str) -> None:
    entries = [entry for _, _, entry in unit_test_cases() if entry["alertname"] == alert]
    assert any(entry.get("exp_alerts") for entry in entries), f"{alert}: no case fires"
    assert any(not entry.get("exp_alerts") for entry in entries), f"{alert}: every case fires"


def test_every_case_names_an_alert_of_the_rules() -> None:
    named = {entry["alertname"] for _, _, entry in unit_test_cases()}
    assert named <= set(ALERT_NAMES), named - set(ALERT_NAMES)


def test_the_cases_write_series_the_rules_read() -> None:
    """Catches: a case that does not fire only because its input names no series the rule
    reads (a typo)."""
    read = set().union(*(metric_names(rule["expr"]) for rule in alert_rules()))
    for path in sorted(ALERT_TESTS.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["tests"]:
            for series in group["input_series"]:
                (name,) = metric_names(series["series"])
                assert name in read, f"{path.name}: {group['name']}: {name}"


def test_the_readme_lists_every_alert() -> None:
    readme = (ROOT / "README.md").read_text()
    listed = re.findall(r"^\| `(TrackedJobs\w+)` \|", readme, re.MULTILINE)
    assert listed == ALERT_NAMES


def write_rules(folder: Path, alert: str, expr: str) -> None:
    """alerts.yml into `folder` with `alert`'s expression replaced (and no `for`)."""
    rules: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                rule["expr"] = expr
                rule.pop("for", None)
    (folder / ALERTS.name).write_text(yaml.safe_dump(rules))


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_the_cases_of_an_alert_that_never_fires_fail(alert: str, tmp_path: Path) -> None:
    """Catches: firing cases that pass whatever the rule says."""
    write_rules(tmp_path, alert, NEVER)
    (tmp_path / "tests").mkdir()
    for path in ALERT_TESTS.glob("*.yml"):
        shutil.copy(path, tmp_path / "tests" / path.name)
    tested = promtool("test", "rules", *sorted((tmp_path / "tests").glob("*.yml")), cwd=tmp_path)
    assert tested.returncode != 0, f"{alert} never firing passed its tests"
