"""The outcome of one policy check."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PolicyResult:
    """One declared policy against what the last poll read.

    ``ok`` is ``None`` while reality is unknown (what the check needs was not read): no
    ``backup_policy_ok`` series then, never 1. ``expected`` and ``actual`` are short texts for
    ``backup_policy_drift_info`` (never a secret).
    """

    policy: str
    target: str
    ok: bool | None
    expected: str
    actual: str
