"""The ``policy:`` section: what the backup strategy promises, per kind of check.

Example::

    policy:
      retention:            # a PVE backup job's prune-backups (the job's, else its storage's)
        - {source: pve1, job: backup-infra-daily, prune_backups: "keep-last=14"}
      quota:                # a TrueNAS dataset's ZFS quota
        - {source: truenas, dataset: storage/backups/proxmox, quota: 150GiB}
      nfs_export:           # who may mount a TrueNAS NFS share: its hosts and networks
        - {source: truenas, path: /mnt/storage/backups/proxmox, hosts: [192.0.2.10]}
      encryption:           # a TrueNAS cloud-sync task encrypts (rclone crypt)
        - {source: truenas, task: B2 daily}
      cloudsync_schedule:   # a TrueNAS cloud-sync task runs on the documented schedule
        - {source: truenas, task: B2 daily, schedule: "30 1 * * *"}

Every entry names a ``source`` of the right kind (checked at load time). A check runs on each
successful poll of its source, on what that poll read anyway (the TrueNAS source adds one
``sharing.nfs.query`` when an ``nfs_export`` policy names it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

from pydantic import field_validator
from pydantic.dataclasses import dataclass

from exporter.core.fields import STRICT, Bool, ConfigSection, Size, StrList, Text, problem

PolicyKind = Literal["retention", "quota", "nfs_export", "encryption", "cloudsync_schedule"]

#: The kind of source each policy kind is checked on.
POLICY_SOURCE_KIND: Mapping[str, str] = {
    "retention": "proxmox",
    "quota": "truenas",
    "nfs_export": "truenas",
    "encryption": "truenas",
    "cloudsync_schedule": "truenas",
}


@dataclass(frozen=True, kw_only=True, config=STRICT)
class _Policy(ConfigSection):
    """What every policy has: a ``source``, its ``kind`` and the field naming its target."""

    kind: ClassVar[PolicyKind]
    target_key: ClassVar[str]
    source: Text

    @property
    def target(self) -> str:
        """The ``target`` label: the job, dataset, share path or task the policy is about."""
        return str(getattr(self, self.target_key))


@dataclass(frozen=True, kw_only=True, config=STRICT)
class RetentionPolicy(_Policy):
    """A PVE job keeps what ``prune_backups`` says (PVE's own ``keep-*`` property string)."""

    kind: ClassVar[PolicyKind] = "retention"
    target_key: ClassVar[str] = "job"

    job: Text
    prune_backups: Text

    @field_validator("prune_backups")
    @classmethod
    def _parses(cls, value: str) -> str:
        from exporter.sources.proxmox.retention import parse_retention  # noqa: PLC0415

        try:
            parse_retention(value)
        except ValueError as exc:
            raise problem(f"{exc} (expected e.g. keep-last=14,keep-weekly=4)") from None
        return value


@dataclass(frozen=True, kw_only=True, config=STRICT)
class QuotaPolicy(_Policy):
    """A dataset has exactly this ``quota`` (ZFS ``quota``: the dataset and its descendants)."""

    kind: ClassVar[PolicyKind] = "quota"
    target_key: ClassVar[str] = "dataset"

    dataset: Text
    quota: Size


@dataclass(frozen=True, kw_only=True, config=STRICT)
class NfsExportPolicy(_Policy):
    """Only these hosts and networks may mount the share at ``path`` (order does not matter)."""

    kind: ClassVar[PolicyKind] = "nfs_export"
    target_key: ClassVar[str] = "path"

    path: Text
    hosts: StrList = ()
    networks: StrList = ()

    def problems(self, context: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """Refuse an empty allow-list: on TrueNAS it means everyone."""
        if not self.hosts and not self.networks:
            yield "hosts", "list the hosts or networks the share is restricted to"


@dataclass(frozen=True, kw_only=True, config=STRICT)
class EncryptionPolicy(_Policy):
    """A cloud-sync task (its description) has encryption on (or off, ``encrypted: false``)."""

    kind: ClassVar[PolicyKind] = "encryption"
    target_key: ClassVar[str] = "task"

    task: Text
    encrypted: Bool = True


@dataclass(frozen=True, kw_only=True, config=STRICT)
class CloudSyncSchedulePolicy(_Policy):
    """A cloud-sync task runs on this five-field cron ``schedule`` (TrueNAS's own fields)."""

    kind: ClassVar[PolicyKind] = "cloudsync_schedule"
    target_key: ClassVar[str] = "task"

    task: Text
    schedule: Text

    @field_validator("schedule")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        from exporter.schedule.expressions import ScheduleError, parse_schedule  # noqa: PLC0415

        if len(value.split()) != 5:
            raise problem(f"must be five cron fields (minute hour dom month dow), got {value!r}")
        try:
            parse_schedule(value, "UTC")
        except ScheduleError as exc:
            raise problem(str(exc)) from None
        return value


PolicyRule = (
    RetentionPolicy | QuotaPolicy | NfsExportPolicy | EncryptionPolicy | CloudSyncSchedulePolicy
)


@dataclass(frozen=True, kw_only=True, config=STRICT)
class PolicyConfig(ConfigSection):
    """The whole ``policy:`` section."""

    retention: tuple[RetentionPolicy, ...] = ()
    quota: tuple[QuotaPolicy, ...] = ()
    nfs_export: tuple[NfsExportPolicy, ...] = ()
    encryption: tuple[EncryptionPolicy, ...] = ()
    cloudsync_schedule: tuple[CloudSyncSchedulePolicy, ...] = ()

    def rules(self) -> Iterator[tuple[str, int, PolicyRule]]:
        """Yield ``(section, index, rule)`` for every declared policy."""
        sections: tuple[tuple[str, tuple[PolicyRule, ...]], ...] = (
            ("retention", self.retention),
            ("quota", self.quota),
            ("nfs_export", self.nfs_export),
            ("encryption", self.encryption),
            ("cloudsync_schedule", self.cloudsync_schedule),
        )
        for section, rules in sections:
            for i, rule in enumerate(rules):
                yield section, i, rule

    def for_source(self, name: str) -> tuple[PolicyRule, ...]:
        """Return the policies checked on the polls of source ``name``."""
        return tuple(rule for _, _, rule in self.rules() if rule.source == name)


def policy_problems(
    policy: PolicyConfig, source_kinds: Mapping[str, str]
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Check that each policy names a configured source of the kind it is checked on."""
    targets: set[tuple[str, str, str]] = set()
    for section, i, rule in policy.rules():
        where = ("policy", section, i)
        wanted = POLICY_SOURCE_KIND[section]
        kind = source_kinds.get(rule.source)
        if kind is None:
            known = ", ".join(sorted(source_kinds)) or "none"
            yield (*where, "source"), f"unknown source {rule.source!r} (known: {known})"
        elif kind != wanted:
            yield (*where, "source"), f"{section} policies apply to {wanted} sources, not {kind}"
        key = (section, rule.source, rule.target)
        if key in targets:
            yield where, f"a second {section} policy for {rule.target!r} of {rule.source!r}"
        targets.add(key)
