"""The ``backup_policy_*`` families of one source's policy results (pure).

Sample exposition::

    # HELP backup_policy_ok 1 when reality matches the declared policy, 0 when it drifted.
    # TYPE backup_policy_ok gauge
    backup_policy_ok{policy="nfs_export",source="truenas",target="/mnt/storage/backups"} 0.0
    backup_policy_ok{policy="retention",source="pve1",target="backup-infra-daily"} 1.0
    # HELP backup_policy_drift_info What differs from a drifted policy (present while it is).
    # TYPE backup_policy_drift_info gauge
    backup_policy_drift_info{actual="*",expected="pve1",policy="nfs_export",source="n",target="/"} 1
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.policy.model import PolicyResult

MAX_LABEL = 100


def label_text(text: str) -> str:
    """Return ``text`` fit for a label: control characters dropped, at most MAX_LABEL long.

    The exposition format escapes quotes, backslashes and newlines itself.
    """
    clean = "".join(ch for ch in text if ch.isprintable())
    return clean if len(clean) <= MAX_LABEL else clean[: MAX_LABEL - 1] + "…"


def render_policy(source: str, results: Iterable[PolicyResult]) -> Iterator[Metric]:
    """Build ``backup_policy_ok`` (known results only) and ``backup_policy_drift_info``."""
    ok = GaugeMetricFamily(
        "backup_policy_ok",
        "1 when reality matches the declared policy, 0 when it drifted (absent while unknown).",
        labels=["policy", "source", "target"],
    )
    drift = GaugeMetricFamily(
        "backup_policy_drift_info",
        "What differs from a drifted policy: expected and actual (present while it drifts).",
        labels=["policy", "source", "target", "expected", "actual"],
    )
    for r in sorted(results, key=lambda r: (r.policy, r.target)):
        if r.ok is None:
            continue
        values = [r.policy, source, label_text(r.target)]
        ok.add_metric(values, float(r.ok))
        if not r.ok:
            drift.add_metric([*values, label_text(r.expected), label_text(r.actual)], 1.0)
    yield ok
    yield drift
