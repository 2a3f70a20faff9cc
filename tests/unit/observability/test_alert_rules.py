"""The shipped PrometheusRule is a valid rule file (`promtool check rules`) whose alerts fire when
they should and stay quiet otherwise (`promtool test rules`, alert_rules_test.yaml). promtool
comes with Debian's `prometheus` package (hack/lib/install-deps.sh)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
RULE = REPO / "manifests" / "components" / "monitoring" / "prometheusrule.yaml"
TESTS = Path(__file__).with_name("alert_rules_test.yaml")
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (hack/lib/install-deps.sh)")


def _rule_file(directory: Path) -> Path:
    """spec.groups of the PrometheusRule, as the plain rule file the Prometheus Operator makes of it."""
    rule = yaml.safe_load(RULE.read_text())
    assert rule["kind"] == "PrometheusRule"
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_the_rules_are_valid(tmp_path: Path) -> None:
    proc = _promtool("check", "rules", str(_rule_file(tmp_path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 4 rules found" in proc.stdout + proc.stderr


def test_the_alerts_fire_when_they_should(tmp_path: Path) -> None:
    _rule_file(tmp_path)
    shutil.copy(TESTS, tmp_path / TESTS.name)
    proc = _promtool("test", "rules", str(tmp_path / TESTS.name))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_is_tested() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULE.read_text())["spec"]["groups"] for r in g["rules"]}
    tested = {t["alertname"] for case in yaml.safe_load(TESTS.read_text())["tests"] for t in case["alert_rule_test"]}
    assert alerts == tested


def test_a_broken_rule_is_caught(tmp_path: Path) -> None:
    """The check is real: promtool refuses an expression that does not parse."""
    path = _rule_file(tmp_path)
    path.write_text(path.read_text().replace("> 300", "> > 300"))
    assert _promtool("check", "rules", str(path)).returncode != 0
