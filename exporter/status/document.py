"""The status document: "am I safe, and if not, what do I do first?" as one versioned JSON shape.

``/api/status`` serves it, the status page ``/`` renders it, and ``backup-exporter report``
turns it into the living strategy document. It is built from memory only (the pollers' last
results, the job and asset judgments, the rendered families): no I/O, like a scrape.

The shape is versioned (``schema_version``); ``docs/status.schema.json`` describes it and a
test validates every document against it. Additions keep the version; a removal or a change of
meaning bumps it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client.core import Metric

from exporter.assets.model import AssetStatus, VerificationStatus
from exporter.core.poller import Poller
from exporter.schedule.jobs import JobStatus

SCHEMA_VERSION = 1
LAYERS = ("primary", "snapshot", "local", "offsite")
ACTIVITIES = ("restore-test", "dr-drill", "docs-review")
HISTORY_DAYS = 30

# What needs the operator first: lower sorts first.
_JOB_ORDER = {"overdue": 0, "failed": 1, "unknown": 2, "late": 3, "running": 4, "ok": 5}
_ASSET_ORDER = {"unprotected": 0, "unknown": 1, "attention": 2, "protected": 3}
_CRITICALITY_ORDER = {"high": 0, "normal": 1, "low": 2}


@dataclass(frozen=True)
class StatusInputs:
    """Everything the document is built from (all in memory)."""

    now: float
    zone: ZoneInfo
    version: str
    pollers: Sequence[Poller]
    jobs: Sequence[JobStatus]
    assets: Sequence[AssetStatus] = ()
    verifications: Sequence[VerificationStatus] = ()
    families: Sequence[Metric] = ()
    # Per job key (``source/name/vmid``): ``(finish deadline, met)`` of its recent runs.
    history: Mapping[str, Sequence[tuple[float, bool]]] = field(default_factory=dict)


def job_id(status: JobStatus) -> str:
    """Return ``source/name/vmid``: how the document names a job."""
    spec = status.spec
    return f"{spec.source}/{spec.name}/{spec.labels.get('vmid', '')}"


def local_time(ts: float | None, zone: ZoneInfo) -> str | None:
    """Format ``ts`` in the configured zone (``None`` for never)."""
    if not ts:
        return None
    return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M %Z")


def relative(ts: float | None, now: float) -> str:
    """Say how long ago (or from now) ``ts`` is: "3 h ago", "in 2 d", "never"."""
    if not ts:
        return "never"
    delta = now - ts
    text = human_duration(abs(delta))
    if abs(delta) < 60:
        return "just now"
    return f"{text} ago" if delta > 0 else f"in {text}"


def human_duration(seconds: float) -> str:
    """Round a duration to its largest unit: 45 s, 12 min, 3 h, 9 d."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{math.floor(seconds / size)} {unit}"
    return f"{math.floor(seconds)} s"


def _samples(families: Iterable[Metric], name: str) -> list[tuple[dict[str, str], float]]:
    out: list[tuple[dict[str, str], float]] = []
    for family in families:
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), float(sample.value)))
    return out


def _sources(inputs: StatusInputs) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for poller in inputs.pollers:
        st = poller.state
        offline = bool(poller.offline) and poller.expected_offline()
        if not st.polled:
            status, reason, message = "starting", "starting", "not polled since the start"
        elif st.up:
            status, reason, message = "up", None, None
        else:
            status = "offline" if offline or st.reason == "offline" else "down"
            reason = st.reason
            message = st.error.message if st.error else None
        rows.append(
            {
                "name": poller.name,
                "kind": poller.source.kind,
                "status": status,
                "reason": reason,
                "message": message,
                "expected_offline": offline,
                "last_success": st.last_success or None,
                "last_success_local": local_time(st.last_success, inputs.zone),
                "last_success_ago": relative(st.last_success, inputs.now),
            }
        )
    order = {"down": 0, "starting": 1, "offline": 2, "up": 3}
    rows.sort(key=lambda r: (order[r["status"]], r["name"]))
    return rows


def _history(inputs: StatusInputs, key: str) -> list[dict[str, Any]]:
    """One cell per day of the last 30 (local days): met, missed, mixed or none."""
    today = datetime.fromtimestamp(inputs.now, inputs.zone).date()
    days: dict[str, list[bool]] = {}
    for deadline, met in inputs.history.get(key, ()):
        day = datetime.fromtimestamp(deadline, inputs.zone).date()
        age = (today - day).days
        if 0 <= age < HISTORY_DAYS:
            days.setdefault(day.isoformat(), []).append(met)
    cells = []
    for age in range(HISTORY_DAYS - 1, -1, -1):
        name = datetime.fromordinal(today.toordinal() - age).date().isoformat()
        results = days.get(name)
        if not results:
            result = "none"
        elif all(results):
            result = "met"
        elif not any(results):
            result = "missed"
        else:
            result = "mixed"
        cells.append({"day": name, "result": result})
    return cells


def _next_runs(status: JobStatus, now: float, count: int = 3) -> list[float]:
    runs = []
    start = datetime.fromtimestamp(now, UTC)
    try:
        for at in status.spec.schedule.iter_after(start):
            runs.append(at.timestamp())
            if len(runs) == count:
                break
    except ValueError:
        pass
    return runs


def _jobs(inputs: StatusInputs) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for st in inputs.jobs:
        spec = st.spec
        deadline = st.finish_deadline
        next_deadline = (
            deadline
            if deadline is not None and deadline > inputs.now
            else (st.next_start + spec.grace if st.next_start is not None else None)
        )
        key = job_id(st)
        rows.append(
            {
                "id": key,
                "name": spec.name,
                "source": spec.source,
                "vmid": spec.labels.get("vmid", ""),
                "state": st.state,
                "schedule": spec.schedule.expression,
                "timezone": spec.schedule.tz.key,
                "grace_seconds": spec.grace,
                "grace": human_duration(spec.grace),
                "last_success": st.evidence.last_success,
                "last_success_local": local_time(st.evidence.last_success, inputs.zone),
                "last_success_ago": relative(st.evidence.last_success, inputs.now),
                "next_deadline": next_deadline,
                "next_deadline_local": local_time(next_deadline, inputs.zone),
                "next_start": st.next_start,
                "next_runs": [
                    {"at": at, "local": local_time(at, inputs.zone)}
                    for at in _next_runs(st, inputs.now)
                ],
                "history": _history(inputs, key),
            }
        )
    rows.sort(key=lambda r: (_JOB_ORDER[r["state"]], r["name"], r["source"], r["vmid"]))
    return rows


def _cell(loc: Any, now: float, rpo: float) -> str:
    if not loc.known:
        return "unknown"
    if loc.newest is None:
        return "missing"
    return "fresh" if loc.fresh else "stale"


def _assets(inputs: StatusInputs) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for asset in inputs.assets:
        locations = []
        for loc in asset.locations:
            locations.append(
                {
                    "name": loc.name,
                    "layer": loc.layer,
                    "medium": loc.medium,
                    "source": loc.source,
                    "known": loc.known,
                    "fresh": loc.fresh,
                    "newest": loc.newest,
                    "newest_local": local_time(loc.newest, inputs.zone),
                    "age_seconds": None if loc.newest is None else inputs.now - loc.newest,
                    "age": relative(loc.newest, inputs.now) if loc.known else "unknown",
                    "reason": loc.reason or None,
                    "cell": _cell(loc, inputs.now, asset.rpo),
                }
            )
        rows.append(
            {
                "name": asset.name,
                "criticality": asset.criticality,
                "rpo_seconds": asset.rpo,
                "rpo": human_duration(asset.rpo),
                "state": asset.state,
                "reason": asset.reason or None,
                "copies": asset.copies,
                "offsite_copies": asset.offsite_copies,
                "media": asset.media,
                "compliant": asset.compliant,
                "locations": locations,
            }
        )
    rows.sort(
        key=lambda r: (
            _ASSET_ORDER[r["state"]],
            _CRITICALITY_ORDER.get(r["criticality"], 1),
            r["name"],
        )
    )
    return rows


def _verification(inputs: StatusInputs) -> list[dict[str, Any]]:
    rows = []
    for v in inputs.verifications:
        last = max((t for t in (v.last_pass, v.last_fail) if t), default=None)
        rows.append(
            {
                "asset": v.asset,
                "activity": v.activity,
                "interval_seconds": v.interval,
                "interval": human_duration(v.interval),
                "last_pass": v.last_pass,
                "last_pass_local": local_time(v.last_pass, inputs.zone),
                "last_fail": v.last_fail,
                "last_result": None
                if last is None
                else ("pass" if last == v.last_pass else "fail"),
                "last_ago": relative(last, inputs.now),
                "overdue": v.overdue,
            }
        )
    rows.sort(key=lambda r: (r["asset"], ACTIVITIES.index(r["activity"])
                             if r["activity"] in ACTIVITIES else 9))  # fmt: skip
    return rows


def _storage(inputs: StatusInputs) -> list[dict[str, Any]]:
    """PVE backup storages (size is the quota PVE sees) and datasets with a quota."""
    fams = inputs.families
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for name, field_name in (
        ("backup_pve_storage_size_bytes", "quota_bytes"),
        ("backup_pve_storage_used_bytes", "used_bytes"),
        ("backup_pve_retention_projected_bytes", "projected_bytes"),
    ):
        for labels, value in _samples(fams, name):
            key = (labels.get("source", ""), labels.get("storage", ""))
            row = by_key.setdefault(
                key, {"source": key[0], "target": key[1], "kind": "pve-storage"}
            )
            row[field_name] = value
    quotas = {
        (labels.get("source", ""), labels.get("dataset", "")): value
        for labels, value in _samples(fams, "backup_zfs_dataset_quota_bytes")
        if value > 0
    }
    for labels, value in _samples(fams, "backup_zfs_dataset_used_bytes"):
        key = (labels.get("source", ""), labels.get("dataset", ""))
        if key in quotas:
            by_key[key] = {
                "source": key[0],
                "target": key[1],
                "kind": "dataset",
                "quota_bytes": quotas[key],
                "used_bytes": value,
            }
    rows = []
    for row in by_key.values():
        quota = row.get("quota_bytes")
        need = max(row.get("used_bytes", 0.0), row.get("projected_bytes", 0.0))
        row.setdefault("used_bytes", None)
        row.setdefault("projected_bytes", None)
        row.setdefault("quota_bytes", None)
        row["over"] = bool(quota) and need > quota
        rows.append(row)
    rows.sort(key=lambda r: (not r["over"], r["source"], r["target"]))
    return rows


def _sizes(inputs: StatusInputs) -> list[dict[str, Any]]:
    rows = []
    names = {
        (labels.get("source", ""), labels.get("vmid", "")): labels.get("name", "")
        for labels, _ in _samples(inputs.families, "backup_pve_guest_info")
    }
    for labels, value in _samples(inputs.families, "backup_pve_archive_last_size_bytes"):
        key = (labels.get("source", ""), labels.get("vmid", ""))
        rows.append(
            {
                "source": key[0],
                "vmid": key[1],
                "name": names.get(key, ""),
                "storage": labels.get("storage", ""),
                "newest_archive_bytes": value,
            }
        )
    rows.sort(key=lambda r: (r["source"], r["vmid"], r["storage"]))
    return rows


def _not_backed_up(inputs: StatusInputs) -> list[dict[str, Any]]:
    names = {
        (labels.get("source", ""), labels.get("vmid", "")): labels.get("name", "")
        for labels, _ in _samples(inputs.families, "backup_pve_guest_info")
    }
    rows = [
        {"source": labels.get("source", ""), "vmid": labels.get("vmid", ""),
         "name": names.get((labels.get("source", ""), labels.get("vmid", "")), "")}
        for labels, value in _samples(inputs.families, "backup_pve_guest_not_backed_up")
        if value == 1
    ]  # fmt: skip
    rows.sort(key=lambda r: (r["source"], r["vmid"]))
    return rows


def _buckets(inputs: StatusInputs) -> list[dict[str, Any]]:
    rows = []
    for labels, value in _samples(inputs.families, "backup_bucket_estimated_monthly_cost_dollars"):
        rows.append(
            {
                "source": labels.get("source", ""),
                "bucket": labels.get("bucket", ""),
                "monthly_cost_dollars": value,
            }
        )
    rows.sort(key=lambda r: (r["source"], r["bucket"]))
    return rows


def _policies(inputs: StatusInputs) -> list[dict[str, Any]]:
    drift: dict[tuple[str, str], dict[str, str]] = {}
    for labels, _ in _samples(inputs.families, "backup_policy_drift_info"):
        drift[(labels.get("policy", ""), labels.get("target", ""))] = labels
    rows = []
    for labels, value in _samples(inputs.families, "backup_policy_ok"):
        key = (labels.get("policy", ""), labels.get("target", ""))
        info = drift.get(key, {})
        rows.append(
            {
                "policy": key[0],
                "target": key[1],
                "ok": value == 1,
                "expected": info.get("expected"),
                "actual": info.get("actual"),
            }
        )
    rows.sort(key=lambda r: (r["ok"], r["policy"], r["target"]))
    return rows


def _problems(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Open problems, most urgent first: what to do first is the first line."""
    found: list[tuple[int, str, str]] = []
    for a in doc["assets"]:
        if a["state"] != "protected":
            rank = {"unprotected": 0, "unknown": 2, "attention": 4}[a["state"]]
            rank += 0 if a["criticality"] == "high" else 1
            found.append((rank, "asset", f"{a['name']} {a['state']}: {a['reason'] or '?'}"))
    for j in doc["jobs"]:
        if j["state"] in ("overdue", "failed", "unknown"):
            rank = {"overdue": 1, "failed": 1, "unknown": 3}[j["state"]]
            what = f"job {j['name']}" + (f" (vmid {j['vmid']})" if j["vmid"] else "")
            found.append((rank, "job", f"{what} on {j['source']} {j['state']}"))
    for s in doc["sources"]:
        if s["status"] == "down":
            found.append((2, "source", f"source {s['name']} down: {s['reason']}"))
    for g in doc["guests_not_backed_up"]:
        found.append(
            (1, "guest", f"guest {g['vmid']} ({g['name'] or '?'}) on {g['source']}: "
                         "no backup job covers it")
        )  # fmt: skip
    for st in doc["storage"]:
        if st["over"]:
            found.append((3, "storage", f"{st['target']} on {st['source']}: retention over quota"))
    for p in doc["policies"]:
        if not p["ok"]:
            found.append(
                (3, "policy", f"policy {p['policy']} drifted on {p['target']}: "
                              f"{p['actual']} (expected {p['expected']})")
            )  # fmt: skip
    for v in doc["verification"]:
        if v["overdue"]:
            when = "never done" if v["last_pass"] is None else f"last passed {v['last_ago']}"
            found.append((5, "verification", f"{v['activity']} of {v['asset']} overdue: {when}"))
    found.sort(key=lambda f: f[0])
    return [{"priority": i + 1, "kind": k, "text": t} for i, (_, k, t) in enumerate(found)]


def _verdict(doc: Mapping[str, Any]) -> dict[str, Any]:
    assets = doc["assets"]
    needing = [a for a in assets if a["state"] != "protected"]
    bad_jobs = [j for j in doc["jobs"] if j["state"] in ("overdue", "failed", "unknown")]
    problems = doc["problems"]
    if assets:
        if not needing and not problems:
            text = f"All {len(assets)} assets protected."
        elif not needing:
            text = f"All {len(assets)} assets protected; {len(problems)} other problem(s)."
        else:
            worst = needing[0]
            text = (
                f"{len(needing)} of {len(assets)} assets need attention. "
                f"Worst: {worst['name']}: {worst['reason'] or worst['state']}."
            )
    elif problems:
        text = f"{len(problems)} problem(s); no assets are configured."
    else:
        text = f"All {len(doc['jobs'])} jobs on time; no assets are configured."
    return {
        "ok": not needing and not problems,
        "text": text,
        "assets_total": len(assets),
        "assets_needing_attention": len(needing),
        "jobs_failing": len(bad_jobs),
        "first_action": problems[0]["text"] if problems else None,
    }


def build_status(inputs: StatusInputs) -> dict[str, Any]:
    """Build the whole document (schema ``docs/status.schema.json``)."""
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "version": inputs.version,
        "generated_at": inputs.now,
        "generated_at_local": local_time(inputs.now, inputs.zone),
        "timezone": inputs.zone.key,
        "layers": list(LAYERS),
        "assets": _assets(inputs),
        "jobs": _jobs(inputs),
        "sources": _sources(inputs),
        "verification": _verification(inputs),
        "storage": _storage(inputs),
        "sizes": _sizes(inputs),
        "buckets": _buckets(inputs),
        "policies": _policies(inputs),
        "guests_not_backed_up": _not_backed_up(inputs),
    }
    doc["problems"] = _problems(doc)
    doc["verdict"] = _verdict(doc)
    return doc
