"""The alerting rules of ``infra/prometheus/``, checked and unit-tested by promtool itself
(Debian's Prometheus, fetched once: ``caravan.infra.prometheus``)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from caravan.checkout import REPO_ROOT
from caravan.infra import prometheus
from caravan.infra.prometheus import ensure_prometheus
from caravan.output import OperatorError
from tests.unit.test_docs_links import anchors

RULES = REPO_ROOT / "infra" / "prometheus"
ALERTS = re.findall(r"^\s+- alert: (\w+)$", (RULES / "alerts.yml").read_text(), re.M)


@pytest.fixture(scope="module")
def promtool() -> Path:
    return ensure_prometheus(REPO_ROOT) / "promtool"


def run(*command: str | Path) -> str:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_rules_are_valid_promql(promtool: Path) -> None:
    said = run(promtool, "check", "rules", RULES / "alerts.yml")
    assert f"SUCCESS: {len(ALERTS)} rules found" in said, said


def test_each_alert_fires_when_and_only_when_its_tests_say(promtool: Path) -> None:
    assert "SUCCESS" in run(promtool, "test", "rules", RULES / "alerts_test.yml")


def test_every_alert_is_tested_firing() -> None:
    """Each rule of alerts.yml is expected to fire somewhere in alerts_test.yml (a rule
    without a test could never be seen to fire, its template never rendered)."""
    alerts = set(ALERTS)
    tests = (RULES / "alerts_test.yml").read_text()
    fired = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", tests))
    assert alerts and fired == alerts, sorted(alerts ^ fired)


def test_the_example_configuration_loads(promtool: Path, tmp_path: Path) -> None:
    """infra/prometheus/prometheus.yml, beside the token file it names, as Prometheus would
    load it (scrape targets, the token, the rules)."""
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copy(RULES / name, tmp_path / name)
    (tmp_path / "prometheus.token").write_text("a-token\n")
    said = run(promtool, "check", "config", tmp_path / "prometheus.yml")
    assert (
        "SUCCESS: 1 rule files found" in said and f"SUCCESS: {len(ALERTS)} rules found" in said
    ), said


def test_a_machine_that_never_fetched_its_package_lists_fetches_them_as_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``apt-get download`` on a bare image knows no package ("Unable to locate package"):
    as root the fetch runs ``apt-get update`` once and asks again; as anyone else it says
    why it failed."""
    ran: list[list[str]] = []
    lists: list[bool] = []

    def run(command: list[str], cwd: str | None = None) -> str:
        ran.append(command)
        if command[1] == "update":
            lists.append(True)
        elif not lists:
            raise OperatorError("apt-get download prometheus failed (E: Unable to locate package)")
        return ""

    monkeypatch.setattr(prometheus, "_run", run)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    prometheus.download("/tmp")
    assert [c[1] for c in ran] == ["download", "update", "download"]
    ran.clear()
    lists.clear()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(OperatorError, match="Unable to locate package"):
        prometheus.download("/tmp")
    assert [c[1] for c in ran] == ["download"]


def test_a_download_that_fails_otherwise_is_not_retried_after_an_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A network down is said as it is: no ``apt-get update`` of the machine's lists."""
    ran: list[list[str]] = []

    def run(command: list[str], cwd: str | None = None) -> str:
        ran.append(command)
        raise OperatorError("apt-get download prometheus failed (E: Failed to fetch ...)")

    monkeypatch.setattr(prometheus, "_run", run)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(OperatorError, match="Failed to fetch"):
        prometheus.download("/tmp")
    assert [c[1] for c in ran] == ["download"]


def test_each_alert_is_named_in_the_operations_guide() -> None:
    """Someone paged searches the docs for the alert's name: seven of them were described in
    docs/operations.md in words only (a newcomer's read found nothing by name)."""
    guide = (REPO_ROOT / "docs" / "operations.md").read_text()
    assert len(ALERTS) > 20
    assert [name for name in ALERTS if f"`{name}`" not in guide] == []


def test_an_alert_with_a_runbook_links_it_and_each_link_finds_its_section() -> None:
    """Someone paged reads the alert, not the guide: the guide's table linked many alerts to
    the section that says what to do, and the alerts themselves to none. Each alert a row of
    the table names alone with a section of docs/operations.md carries it as its ``runbook``,
    and each ``runbook`` names a section there is."""
    guide = REPO_ROOT / "docs" / "operations.md"
    rows = re.findall(r"^\| (`Caravan\w+`) \|(.*)\|$", guide.read_text(), re.M)
    linked = {
        name.strip("`"): f"docs/operations.md{links[0]}"
        for name, row in rows
        if (links := re.findall(r"\]\((#[a-z0-9-]+)\)", row))
    }
    said = {
        rule.split("\n", 1)[0]: runbook.group(1)
        for rule in (RULES / "alerts.yml").read_text().split("- alert: ")[1:]
        if (runbook := re.search(r"^\s+runbook: (\S+)$", rule, re.M))
    }
    assert len(linked) >= 10 and {a: said.get(a) for a in linked} == linked
    sections = anchors(guide)
    assert [r for r in said.values() if r.split("#")[1] not in sections] == []
