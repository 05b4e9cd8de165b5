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
of the source it names, by :func:`exporter.core.config._check_evidence`), or a job:

* ``{job: NAME}`` names a ``jobs:`` entry;
* ``{job: NAME, source: SOURCE[, vmid: N]}`` names a job ``SOURCE`` discovers (a PVE job id
  with the guest's ``vmid``, ``cloudsync-<task>``, ``scrub-<pool>``, ``hc-<check>``), or a
  ``jobs:`` entry fed by ``SOURCE``. Which jobs a source discovers is known only once it is
  read, so only the source is checked here; an unmatched job makes the location unknown.

Defaults, filled in at load time: a location's ``name`` is ``<layer>-<source>`` (``<layer>-<job>``
for a ``jobs:`` entry without ``source``), made unique within the asset with ``-2``, ``-3``…;
its ``medium`` is its source (a ``jobs:`` entry's: the source its evidence names). A
``snapshot`` location is never a separate medium from the data it snapshots: it takes the
medium of the first ``primary`` or ``local`` location on the same source, else its source's;
an explicit ``medium`` on a snapshot must be the medium of another location of the asset.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any, Literal, Protocol

from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema

from exporter.core.fields import STRICT, ConfigSection, Duration, Loc, StrList, Text

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
    # Names of the jobs that write this copy (any source), for the per-asset SLA roll-up; also
    # counted: the ``{job:}`` itself, ``jobs:`` entries with the same evidence, the vmid's jobs.
    jobs: StrList = ()

    @property
    def source(self) -> str:
        """The source the evidence comes from (``""`` for a ``jobs:`` entry named alone)."""
        return self.evidence.get("source", "")

    @property
    def job(self) -> str:
        """The job named by ``{job: NAME}``, or ``""``."""
        return self.evidence.get("job", "")


@dataclass(frozen=True, kw_only=True, config=STRICT)
class AssetConfig(ConfigSection):
    """An asset declared in the ``assets:`` map (``name`` is its key)."""

    name: SkipJsonSchema[str]
    rpo: Duration
    criticality: Criticality = "normal"
    # SLA target ratio (runs met / runs expected) below which BackupSlaBelowTarget fires.
    sla_target: float = 0.95
    locations: tuple[LocationConfig, ...] = ()

    @classmethod
    def prepare(
        cls, raw: dict[str, Any], found: list[tuple[Loc, str]], context: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Check the locations as written: some, unique names, snapshots on a known medium."""
        locations = raw.get("locations")
        if not locations:
            found.append((("locations",), "list at least one location"))
        if not isinstance(locations, list):
            return raw
        written = [loc for loc in locations if isinstance(loc, Mapping)]
        names = [str(loc["name"]) for loc in written if loc.get("name")]
        for name in sorted({n for n in names if names.count(n) > 1}):
            found.append((("locations",), f"duplicate location name {name!r}"))
        media = {
            str(loc["medium"])
            for loc in written
            if loc.get("layer") != "snapshot" and loc.get("medium")
        }
        for i, loc in enumerate(locations):
            if not isinstance(loc, Mapping) or loc.get("layer") != "snapshot":
                continue
            if loc.get("medium") and str(loc["medium"]) not in media:
                found.append(
                    (
                        ("locations", i, "medium"),
                        "a snapshot is never a separate medium: give the medium of the location "
                        f"it snapshots (one of: {', '.join(sorted(media)) or 'none declared'})",
                    )
                )
        return raw

    def problems(self, context: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """Check the SLA target."""
        if not 0.0 < self.sla_target <= 1.0:
            yield "sla_target", f"must be a ratio in (0, 1], got {self.sla_target:g}"

    def complete(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        """Fill in the default location names and media."""
        job_sources: Mapping[str, str] = context.get("job_sources", {})
        self._set("locations", default_locations(self.locations, job_sources))


def location_source(loc: LocationConfig, job_sources: Mapping[str, str]) -> str:
    """Return the source a location's evidence comes from (a ``jobs:`` entry's: its own)."""
    return loc.source or job_sources.get(loc.job, "")


def default_locations(
    locations: tuple[LocationConfig, ...], job_sources: Mapping[str, str]
) -> tuple[LocationConfig, ...]:
    """Name and place on a medium every location without an explicit ``name``/``medium``."""
    media: dict[str, str] = {}  # source -> medium of its first primary/local location
    for loc in locations:
        source = location_source(loc, job_sources)
        if loc.layer in ("primary", "local") and source not in media:
            media[source] = loc.medium or source or loc.job
    taken = {loc.name for loc in locations if loc.name}
    out = []
    for loc in locations:
        source = location_source(loc, job_sources)
        medium = loc.medium
        if not medium:
            own = source or loc.job
            medium = media.get(source, own) if loc.layer == "snapshot" else own
        name = loc.name
        if not name:
            base = f"{loc.layer}-{loc.source or loc.job}"
            name, n = base, 1
            while name in taken:
                n += 1
                name = f"{base}-{n}"
            taken.add(name)
        out.append(replace(loc, name=name, medium=medium))
    return tuple(out)


class EvidenceCheck(Protocol):
    """Checks one selector as a job's evidence and returns it as strings."""

    def __call__(self, raw: Any, *, where: Loc) -> dict[str, str]: ...  # noqa: D102


JOB_KEYS = ("job", "source", "vmid")


def check_asset_evidence(
    asset: str,
    raw: Mapping[str, Any],
    *,
    check: EvidenceCheck,
    jobs: Mapping[str, Any],
    sources: Mapping[str, str],
    found: list[tuple[Loc, str]],
) -> dict[str, Any]:
    """Check each ``assets.<asset>.locations[i].evidence``; return ``raw`` with them as strings.

    A source selector goes through ``check`` (the job evidence check, against the source's
    kind); a ``{job: ...}`` selector is checked here against ``jobs`` and ``sources``.
    """
    locations = raw.get("locations")
    if not isinstance(locations, list):
        return dict(raw)
    out: list[Any] = []
    for i, loc in enumerate(locations):
        evidence = loc.get("evidence") if isinstance(loc, Mapping) else None
        if evidence is None:
            out.append(loc)
            continue
        where: Loc = ("assets", asset, "locations", i, "evidence")
        if isinstance(evidence, Mapping) and "job" in evidence:
            checked = _check_job(evidence, where, jobs=jobs, sources=sources, found=found)
        else:
            checked = check(evidence, where=where)
        out.append({**loc, "evidence": checked})
    return {**raw, "locations": out}


def _check_job(
    raw: Mapping[str, Any],
    where: Loc,
    *,
    jobs: Mapping[str, Any],
    sources: Mapping[str, str],
    found: list[tuple[Loc, str]],
) -> dict[str, str]:
    evidence: dict[str, str] = {}
    for key, value in raw.items():
        if str(key) not in JOB_KEYS:
            accepted = ", ".join(JOB_KEYS)
            found.append(((*where, str(key)), f"unknown key (a job location accepts: {accepted})"))
        elif not isinstance(value, (str, int)) or isinstance(value, bool):
            found.append(((*where, str(key)), "must be a string"))
        else:
            evidence[str(key)] = str(value)
    job, source = evidence.get("job", ""), evidence.get("source")
    if not job:
        if "job" in evidence:
            found.append(((*where, "job"), "must not be empty"))
        return evidence
    if source is None:
        if job not in jobs:
            known = ", ".join(sorted(jobs)) or "none"
            found.append(
                (
                    (*where, "job"),
                    f"no jobs: entry named {job!r} (known: {known}); a job a source discovers "
                    "needs its source: {job: NAME, source: SOURCE}",
                )
            )
    elif source not in sources:
        found.append(((*where, "source"), f"no source named {source!r}"))
    return evidence
