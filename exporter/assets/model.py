"""The frozen result of judging assets at one instant (read by the metrics, status page, report).

This is the contract between the asset engine and its readers; see ``exporter/assets/engine.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AssetState = Literal["protected", "attention", "unprotected", "unknown"]
ASSET_STATES: tuple[AssetState, ...] = ("protected", "attention", "unprotected", "unknown")


@dataclass(frozen=True)
class LocationStatus:
    """One location of an asset, judged now."""

    name: str  # the ``location`` label, unique within the asset
    layer: str  # primary | snapshot | local | offsite
    medium: str  # what counts as one medium for 3-2-1
    source: str  # the source (or job) its evidence comes from
    known: bool  # its evidence could be read (source up, or served from the store)
    newest: float | None  # newest copy's timestamp; None: no copy seen (or not known)
    fresh: bool  # known and newest > now - rpo
    reason: str = ""  # why it is not fresh, or ""


@dataclass(frozen=True)
class AssetStatus:
    """One asset, judged now."""

    name: str
    criticality: str
    rpo: float
    state: AssetState
    reason: str  # one short reason ("storj copy 9d old (rpo 2d)"), "" when protected
    copies: int  # fresh locations
    offsite_copies: int  # fresh offsite locations
    media: int  # distinct media among fresh locations
    compliant: bool  # 3-2-1 within the RPO
    locations: tuple[LocationStatus, ...]
    sla_target: float = 0.95  # runs met / runs expected below which the SLA alert fires
    runs_expected: int = 0  # summed over the jobs feeding its locations (JobStatus)
    runs_met: int = 0
    # The last instant it was judged other than unknown (or first judged, if never since start).
    last_known: float | None = None


@dataclass(frozen=True)
class VerificationStatus:
    """The last verification of one activity for one asset."""

    asset: str
    activity: str  # restore-test | dr-drill | docs-review
    interval: float  # how often it is due (seconds)
    last_pass: float | None
    last_fail: float | None
    overdue: bool  # no pass within the interval
    depth: str = ""  # listing | sample | full | boot ("" when not said)
    due: float = 0.0  # when a pass is due: last pass (or the asset's first seen) + interval
