"""The ``assets:`` section: each asset's RPO, criticality and the locations holding its copies.

Example::

    assets:
      immich:
        rpo: 2d
        criticality: high            # high | normal | low (routes alerts)
        locations:
          - {layer: snapshot, evidence: {source: truenas, dataset: tank/immich}}
          - {layer: local,    evidence: {source: nas-copy}}
          - {layer: offsite,  evidence: {source: b2, bucket: homelab-b2, prefix: immich/}}
          - {layer: offsite,  evidence: {source: storj, bucket: homelab, prefix: immich/},
             medium: storj}

A location's ``evidence`` uses the same typed selectors as a job's (checked against the kind
of the source it names), or ``{job: NAME}`` for a job's last success.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema

from exporter.core.fields import STRICT, ConfigSection, Duration, Text

Layer = Literal["primary", "snapshot", "local", "offsite"]
Criticality = Literal["high", "normal", "low"]


@dataclass(frozen=True, kw_only=True, config=STRICT)
class LocationConfig(ConfigSection):
    """One place holding a copy of an asset."""

    layer: Layer
    evidence: Mapping[str, str]
    # Locations with the same medium count as one medium for 3-2-1 (default: one per source).
    medium: Text = ""
    # The ``location`` label; default ``<layer>-<source or job>`` (made unique per asset).
    name: Text = ""


@dataclass(frozen=True, kw_only=True, config=STRICT)
class AssetConfig(ConfigSection):
    """An asset declared in the ``assets:`` map (``name`` is its key)."""

    name: SkipJsonSchema[str]
    rpo: Duration
    criticality: Criticality = "normal"
    # SLA target ratio (runs met / runs expected) below which BackupAssetSLABelowTarget fires.
    sla_target: float = 0.95
    locations: tuple[LocationConfig, ...] = ()
