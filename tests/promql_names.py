"""Which metric names do the alert rules and dashboards use? (Pure helpers for tests.)

:func:`metric_names_in` extracts metric names from a PromQL expression: it drops strings,
label matchers, ranges, grouping label lists (``by``/``without``/``on``/``ignoring``/
``group_left``/``group_right``), numbers, durations and Grafana variables, then keeps the
identifiers that are neither keywords nor function or aggregation calls.
:func:`rule_queries` lists every expression of ``alerts/*.rules.yml`` including the queries
inside annotation templates (``printf "…%q…" … | query``), so a cross-check against a real
exposition sees every name the alerts depend on.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ALERTS_DIR = ROOT / "alerts"

# The metrics the exporter is specified to export; `up` is Prometheus's own. Rules and
# dashboards may use only these (tests/test_alerts.py, tests/test_dashboards.py); a test
# against a real exposition from the simulated homelab checks the exporter side.
EXPORTED = {
    "up",
    "backup_exporter_build_info",
    "backup_source_up",
    "backup_source_last_success_timestamp_seconds",
    "backup_source_poll_duration_seconds",
    "backup_source_api_requests_total",
    "backup_source_error_info",
    "backup_source_expected_offline",
    "backup_target_up",
    "backup_target_error_info",
    "backup_state_up",
    "backup_state_error_info",
    "backup_job_info",
    "backup_job_conflicts",
    "backup_job_expected_start_timestamp_seconds",
    "backup_job_next_start_timestamp_seconds",
    "backup_job_start_deadline_timestamp_seconds",
    "backup_job_finish_deadline_timestamp_seconds",
    "backup_job_last_start_timestamp_seconds",
    "backup_job_last_success_timestamp_seconds",
    "backup_job_last_duration_seconds",
    "backup_job_running",
    "backup_job_failed",
    "backup_job_overdue",
    "backup_job_start_missed",
    "backup_job_state",
    "backup_job_first_seen_timestamp_seconds",
    "backup_job_first_deadline_timestamp_seconds",
    "backup_job_warnings",
    "backup_job_max_duration_seconds",
    "backup_job_over_max_duration",
    "backup_pve_orphan_guest_archives",
    "backup_pve_orphan_archives",
    "backup_pve_job_disabled_since_timestamp_seconds",
    "backup_pve_job_disabled_too_long",
    "backup_policy_ok",
    "backup_policy_drift_info",
    "backup_pve_guest_info",
    "backup_pve_archive_last_timestamp_seconds",
    "backup_pve_archive_last_size_bytes",
    "backup_pve_archives",
    "backup_pve_archive_size_bytes",
    "backup_pve_archives_protected",
    "backup_pve_guest_not_backed_up",
    "backup_pve_storage_size_bytes",
    "backup_pve_storage_used_bytes",
    "backup_pve_job_info",
    "backup_pve_job_retention",
    "backup_pve_vzdump_last_success_timestamp_seconds",
    "backup_pve_vzdump_last_failure_timestamp_seconds",
    "backup_pve_retention_expected_archives",
    "backup_pve_retention_target_archives",
    "backup_pve_retention_projected_bytes",
    "backup_zfs_dataset_used_bytes",
    "backup_zfs_dataset_available_bytes",
    "backup_zfs_dataset_quota_bytes",
    "backup_zfs_dataset_referenced_bytes",
    "backup_zfs_snapshots",
    "backup_zfs_snapshot_newest_timestamp_seconds",
    "backup_zfs_snapshot_oldest_timestamp_seconds",
    "backup_zfs_pool_healthy",
    "backup_zfs_pool_state",
    "backup_zfs_scrub_last_end_timestamp_seconds",
    "backup_zfs_scrub_errors",
    "backup_zfs_scrub_running",
    "backup_smart_device_info",
    "backup_smart_healthy",
    "backup_smart_temperature_celsius",
    "backup_smart_power_on_seconds",
    "backup_smart_reallocated_sectors",
    "backup_smart_pending_sectors",
    "backup_smart_media_errors",
    "backup_smart_selftest_last_timestamp_seconds",
    "backup_smart_selftest_last_passed",
    "backup_cloudsync_last_success_timestamp_seconds",
    "backup_cloudsync_last_failure_timestamp_seconds",
    "backup_cloudsync_running",
    "backup_cloudsync_encrypted",
    "backup_bucket_objects",
    "backup_bucket_size_bytes",
    "backup_bucket_newest_object_timestamp_seconds",
    "backup_bucket_oldest_object_timestamp_seconds",
    "backup_bucket_last_listing_timestamp_seconds",
    "backup_bucket_estimated_monthly_cost_dollars",
    "backup_restore_check_last_success_timestamp_seconds",
    "backup_restore_check_success",
    "backup_restore_check_duration_seconds",
    "backup_restore_check_bytes",
    "backup_files_newest_timestamp_seconds",
    "backup_files",
    "backup_files_size_bytes",
    "backup_asset_info",
    "backup_asset_rpo_seconds",
    "backup_asset_copies",
    "backup_asset_offsite_copies",
    "backup_asset_newest_copy_timestamp_seconds",
    "backup_asset_compliant",
    "backup_asset_state",
    "backup_asset_reason_info",
    "backup_asset_last_known_timestamp_seconds",
    "backup_asset_runs_expected_total",
    "backup_asset_runs_met_total",
    "backup_asset_sla_target_ratio",
    "backup_job_runs_expected_total",
    "backup_job_runs_met_total",
    "backup_verification_last_timestamp_seconds",
    "backup_verification_interval_seconds",
    "backup_verification_due_timestamp_seconds",
    # Recorded by alerts/sla.rules.yml.
    "backup_job:backup_sla_ratio:7d",
    "backup_job:backup_sla_ratio:30d",
    "asset:backup_sla_ratio:7d",
    "asset:backup_sla_ratio:30d",
}

_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "inf",
        "nan",
        "atan2",
    }
)
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"((?:\\.|[^"\\])*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-zA-Z]+")
_NUMBER = re.compile(r"(?<![\w:.])(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names_in(expr: str) -> set[str]:
    """The metric names an expression selects (``label_values(m, l)`` counts ``m``)."""
    names = set(_NAME_MATCHER.findall(expr))
    lv = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", expr, re.DOTALL)
    if lv:
        expr = lv.group(1)
    text = _STRING.sub(" ", expr)
    text = re.sub(r"\{[^}]*\}", " ", _VARIABLE.sub(" ", text))
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    for match in _IDENT.finditer(text):
        word = match.group(0)
        if word.lower() in _KEYWORDS:
            continue
        if re.match(r"\s*\(", text[match.end() :]):
            continue  # a function or an aggregation
        names.add(word)
    return names


# printf "…" or printf `…` in a Go template, then its arguments.
_PRINTF = re.compile(r'printf\s+("(?:\\.|[^"\\])*"|`[^`]*`)')


def template_queries(text: str) -> list[str]:
    """The PromQL of every ``printf`` format in an annotation template (``%q`` → ``""``)."""
    out = []
    for literal in _PRINTF.findall(text):
        body = literal[1:-1]
        if literal.startswith('"'):
            body = body.replace('\\"', '"').replace("\\\\", "\\")
        out.append(body.replace("%q", '""').replace("%s", ""))
    return out


def rule_queries(alerts_dir: Path = ALERTS_DIR) -> list[tuple[str, str]]:
    """``(alert name, PromQL)`` for every rule expression and annotation query."""
    out: list[tuple[str, str]] = []
    for path in sorted(alerts_dir.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                out.append((name, rule["expr"]))
                for text in rule.get("annotations", {}).values():
                    out.extend((name, q) for q in template_queries(text))
    return out


def recorded_names(alerts_dir: Path = ALERTS_DIR) -> set[str]:
    """The series the recording rules make (Prometheus, not the exporter, exports them)."""
    return {
        rule["record"]
        for path in sorted(alerts_dir.glob("*.rules.yml"))
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def rule_metric_names(alerts_dir: Path = ALERTS_DIR) -> dict[str, set[str]]:
    """Metric name → the alerts that use it (``up`` included: it is Prometheus's own)."""
    used: dict[str, set[str]] = {}
    for alert, expr in rule_queries(alerts_dir):
        for name in metric_names_in(expr):
            used.setdefault(name, set()).add(alert)
    return used
