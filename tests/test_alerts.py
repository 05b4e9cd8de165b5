"""The alert rules: promtool checks and unit tests, conventions, runbook and test coverage."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from promql_names import (
    ALERTS_DIR,
    EXPORTED,
    ROOT,
    metric_names_in,
    rule_queries,
    template_queries,
)

RULE_FILES = sorted(ALERTS_DIR.glob("*.rules.yml"))
TEST_FILES = sorted((ALERTS_DIR / "tests").glob("*.yml"))
RUNBOOK = ALERTS_DIR / "runbook.md"
GROUPS = {
    "exporter", "proxmox", "jobs", "storage", "disks", "offsite", "verification", "assets",
    "policy", "sla",
}  # fmt: skip
SEVERITIES = {"critical", "warning", "info"}
# vector(1) cannot be false: the watchdog has no must-not-fire case by design.
ALWAYS_FIRING = {"BackupWatchdog"}


def require_tool(name: str) -> str:
    """The path of a real Prometheus tool; a missing one fails the test (never skips)."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(
            f"{name} is not installed: `make test` installs it "
            "(Debian: apt-get install prometheus prometheus-alertmanager)"
        )
    return path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in load(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def runbook_base() -> str:
    match = re.search(r"^Runbook base URL: `([^`]+)`$", RUNBOOK.read_text(), re.MULTILINE)
    assert match, "alerts/runbook.md must state its base URL on a 'Runbook base URL:' line"
    return match.group(1)


def runbook_sections() -> dict[str, str]:
    """Alert name → the text of its ``## Alert Name: <Name>`` section."""
    parts = re.split(r"^## ", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {m.group(1): part for part in parts if (m := re.match(r"Alert Name: (\w+)\n", part))}


# --------------------------------------------------------------------------------------
# promtool
# --------------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    result = run(promtool, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    promtool = require_tool("promtool")
    result = run(promtool, "test", "rules", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_reports_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: a wrong severity in a copy of a test file is caught."""
    promtool = require_tool("promtool")
    text = (ALERTS_DIR / "tests" / "jobs.test.yml").read_text()
    assert "severity: warning" in text
    broken = tmp_path / "tests" / "jobs.test.yml"
    broken.parent.mkdir()
    broken.write_text(text.replace("severity: warning", "severity: critical", 1))
    shutil.copy(ALERTS_DIR / "jobs.rules.yml", tmp_path / "jobs.rules.yml")
    result = run(promtool, "test", "rules", str(broken))
    assert result.returncode != 0
    assert "BackupJobOverdue" in result.stdout + result.stderr


def test_example_prometheus_config_is_valid() -> None:
    """deploy/prometheus.yml parses and loads every rule file (relative to itself)."""
    promtool = require_tool("promtool")
    result = run(promtool, "check", "config", str(ROOT / "deploy" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULE_FILES)} rule files found" in result.stdout
    scrape = load(ROOT / "deploy" / "prometheus.yml")["scrape_configs"]
    assert [job["job_name"] for job in scrape] == ["backup-exporter"]


# --------------------------------------------------------------------------------------
# Conventions
# --------------------------------------------------------------------------------------


def test_one_group_per_domain_file() -> None:
    assert {p.name.removesuffix(".rules.yml") for p in RULE_FILES} == GROUPS
    for path in RULE_FILES:
        groups = load(path)["groups"]
        assert [g["name"] for g in groups] == [f"backup-{path.name.removesuffix('.rules.yml')}"]


def test_alert_names_severities_and_labels() -> None:
    rules = alert_rules()
    assert len(rules) >= 25
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"Backup(?:[A-Z][a-z0-9]+)+", name), name
        labels = rule["labels"]
        assert labels["severity"] in SEVERITIES, name
        # Staleness alerts carry the label Alertmanager's inhibition matches on.
        assert labels.get("staleness", "true") == "true", name
        assert set(labels) <= {"severity", "staleness"}, name


def test_annotations() -> None:
    base = runbook_base()
    for rule in alert_rules():
        name, notes = rule["alert"], rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        summary, description = notes["summary"], notes["description"]
        assert "{{" not in summary, f"{name}: summary must be static"
        assert summary[0].isupper() and summary.endswith("."), name
        assert description.strip().endswith("."), name
        assert not re.search(r"\{\{\s*(\$labels|\.Labels)\s*\}\}", description), name
        # Alerts whose expression has labels say which thing they are about.
        if not re.match(r"\s*(vector|absent)\(", rule["expr"]):
            assert "$labels." in description, f"{name}: description is not templated"
        assert notes["runbook_url"] == f"{base}#alert-name-{name.lower()}", name


def test_every_alert_has_a_runbook_section_and_no_section_is_stale() -> None:
    sections = runbook_sections()
    names = {rule["alert"] for rule in alert_rules()}
    assert set(sections) == names
    for name, text in sections.items():
        for part in ("**Meaning.**", "**Impact.**", "**Diagnosis.**", "**Mitigation.**"):
            assert part in text, f"runbook section {name} lacks {part}"


def test_runbook_lists_the_staleness_alerts() -> None:
    text = RUNBOOK.read_text()
    section = text.split("## Staleness and inhibition", 1)[1].split("\n## ", 1)[0]
    stale = {r["alert"] for r in alert_rules() if r["labels"].get("staleness") == "true"}
    assert stale, "no alert is inhibited while its source is down"
    assert {name for name in stale if f"`{name}`" not in section} == set()


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhdw])", duration))


def test_the_inhibiting_source_alert_fires_before_staleness_alerts() -> None:
    """Inhibition only works if BackupSourceDown (info) is firing when they would notify."""
    rules = alert_rules()
    (inhibitor,) = [
        r for r in rules if r["alert"] == "BackupSourceDown" and r["labels"]["severity"] == "info"
    ]
    stale = [r for r in rules if r["labels"].get("staleness") == "true"]
    late = [r["alert"] for r in stale if _seconds(r.get("for", "0s")) < _seconds(inhibitor["for"])]
    assert late == []
    assert _seconds("1h30m") == 5400


def test_rule_and_test_files_pair_up() -> None:
    """One promtool test file per rule file, loading exactly that rule file."""
    for path in RULE_FILES:
        stem = path.name.removesuffix(".rules.yml")
        test = ALERTS_DIR / "tests" / f"{stem}.test.yml"
        assert test.exists(), f"missing {test}"
        assert load(test)["rule_files"] == [f"../{path.name}"]
    assert len(TEST_FILES) == len(RULE_FILES)


def test_every_alert_has_firing_and_non_firing_cases() -> None:
    fires: dict[str, set[str]] = defaultdict(set)  # alert -> severities seen firing
    quiet: set[str] = set()
    for path in TEST_FILES:
        for case in load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                name = check["alertname"]
                expected = check.get("exp_alerts") or []
                if not expected:
                    quiet.add(name)
                for alert in expected:
                    labels, notes = alert["exp_labels"], alert["exp_annotations"]
                    assert set(notes) == {"summary", "description", "runbook_url"}, name
                    fires[name].add(labels["severity"])
    severities: dict[str, set[str]] = defaultdict(set)
    for rule in alert_rules():
        severities[rule["alert"]].add(rule["labels"]["severity"])
    missing_fire = {n: s - fires[n] for n, s in severities.items() if s - fires[n]}
    assert missing_fire == {}, "alerts (severities) without a firing test case"
    assert set(severities) - ALWAYS_FIRING - quiet == set(), "alerts without a non-firing case"


# --------------------------------------------------------------------------------------
# Metric names
# --------------------------------------------------------------------------------------


def test_rules_use_only_exported_metrics() -> None:
    used = {name for _, expr in rule_queries() for name in metric_names_in(expr)}
    assert used - EXPORTED == set()
    assert "backup_job_overdue" in used  # the helper found names at all


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("backup_job_overdue == 1", {"backup_job_overdue"}),
        (
            'sum by (source, class) (rate(backup_source_api_requests_total{source=~"$source"}'
            "[$__rate_interval]))",
            {"backup_source_api_requests_total"},
        ),
        (
            "predict_linear(backup_zfs_dataset_used_bytes[1d], 7 * 86400)"
            " > on(source, dataset) (backup_zfs_dataset_quota_bytes > 0)",
            {"backup_zfs_dataset_used_bytes", "backup_zfs_dataset_quota_bytes"},
        ),
        (
            "a - on(x, y) group_left(name) b offset 5m > bool 1e9 unless ignoring(z) c @ 100",
            {"a", "b", "c"},
        ),
        (
            'label_replace(up{job="backup-exporter"} == 1, "reason", "none", "", "")'
            " or absent(foo:bar:rate5m)",
            {"up", "foo:bar:rate5m"},
        ),
        ('{__name__="backup_files", source="x"} and inf > nan', {"backup_files"}),
        ("label_values(backup_source_up, source)", {"backup_source_up"}),
        ("sum(x) without (instance) / count(time())", {"x"}),
        ("vector(1)", set()),
    ],
)
def test_metric_names_in(expr: str, names: set[str]) -> None:
    assert metric_names_in(expr) == names


def test_template_queries_are_extracted() -> None:
    text = (
        '{{ with printf "backup_pve_guest_info{source=%q,vmid=%q}" $labels.source '
        '$labels.vmid | query }}{{ . | first | label "name" }}{{ end }} and '
        "{{ with printf `x{a=%q} == 0` $labels.a | query }}y{{ end }}"
    )
    assert template_queries(text) == ['backup_pve_guest_info{source="",vmid=""}', 'x{a=""} == 0']
    queries = [q for _, q in rule_queries()]
    assert any(q.startswith("backup_job_last_success_timestamp_seconds{") for q in queries)
