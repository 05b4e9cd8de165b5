"""deploy/alertmanager.yml: amtool checks, routing per severity and Watchdog, inhibition.

Routing is tested with ``amtool config routes test``. Inhibition has no amtool test, so one
test starts the real Alertmanager on 127.0.0.1 with this config whose receivers are stripped
of their integrations (nothing is ever sent anywhere), posts alerts through the v2 API and
reads back which ones are inhibited.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_alerts import alert_rules, require_tool, run

from exporter.sim.stack import local_alertmanager_config

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "alertmanager.yml"
RECEIVER_BY_SEVERITY = {"critical": "pager", "warning": "notify", "info": "null"}
WATCHDOG_RECEIVER = "deadmansswitch"


def load_config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    return data


def route(*labels: str) -> subprocess.CompletedProcess[str]:
    amtool = require_tool("amtool")
    return run(amtool, "config", "routes", "test", f"--config.file={CONFIG}", *labels)


def verify(receiver: str, *labels: str) -> subprocess.CompletedProcess[str]:
    amtool = require_tool("amtool")
    return run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={receiver}",
        *labels,
    )


def test_amtool_check_config() -> None:
    amtool = require_tool("amtool")
    result = run(amtool, "check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=BackupPoolUnhealthy", "severity=critical", "source=nas"], "pager"),
        (["alertname=BackupJobOverdue", "severity=warning", "source=pve1"], "notify"),
        (["alertname=BackupSourceDown", "severity=info", "source=nas"], "null"),
        (["alertname=BackupWatchdog", "severity=info"], WATCHDOG_RECEIVER),
        (["alertname=SomethingElse"], "email"),  # no severity: still reaches someone
    ],
)
def test_routes(labels: list[str], receiver: str) -> None:
    result = verify(receiver, *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert route(*labels).stdout.strip() == receiver


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        # Asset alerts route on the asset's criticality: high pages even at warning...
        (["alertname=BackupAssetNoOffsiteCopy", "severity=warning", "criticality=high"], "pager"),
        # ... low never pages, even when critical: the daily digest only ...
        (["alertname=BackupAssetUnprotected", "severity=critical", "criticality=low"], "digest"),
        # ... normal follows the severity.
        (["alertname=BackupAssetUnprotected", "severity=critical", "criticality=normal"], "pager"),
        (
            ["alertname=BackupAssetNoOffsiteCopy", "severity=warning", "criticality=normal"],
            "notify",
        ),
    ],
)
def test_asset_alerts_route_by_criticality(labels: list[str], receiver: str) -> None:
    result = verify(receiver, *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert route(*labels).stdout.strip() == receiver


def test_every_asset_alert_carries_the_criticality_it_routes_on() -> None:
    assets = [r for r in alert_rules() if r["alert"].startswith("BackupAsset")]
    assert {r["alert"] for r in assets} >= {
        "BackupAssetUnprotected",
        "BackupAssetNoOffsiteCopy",
        "BackupAssetUnknownTooLong",
    }
    for rule in assets:
        assert "group_left(criticality) backup_asset_info" in rule["expr"], rule["alert"]
    digest = next(r for r in load_config()["route"]["routes"] if r["receiver"] == "digest")
    assert digest["repeat_interval"] == "24h"


def test_route_verification_can_fail() -> None:
    """--verify.receivers rejects a wrong receiver (so the cases above can fail)."""
    result = verify("null", "alertname=BackupPoolUnhealthy", "severity=critical")
    assert result.returncode != 0


def test_every_alert_reaches_the_receiver_of_its_severity() -> None:
    seen = set()
    for rule in alert_rules():
        name, severity = rule["alert"], rule["labels"]["severity"]
        if (name, severity) in seen:
            continue
        seen.add((name, severity))
        expected = WATCHDOG_RECEIVER if name == "BackupWatchdog" else RECEIVER_BY_SEVERITY[severity]
        labels = [f"alertname={name}", f"severity={severity}", "source=nas"]
        assert route(*labels).stdout.strip() == expected, name


def test_watchdog_route_pings_the_dead_mans_switch_every_minute() -> None:
    config = load_config()
    routes = [r for r in config["route"]["routes"] if r["receiver"] == WATCHDOG_RECEIVER]
    assert len(routes) == 1
    assert routes[0]["matchers"] == ['alertname="BackupWatchdog"']
    assert routes[0]["group_wait"] == "0s"
    assert routes[0]["repeat_interval"] == "1m"
    assert routes[0]["group_interval"] == "1m"
    # First in the tree: no severity route can swallow it.
    assert config["route"]["routes"][0] is routes[0]
    (receiver,) = [r for r in config["receivers"] if r["name"] == WATCHDOG_RECEIVER]
    (hook,) = receiver["webhook_configs"]
    assert hook["url"] == "https://hc-ping.com/<your-uuid>"  # a placeholder, never contacted
    assert hook["send_resolved"] is False


def test_example_receivers_cover_webhook_email_and_ntfy() -> None:
    receivers = {r["name"]: r for r in load_config()["receivers"]}
    assert "webhook_configs" in receivers["pager"]
    assert "email_configs" in receivers["pager"]
    assert any("ntfy" in hook["url"] for hook in receivers["notify"]["webhook_configs"])
    assert "email_configs" in receivers["notify"]
    assert set(receivers["null"]) == {"name"}


def test_staleness_alerts_are_inhibited_by_their_source_being_down() -> None:
    rules = load_config()["inhibit_rules"]
    assert {
        "source_matchers": ['alertname="BackupSourceDown"'],
        "target_matchers": ['staleness="true"'],
        "equal": ["source"],
    } in rules
    # The inhibiting alert exists and carries the `source` label (from backup_source_up).
    down = [r for r in alert_rules() if r["alert"] == "BackupSourceDown"]
    assert down
    assert all("backup_source_up" in r["expr"] for r in down)


def test_a_down_target_inhibits_only_staleness_alerts_about_that_target() -> None:
    rules = load_config()["inhibit_rules"]
    for label, equal in (("bucket", ["source", "bucket"]), ("storage", ["source", "storage"])):
        assert {
            "source_matchers": ['alertname="BackupTargetDown"', f'{label}=~".+"'],
            "target_matchers": ['staleness="true"', f'{label}=~".+"'],
            "equal": equal,
        } in rules
    # The inhibiting alert carries bucket/storage/dataset labels split from `target`.
    stages = [r for r in alert_rules() if r["alert"] == "BackupTargetDown"]
    assert {r["labels"]["severity"] for r in stages} == {"info", "warning"}
    for down in stages:
        assert "backup_target_up" in down["expr"]
        for label in ("bucket", "storage", "dataset"):
            assert f'"{label}", "$1", "target", "{label}/(.+)"' in down["expr"]


# --------------------------------------------------------------------------------------
# Live inhibition with the real Alertmanager (127.0.0.1, integrations stripped)
# --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _http(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    return json.loads(text) if text.strip().startswith(("[", "{")) else text


def _poll(fetch: Any, done: Any, *, timeout: float = 15.0) -> Any:
    """Call ``fetch`` until ``done(result)`` or the timeout; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = fetch()
        except OSError:  # not listening yet
            result = None
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = require_tool("prometheus-alertmanager")
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump(local_alertmanager_config(None)))
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port on 0.0.0.0
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ready = _poll(lambda: proc.poll() is None and _http(f"{url}/-/ready"), bool)
        assert ready, "Alertmanager did not become ready"
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _alert(**labels: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": labels,
        "annotations": {"summary": "test."},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
    }


@pytest.mark.e2e
def test_inhibition_in_the_real_alertmanager(alertmanager: str) -> None:
    stale = {"staleness": "true", "severity": "warning"}
    alerts = {
        "nas down": _alert(alertname="BackupSourceDown", severity="info", source="nas"),
        "nas snapshot": _alert(alertname="BackupSnapshotTooOld", source="nas", **stale),
        "nas sync overdue": _alert(
            alertname="BackupJobOverdue", source="nas", backup_job="b2-daily", **stale
        ),
        "pve1 overdue": _alert(
            alertname="BackupJobOverdue",
            source="pve1",
            backup_job="vzdump-daily",
            vmid="100",
            **stale,
        ),
        "pve1 failed": _alert(
            alertname="BackupJobFailed",
            source="pve1",
            backup_job="vzdump-daily",
            vmid="100",
            severity="warning",
        ),
        "pve1 101 overdue": _alert(
            alertname="BackupJobOverdue",
            source="pve1",
            backup_job="vzdump-daily",
            vmid="101",
            **stale,
        ),
        "nas pool": _alert(alertname="BackupPoolUnhealthy", severity="critical", source="nas"),
        "b2 denied": _alert(
            alertname="BackupSourcePermissionDenied",
            severity="critical",
            source="b2",
            reason="auth",
        ),
        "b2 down": _alert(alertname="BackupSourceDown", severity="info", source="b2"),
        "storj down long": _alert(alertname="BackupSourceDown", severity="warning", source="storj"),
        "storj down": _alert(alertname="BackupSourceDown", severity="info", source="storj"),
        # One bucket of a source that answers is down: only that bucket's staleness goes.
        "b2eu photos down": _alert(
            alertname="BackupTargetDown",
            severity="info",
            source="b2eu",
            kind="b2",
            target="bucket/photos",
            bucket="photos",
        ),
        "b2eu photos too old": _alert(
            alertname="BackupBucketNewestObjectTooOld",
            source="b2eu",
            bucket="photos",
            prefix="immich/",
            **stale,
        ),
        "b2eu photos restore": _alert(
            alertname="BackupRestoreCheckOverdue", source="b2eu", bucket="photos", **stale
        ),
        "b2eu homelab too old": _alert(
            alertname="BackupBucketNewestObjectTooOld",
            source="b2eu",
            bucket="homelab",
            prefix="immich/",
            **stale,
        ),
        "b2eu job overdue": _alert(
            alertname="BackupJobOverdue", source="b2eu", backup_job="offsite", **stale
        ),
        "other photos too old": _alert(
            alertname="BackupBucketNewestObjectTooOld",
            source="b2other",
            bucket="photos",
            prefix="immich/",
            **stale,
        ),
        # One PVE storage down: a staleness alert about that storage goes, not the others.
        "pve2 pbs down": _alert(
            alertname="BackupTargetDown",
            severity="info",
            source="pve2",
            kind="proxmox",
            target="storage/pbs",
            storage="pbs",
        ),
        "pve2 pbs stale": _alert(alertname="StorageStale", source="pve2", storage="pbs", **stale),
        "pve2 nas stale": _alert(alertname="StorageStale", source="pve2", storage="nas", **stale),
        "pve2 overdue": _alert(
            alertname="BackupJobOverdue",
            source="pve2",
            backup_job="vzdump-daily",
            vmid="100",
            **stale,
        ),
        # The dataset listing down: the source's dataset alerts go, its pool alerts stay.
        "nas2 datasets down": _alert(
            alertname="BackupTargetDown",
            severity="info",
            source="nas2",
            kind="truenas",
            target="dataset/tank",
            dataset="tank",
        ),
        "nas2 snapshot": _alert(
            alertname="BackupSnapshotTooOld", source="nas2", dataset="tank/backups", **stale
        ),
        "nas2 scrub": _alert(alertname="BackupScrubOverdue", source="nas2", pool="tank", **stale),
    }
    _http(f"{alertmanager}/api/v2/alerts", list(alerts.values()))

    def states() -> dict[str, str] | None:
        got = _http(f"{alertmanager}/api/v2/alerts")
        by_labels = {json.dumps(a["labels"], sort_keys=True): a["status"] for a in got}
        out = {}
        for key, alert in alerts.items():
            status = by_labels.get(json.dumps(alert["labels"], sort_keys=True))
            if status is None:
                return None
            out[key] = "inhibited" if status["inhibitedBy"] else status["state"]
        return out

    expected = {
        # a down source hides its own staleness alerts, nothing else
        "nas down": "active",
        "nas snapshot": "inhibited",
        "nas sync overdue": "inhibited",
        "nas pool": "active",
        # a failed run explains the overdue job; another guest's job stays visible
        "pve1 failed": "active",
        "pve1 overdue": "inhibited",
        "pve1 101 overdue": "active",
        # rejected credentials say more than "down"
        "b2 denied": "active",
        "b2 down": "inhibited",
        # the warning stage of an alert hides its info stage
        "storj down long": "active",
        "storj down": "inhibited",
        # a down target hides the staleness alerts about it, nothing else of its source
        "b2eu photos down": "active",
        "b2eu photos too old": "inhibited",
        "b2eu photos restore": "inhibited",
        "b2eu homelab too old": "active",
        "b2eu job overdue": "active",
        "other photos too old": "active",
        "pve2 pbs down": "active",
        "pve2 pbs stale": "inhibited",
        "pve2 nas stale": "active",
        "pve2 overdue": "active",
        "nas2 datasets down": "active",
        "nas2 snapshot": "inhibited",
        "nas2 scrub": "active",
    }
    assert _poll(states, lambda got: got == expected) == expected


def test_local_config_keeps_routes_and_inhibitions(tmp_path: Path) -> None:
    config = load_config()
    local = local_alertmanager_config("http://127.0.0.1:1/hook")
    assert local["route"] == config["route"]
    assert local["inhibit_rules"] == config["inhibit_rules"]
    assert [r["name"] for r in local["receivers"]] == [r["name"] for r in config["receivers"]]
    text = yaml.safe_dump(local)
    assert "example.org" not in text
    assert "hc-ping.com" not in text
    assert "ntfy.sh" not in text
    path = tmp_path / "local.yml"
    path.write_text(text)
    result = run(require_tool("amtool"), "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
