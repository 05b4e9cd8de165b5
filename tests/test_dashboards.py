"""The Grafana dashboards: generated (not hand-edited), provisionable, filtered by source.

There is no Grafana server to load them into (test-components.md §10), so the JSON is checked
structurally, every query is parsed by promtool, and the non-trivial table queries are
evaluated by promtool against known series.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from promql_names import EXPORTED, ROOT, metric_names_in
from test_alerts import require_tool, run

DASHBOARDS_DIR = ROOT / "dashboards"
UIDS = {"backup-overview", "backup-proxmox", "backup-storage", "backup-offsite", "backup-exporter"}
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
SOURCE_MATCHER = 'source=~"$source"'


def load_generator() -> ModuleType:
    """Import dashboards/generate.py (a script, not a package module)."""
    name = "backup_dashboards_generate"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DASHBOARDS_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gen = load_generator()


def committed() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS_DIR.glob("*.json"))
    }


def panels(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in data["panels"]:
        yield panel
        yield from panel.get("panels", [])


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair in a JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def expr_of(uid: str, title: str, ref: str) -> str:
    for data in committed().values():
        if data["uid"] != uid:
            continue
        for panel in panels(data):
            if panel["title"] == title:
                for target in panel["targets"]:
                    if target["refId"] == ref:
                        return gen.resolve_variables(target["expr"])
    raise KeyError((uid, title, ref))


def test_committed_json_is_what_the_generator_produces(tmp_path: Path) -> None:
    written = gen.write(tmp_path)
    assert {p.name for p in written} == {p.name for p in DASHBOARDS_DIR.glob("*.json")}
    for path in written:
        ours = (DASHBOARDS_DIR / path.name).read_text(encoding="utf-8")
        assert ours == path.read_text(encoding="utf-8"), (
            f"dashboards/{path.name} differs from the generator's output: "
            "edit dashboards/generate.py and run `python dashboards/generate.py`"
        )


def test_uids_titles_and_tags() -> None:
    dashboards = committed().values()
    uids = [d["uid"] for d in dashboards]
    assert sorted(uids) == sorted(UIDS)
    titles = [d["title"] for d in dashboards]
    assert len(set(titles)) == len(titles)
    for data in dashboards:
        assert data["tags"] == ["backups"]
        assert data.get("id") is None, "a provisioned dashboard has no fixed numeric id"


def test_provisionable_without_inputs_or_fixed_datasources() -> None:
    for name, data in committed().items():
        keys = {key for key, _ in walk(data)}
        assert "__inputs" not in keys and "__requires" not in keys, name
        for key, value in walk(data):
            if key == "datasource":
                assert value == DS_REF, f"{name}: datasource {value}"
            if isinstance(value, str):
                assert "DS_" not in value, f"{name}: export-for-sharing placeholder {value}"


def test_variables() -> None:
    for name, data in committed().items():
        variables = {v["name"]: v for v in data["templating"]["list"]}
        assert set(variables) == {"datasource", "source"}, name
        ds = variables["datasource"]
        assert (ds["type"], ds["query"]) == ("datasource", "prometheus"), name
        source = variables["source"]
        assert source["type"] == "query"
        assert source["datasource"] == DS_REF
        assert source["query"] == "label_values(backup_source_up, source)"
        assert source["includeAll"] is True and source["multi"] is True
        assert source["allValue"] == ".*"


def test_every_selector_is_filtered_by_source() -> None:
    queries = gen.all_queries()
    assert queries
    for uid, title, expr in queries:
        assert SOURCE_MATCHER in expr, (uid, title)
        # Every backup_* selector carries the matcher, not just one of them
        # (label lists such as `by (source, backup_job)` are not selectors).
        selectors = re.sub(r"\b(?:by|without|on|ignoring|group_\w+)\s*\([^)]*\)", " ", expr)
        for match in re.finditer(r"(backup_[a-z_]+)(\{[^}]*\})?", selectors):
            assert match.group(2) and SOURCE_MATCHER in match.group(2), (uid, title, expr)


def test_panels_have_stable_ids_titles_and_descriptions() -> None:
    for name, data in committed().items():
        ids = [p["id"] for p in panels(data)]
        assert all(isinstance(i, int) and i > 0 for i in ids), name
        assert len(set(ids)) == len(ids), name
        titles = [p["title"] for p in panels(data)]
        assert len(set(titles)) == len(titles), name
        for panel in panels(data):
            assert panel["title"], name
            if panel["type"] == "row":
                continue
            assert panel["description"], (name, panel["title"])
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(set(refs)) == len(refs), (name, panel["title"])
            assert all(t["expr"] for t in panel["targets"])


def test_rates_use_the_rate_interval() -> None:
    for uid, title, expr in gen.all_queries():
        for match in re.finditer(r"\b(?:rate|irate|increase)\([^\[]*\[([^\]]+)\]", expr):
            # Whole days are SLA periods (runs per day, 7 and 30 days), not smoothing windows.
            window = match.group(1)
            assert window == "$__rate_interval" or re.fullmatch(r"\d+d", window), (uid, title)


def test_all_queries_lists_every_target() -> None:
    targets = [
        (data["uid"], panel["title"], target["expr"])
        for data in committed().values()
        for panel in panels(data)
        for target in panel.get("targets", [])
    ]
    assert sorted(gen.all_queries()) == sorted(targets)


def test_content_per_dashboard() -> None:
    """The panels the issue asks for exist (by the metrics they read)."""
    used: dict[str, set[str]] = {}
    for uid, _, expr in gen.all_queries():
        used.setdefault(uid, set()).update(metric_names_in(expr))
    assert {
        "backup_job_overdue",
        "backup_job_failed",
        "backup_job_running",
        "backup_job_last_success_timestamp_seconds",
        "backup_job_finish_deadline_timestamp_seconds",
        "backup_job_next_start_timestamp_seconds",
    } <= used["backup-overview"]
    assert {
        "backup_pve_archive_last_timestamp_seconds",
        "backup_pve_archives",
        "backup_pve_retention_expected_archives",
        "backup_pve_archive_last_size_bytes",
        "backup_pve_archive_size_bytes",
    } <= used["backup-proxmox"]
    assert {
        "backup_pve_storage_used_bytes",
        "backup_pve_retention_projected_bytes",
        "backup_zfs_dataset_quota_bytes",
        "backup_zfs_snapshot_newest_timestamp_seconds",
        "backup_zfs_scrub_last_end_timestamp_seconds",
        "backup_smart_healthy",
    } <= used["backup-storage"]
    assert {
        "backup_bucket_newest_object_timestamp_seconds",
        "backup_bucket_size_bytes",
        "backup_bucket_estimated_monthly_cost_dollars",
        "backup_restore_check_success",
    } <= used["backup-offsite"]
    assert {
        "backup_source_up",
        "backup_source_poll_duration_seconds",
        "backup_source_api_requests_total",
        "backup_source_error_info",
    } <= used["backup-exporter"]


def test_dashboards_use_only_exported_metrics() -> None:
    used = {name for _, _, expr in gen.all_queries() for name in metric_names_in(expr)}
    assert used - EXPORTED == set()


def test_overview_sorts_jobs_by_status_worst_first() -> None:
    (data,) = [d for d in committed().values() if d["uid"] == "backup-overview"]
    (jobs,) = [p for p in panels(data) if p["title"] == "Jobs (overdue first)"]
    assert jobs["options"]["sortBy"] == [{"desc": True, "displayName": "Status"}]
    rename = next(t for t in jobs["transformations"] if t["id"] == "organize")["options"]
    assert rename["renameByName"]["Value #A"] == "Status"


# --------------------------------------------------------------------------------------
# promtool: every query parses; the table logic gives the right answers
# --------------------------------------------------------------------------------------


def test_every_query_parses(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rules = [
        {"record": f"dashboard:query{i}:check", "expr": gen.resolve_variables(expr)}
        for i, (_, _, expr) in enumerate(gen.all_queries())
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def _job(metric: str, job: str, value: float) -> dict[str, str]:
    return {
        "series": f'{metric}{{source="pve1", backup_job="{job}", vmid="100"}}',
        "values": f"{value}x20",
    }


def _sample(value: float, **labels: str) -> dict[str, Any]:
    body = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"labels": f"{{{body}}}", "value": value}


def test_table_queries_compute_the_right_values(tmp_path: Path) -> None:
    """Job status, next deadline, cloud sync failure and source error, evaluated at t=10m."""
    promtool = require_tool("promtool")
    series = [
        # a: overdue and failed -> 3; b: failed -> 2; c: running -> 1; d: ok -> 0
        _job("backup_job_overdue", "a", 1),
        _job("backup_job_failed", "a", 1),
        _job("backup_job_running", "a", 0),
        _job("backup_job_overdue", "b", 0),
        _job("backup_job_failed", "b", 1),
        _job("backup_job_running", "b", 0),
        _job("backup_job_overdue", "c", 0),
        _job("backup_job_failed", "c", 0),
        _job("backup_job_running", "c", 1),
        _job("backup_job_overdue", "d", 0),
        _job("backup_job_failed", "d", 0),
        _job("backup_job_running", "d", 0),
        # a: the deadline (0) passed without success -> next run's: 82800 + 3600 grace
        _job("backup_job_expected_start_timestamp_seconds", "a", -3600),
        _job("backup_job_finish_deadline_timestamp_seconds", "a", 0),
        _job("backup_job_next_start_timestamp_seconds", "a", 82800),
        _job("backup_job_last_success_timestamp_seconds", "a", -90000),
        # b: never succeeded, deadline ahead -> this run's deadline
        _job("backup_job_expected_start_timestamp_seconds", "b", 0),
        _job("backup_job_finish_deadline_timestamp_seconds", "b", 3600),
        _job("backup_job_next_start_timestamp_seconds", "b", 86400),
        # c: succeeded after its expected start -> next run's deadline
        _job("backup_job_expected_start_timestamp_seconds", "c", 0),
        _job("backup_job_finish_deadline_timestamp_seconds", "c", 3600),
        _job("backup_job_next_start_timestamp_seconds", "c", 86400),
        _job("backup_job_last_success_timestamp_seconds", "c", 300),
        # d: last success is yesterday's, deadline ahead -> this run's deadline
        _job("backup_job_expected_start_timestamp_seconds", "d", 0),
        _job("backup_job_finish_deadline_timestamp_seconds", "d", 3600),
        _job("backup_job_next_start_timestamp_seconds", "d", 86400),
        _job("backup_job_last_success_timestamp_seconds", "d", -86400),
        # cloud sync: failed after success; succeeded after failure; only failed; only succeeded
        *(
            {
                "series": f'backup_cloudsync_last_{kind}_timestamp_seconds{{source="nas", {t}}}',
                "values": f"{v}x20",
            }
            for t, kind, v in [
                ('task="b2"', "success", 100),
                ('task="b2"', "failure", 200),
                ('task="storj"', "success", 300),
                ('task="storj"', "failure", 200),
                ('task="new"', "failure", 50),
                ('task="fine"', "success", 10),
            ]
        ),
        # sources: nas down (timeout), pve1 up
        {"series": 'backup_source_up{source="nas", kind="truenas"}', "values": "0x20"},
        {
            "series": 'backup_source_error_info{source="nas", kind="truenas", reason="timeout"}',
            "values": "1x20",
        },
        {"series": 'backup_source_up{source="pve1", kind="proxmox"}', "values": "1x20"},
    ]

    def jobs(values: dict[str, float]) -> list[dict[str, Any]]:
        return [_sample(v, source="pve1", backup_job=j, vmid="100") for j, v in values.items()]

    checks = [
        (expr_of("backup-overview", "Jobs (overdue first)", "A"),
         jobs({"a": 3, "b": 2, "c": 1, "d": 0})),
        (expr_of("backup-overview", "Jobs (overdue first)", "C"),
         jobs({"a": 86400e3, "b": 3600e3, "c": 90000e3, "d": 3600e3})),
        (expr_of("backup-offsite", "Cloud sync tasks", "A"),
         [_sample(v, source="nas", task=t)
          for t, v in {"b2": 1, "storj": 0, "new": 1, "fine": 0}.items()]),
        (expr_of("backup-exporter", "Sources", "D"),
         [_sample(1, source="nas", reason="timeout"), _sample(1, source="pve1", reason="none")]),
        (expr_of("backup-exporter", "Sources down by reason", "A"), [_sample(1, reason="timeout")]),
    ]  # fmt: skip
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {"expr": expr, "eval_time": "10m", "exp_samples": samples}
                    for expr, samples in checks
                ],
            }
        ],
    }
    path = tmp_path / "dashboard_queries.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = run(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("expr", "resolved"),
    [
        ('x{source=~"$source"}', 'x{source=~".*"}'),
        ('rate(x{source=~"${source}"}[$__rate_interval])', 'rate(x{source=~".*"}[2m])'),
        ('x{source=~"$sources"}', 'x{source=~"$sources"}'),  # another variable: untouched
    ],
)
def test_resolve_variables(expr: str, resolved: str) -> None:
    assert gen.resolve_variables(expr) == resolved
