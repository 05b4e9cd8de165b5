"""The simulated homelab: every fake backend on 127.0.0.1, and the exporter config for it.

It is the strategy document's deployment: Proxmox VE ``pve1`` backing up VM 100 daily at
21:00 to the NFS storage ``truenas-backups``; TrueNAS pool ``storage`` with snapshots, a
35-day scrub and the "B2 daily" and "Storj weekly" cloud-sync tasks; the Home Assistant
backups on the ``ha-backup`` share; the offsite copies in Backblaze B2 (b2sdk's simulator,
in-process) and in Storj (moto's S3 server standing in for the gateway).

``make demo``, the end-to-end test and the rule/dashboard cross-checks all use it. It never
opens a connection anywhere but 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import yaml
from b2sdk.v3 import B2Api, B2HttpApiConfig, InMemoryAccountInfo, RawSimulator
from botocore.config import Config as BotoConfig
from moto.server import ThreadedMotoServer

from exporter.assets.records import make_record
from exporter.core.app import build_pollers
from exporter.core.clock import Clock
from exporter.core.config import Config, SourceConfig, parse_config
from exporter.core.poller import Poller
from exporter.core.state import StateKeeper
from exporter.core.store import StateStore
from exporter.sim.healthchecks import FakeHealthchecks, start_fake_healthchecks
from exporter.sim.healthchecks import homelab as healthchecks_homelab
from exporter.sim.pve import FakePVE, PVEScenario, start_fake_pve
from exporter.sim.pve import homelab as pve_homelab
from exporter.sim.truenas import FakeTrueNAS, TrueNASScenario, start_fake_truenas
from exporter.sim.truenas import homelab as truenas_homelab
from exporter.sources import build_source
from exporter.sources.b2.source import B2Source
from exporter.sources.base import Source

TZ = "Europe/Berlin"
B2_BUCKET = "homelab-b2"
STORJ_BUCKET = "homelab-storj"
# B2 daily copies the application data and configs (the sync's path is all of /mnt/storage);
# Storj weekly the photo library, Nextcloud's files and selected PVE backups.
PREFIXES = ("immich/", "nextcloud/", "truenas-config/", "ha-backup/")
STORJ_PREFIXES = ("immich/", "nextcloud/", "pve/")
S3_ACCESS_KEY = "storj-access"  # moto accepts any credentials
S3_SECRET_KEY = "storj-secret-not-real"  # noqa: S105 - a simulator's fixed credential
PVE1_ADDRESS = "192.0.2.11"  # the only host the PVE backup export is meant for
LAN = "192.0.2.0/24"
RECORDS_TOKEN = "demo-records-token-not-secret"  # noqa: S105 - the demo's fixed API token


def _daily(hour: int, minute: int, *, now: float, days: int) -> list[float]:
    """Return the last ``days`` daily wall-clock instants at or before ``now``, oldest first."""
    zone = ZoneInfo(TZ)
    today = datetime.fromtimestamp(now, zone).date()
    out = []
    for back in range(days + 1, -1, -1):
        at = datetime.combine(today - timedelta(days=back), time(hour, minute), zone).timestamp()
        if at <= now:
            out.append(at)
    return out[-days:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Homelab:
    """The running simulated homelab."""

    clock: Clock
    workdir: Path
    pve: FakePVE
    truenas: FakeTrueNAS
    healthchecks: FakeHealthchecks
    b2_sim: RawSimulator
    b2_key: tuple[str, str]
    moto: ThreadedMotoServer
    moto_port: int
    config_path: Path
    config: Config
    b2_master: tuple[str, str] = ("", "")
    healthy: bool = False
    _stopped: bool = field(default=False, repr=False)

    @property
    def pve_scenario(self) -> PVEScenario:
        """The PVE fake's scenario (break/repair backups, faults)."""
        return self.pve.scenario

    @property
    def truenas_scenario(self) -> TrueNASScenario:
        """The TrueNAS fake's scenario."""
        return self.truenas.scenario

    def b2_api(self) -> B2Api:
        """Return a fresh b2sdk API bound to the shared simulator (what the exporter uses)."""
        api = B2Api(InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=RawSimulator))
        api.session.raw_api = self.b2_sim
        return api

    def b2_delete_since(self, since: float) -> int:
        """Delete every B2 file version uploaded at or after ``since`` (syncs that failed).

        Returns how many were deleted. Uses the account's master key, as an operator would.
        """
        api = self.b2_api()
        api.authorize_account(*self.b2_master)
        bucket = api.get_bucket_by_name(B2_BUCKET)
        doomed = [
            version
            for version, _ in bucket.ls(latest_only=False, recursive=True)
            if version.upload_timestamp >= since * 1000
        ]
        for version in doomed:
            bucket.delete_file_version(version.id_, version.file_name)
        return len(doomed)

    def source(self, cfg: SourceConfig) -> Source[Any, Any]:
        """Build one source, the B2 one bound to the simulator."""
        if cfg.kind == "b2":
            return B2Source(cfg, api_factory=self.b2_api)  # type: ignore[arg-type]
        return build_source(cfg)

    def pollers(
        self,
        keeper: StateKeeper | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> list[Poller]:
        """Build one poller per configured source (with ``keeper``: memories and windows)."""
        if keeper is not None:
            keeper.load()
            self._seed_records(keeper)
        return build_pollers(
            self.config, clock=self.clock, keeper=keeper, factory=self.source, sleep=sleep
        )

    def write_ha_backup(self, at: float) -> Path:
        """Write a Home Assistant backup file made at ``at`` (the demo's accelerated time)."""
        return _write_ha_backup(self.workdir / "ha-backup", at, random.Random(int(at)))  # noqa: S311

    def _seed_records(self, keeper: StateKeeper) -> None:
        """One docs review, as ``backup-exporter record`` writes it; restore tests never done.

        The running exporter shows it after its next poll, as it would a CLI record.
        """
        if keeper.path is None or not self.config.assets:
            return
        store = StateStore(keeper.path)
        try:
            if not store.records():
                now = self.clock.time()
                record = make_record(
                    {
                        "activity": "docs-review",
                        "asset": sorted(self.config.assets)[0],
                        "result": "pass",
                        "at": now - 30 * 86400,
                        "note": "recovery docs checked against the running setup",
                    },
                    assets=self.config.assets,
                    origin="cli",
                    now=now,
                    zone=ZoneInfo(self.config.timezone),
                )
                store.add_record(**asdict(record), now=now)
        finally:
            store.close()
        if not self.healthy:
            # The strategy was written a season ago and no restore test has been done since:
            # its assets were first seen 100 days ago, so the quarterly test is overdue.
            since = self.clock.time() - VERIFICATION_SINCE
            for asset in self.config.assets:
                keeper.first_seen_at(f"verification\x1f{asset}", since)

    async def stop(self) -> None:
        """Stop every fake server."""
        if self._stopped:
            return
        self._stopped = True
        await self.pve.stop()
        await self.truenas.stop()
        await self.healthchecks.stop()
        self.moto.stop()


def _seed_b2(now: float) -> tuple[RawSimulator, tuple[str, str], tuple[str, str]]:
    seed = B2Api(InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=RawSimulator))
    sim = seed.session.raw_api
    account, master = sim.create_account()
    seed.authorize_account(account, master)
    bucket = seed.create_bucket(B2_BUCKET, "allPrivate")
    rng = random.Random(1)  # noqa: S311 - deterministic fake data
    # One sync a night at 01:30 for two weeks; each uploads a few changed files per prefix.
    for night, start in enumerate(_daily(1, 30, now=now - 2 * 3600, days=14)):
        for p, prefix in enumerate(PREFIXES):
            for i in range(3):
                name = f"{prefix}{night:02d}-{i}.bin"
                # Under b2sdk's simulated 200-byte part minimum, so each is a simple upload
                # whose custom timestamp the simulator keeps.
                data = rng.randbytes(120 + 20 * i + 7 * p)
                stamp = int((start + 600 * (p + 1) + 60 * i) * 1000)
                bucket.upload_bytes(data, name, custom_upload_timestamp=stamp)
    key = seed.create_key(["listBuckets", "listFiles", "readFiles"], "exporter")
    return sim, (key.id_, key.application_key), (account, master)


def _seed_s3(port: int) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        config=BotoConfig(s3={"addressing_style": "path"}),
    )
    client.create_bucket(Bucket=STORJ_BUCKET)
    rng = random.Random(2)  # noqa: S311 - deterministic fake data
    for prefix in STORJ_PREFIXES:
        for i in range(5):
            client.put_object(
                Bucket=STORJ_BUCKET, Key=f"{prefix}weekly-{i}.bin", Body=rng.randbytes(4096 + i)
            )


VERIFICATION_SINCE = 100 * 86400.0  # the reference strategy's age: restore tests never done
STORJ_TASK = "Storj weekly"
STORJ_STALL = 7 * 86400.0  # the reference homelab's Storj sync stopped this long ago


def _last_storj_sync(before: float) -> float:
    """When the last Storj weekly run (Wednesday 05:00, about 4 h) before ``before`` ended."""
    zone = ZoneInfo(TZ)
    day = datetime.fromtimestamp(before, zone)
    while True:
        start = datetime.combine(day.date(), time(5, 0), tzinfo=zone)
        if start.weekday() == 2 and start.timestamp() + 4 * 3600 <= before:
            return start.timestamp() + 4 * 3600
        day -= timedelta(days=1)


def _age_storj(at: float) -> None:
    """Date every Storj object ``at`` (the stalled sync's copy).

    moto stamps uploads with the real time, so the copy is aged in moto's in-process backend.
    """
    from moto.core.models import DEFAULT_ACCOUNT_ID  # noqa: PLC0415
    from moto.s3.models import s3_backends  # noqa: PLC0415

    when = datetime.fromtimestamp(at, UTC).replace(tzinfo=None)  # moto keeps naive UTC
    bucket = s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[STORJ_BUCKET]
    for key in bucket.keys.values():
        key.last_modified = when


def _seed_files(folder: Path, now: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(3)  # noqa: S311 - deterministic fake data
    for at in _daily(3, 0, now=now - 600, days=14):
        _write_ha_backup(folder, at, rng)


def _write_ha_backup(folder: Path, at: float, rng: random.Random) -> Path:
    stamp = datetime.fromtimestamp(at, ZoneInfo(TZ))
    path = folder / f"ha_{stamp:%Y-%m-%d_%H.%M}.tar"
    path.write_bytes(rng.randbytes(4096))
    os.utime(path, (at + 300, at + 300))
    return path


def config_document(lab: dict[str, Any], *, secrets: Path) -> dict[str, Any]:
    """Return the exporter configuration for the running fakes, as a YAML-ready mapping."""
    return {
        "timezone": TZ,
        # The demo's memory: `backup-exporter report --config.file <workdir>/config.yml` reads it.
        "state_path": str(secrets.parent / "state.db"),
        "sources": {
            "pve1": {
                "kind": "proxmox",
                "url": lab["pve_url"],
                "token_id": lab["pve_token_id"],
                "token_secret_file": str(secrets / "pve.token"),
                "ca_file": lab["pve_ca"],
                "interval": "30s",
                "timeout": "10s",
                # A vzdump run of VM 100 takes minutes; one past an hour is stuck.
                "job_max_duration": "1h",
            },
            "truenas": {
                "kind": "truenas",
                "url": lab["truenas_url"],
                "username": lab["truenas_user"],
                "api_key_file": str(secrets / "truenas.key"),
                "ca_file": lab["truenas_ca"],
                "interval": "1m",
                "timeout": "20s",
                "cloudsync_grace": {"B2 daily": "8h", "Storj weekly": "12h"},
            },
            "smart": {
                "kind": "smartctl",
                # The fake smartctl runs through the prefix, as a real one would through ssh.
                "command_prefix": [sys.executable, "-m", "exporter.sim.smartctl"],
                "interval": "5m",
                "timeout": "60s",
            },
            "healthchecks": {
                "kind": "healthchecks",
                "url": lab["hc_url"],
                "api_key_file": str(secrets / "healthchecks.key"),
                "interval": "1m",
                "timeout": "20s",
            },
            "ha-backups": {
                "kind": "files",
                "path": lab["ha_dir"],
                "glob": "*.tar",
                "interval": "1m",
                "timeout": "30s",
            },
            "b2": {
                "kind": "b2",
                "key_id": lab["b2_key_id"],
                "application_key_file": str(secrets / "b2.key"),
                "interval": "1m",
                "timeout": "30s",
                "buckets": {
                    B2_BUCKET: {
                        "prefixes": list(PREFIXES),
                        "interval": "5m",
                        "restore_check": {"interval": "1h", "max_bytes": "1MiB"},
                    }
                },
            },
            "storj": {
                "kind": "s3",
                "endpoint": lab["s3_endpoint"],
                "access_key_id": S3_ACCESS_KEY,
                "secret_access_key_file": str(secrets / "storj.key"),
                "interval": "1m",
                "timeout": "30s",
                "buckets": {
                    STORJ_BUCKET: {
                        "prefixes": list(STORJ_PREFIXES),
                        "interval": "5m",
                        "restore_check": {"interval": "1h", "max_bytes": "1MiB"},
                    }
                },
            },
        },
        "assets": ASSETS,
        # The strategy's promises (docs/reference-homelab.md), checked on every poll.
        "policy": {
            "retention": [
                {"source": "pve1", "job": "backup-infra-daily", "prune_backups": "keep-last=14"}
            ],
            "quota": [
                {"source": "truenas", "dataset": "storage/backups/proxmox", "quota": lab["quota"]}
            ],
            "nfs_export": [
                {
                    "source": "truenas",
                    "path": "/mnt/storage/backups/proxmox",
                    "hosts": [PVE1_ADDRESS],
                }
            ],
            "encryption": [
                {"source": "truenas", "task": "B2 daily"},
                {"source": "truenas", "task": "Storj weekly"},
            ],
            "cloudsync_schedule": [
                {"source": "truenas", "task": "B2 daily", "schedule": "30 1 * * *"},
                {"source": "truenas", "task": "Storj weekly", "schedule": "0 5 * * 3"},
            ],
        },
        "jobs": {
            "ha-daily": {
                "schedule": "0 3 * * *",
                "grace": "2h",
                "evidence": {"source": "ha-backups"},
            },
            "smart-long": {
                "schedule": "Mon,Wed..Sun *-*-01 02:30",
                "grace": "1d",
                "evidence": {"source": "smart", "test": "long"},
            },
        },
    }


def _b2(prefix: str) -> dict[str, Any]:
    return {
        "layer": "offsite",
        "evidence": {"source": "b2", "bucket": B2_BUCKET, "prefix": prefix},
        "jobs": ["cloudsync-b2-daily"],
    }


def _storj(prefix: str) -> dict[str, Any]:
    return {
        "layer": "offsite",
        "evidence": {"source": "storj", "bucket": STORJ_BUCKET, "prefix": prefix},
        "jobs": ["cloudsync-storj-weekly"],
    }


def _snapshots(dataset: str) -> dict[str, Any]:
    return {"layer": "snapshot", "evidence": {"source": "truenas", "dataset": dataset}}


#: The reference homelab's assets (docs/reference-homelab.md, "Layers"): where each one's
#: copies live. The PVE archives and the Home Assistant backups sit on the NAS (NFS, SMB),
#: so their medium is ``truenas``; the snapshots of a dataset share its medium.
ASSETS: dict[str, Any] = {
    "infra100": {
        # Its only offsite copy is the weekly Storj sync: an RPO shorter than a week would
        # make it non-compliant five days out of seven.
        "rpo": "8d",
        "criticality": "high",
        "locations": [
            {"layer": "local", "evidence": {"source": "pve1", "vmid": "100"}, "medium": "truenas"},
            _snapshots("storage/backups/proxmox"),
            _storj("pve/"),
        ],
    },
    "immich": {
        "rpo": "2d",
        "criticality": "high",
        "locations": [_snapshots("storage/immich"), _b2("immich/"), _storj("immich/")],
    },
    "nextcloud": {
        "rpo": "2d",
        "criticality": "high",
        "locations": [_snapshots("storage/nextcloud"), _b2("nextcloud/"), _storj("nextcloud/")],
    },
    "home-assistant": {
        "rpo": "2d",
        "criticality": "normal",
        "locations": [
            {"layer": "local", "evidence": {"source": "ha-backups"}, "medium": "truenas"},
            _snapshots("storage/ha-backup"),
            _b2("ha-backup/"),
        ],
    },
    # Manual exports (a known gap): one offsite copy, so never 3-2-1 compliant.
    "truenas-config": {
        "rpo": "8d",
        "criticality": "low",
        "locations": [_b2("truenas-config/")],
    },
}


def _write_secret(path: Path, value: str) -> None:
    path.write_text(value + "\n")
    path.chmod(0o600)


async def start_homelab(
    workdir: Path,
    *,
    clock: Clock,
    healthy: bool = False,
    ports: Iterable[int] = (),
) -> Homelab:
    """Start every fake on 127.0.0.1 and write the exporter config into ``workdir``.

    ``healthy=True`` fixes the problems the reference homelab has (guest 101 covered by no job;
    the PVE backup NFS export opened to the whole LAN, a drifted policy;
    14 × the newest archive does not fit in the 150 GiB storage and quota; a failed SMART
    self-test on ``sdb``) so that nothing but the Watchdog alerts: the end-to-end test breaks
    one thing at a time from there.
    ``ports`` optionally fixes the PVE, TrueNAS and S3 ports (the demo uses stable ones).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    secrets = workdir / "secrets"
    secrets.mkdir(exist_ok=True)
    pve_port, truenas_port, moto_port = [*ports, 0, 0, 0][:3]
    now = clock.time()
    scenario = pve_homelab(clock.time, tz=TZ)
    if healthy:
        scenario.guests = [g for g in scenario.guests if g.vmid != 101]
        scenario.storage("truenas-backups").total = 500 * 2**30
    pve = await start_fake_pve(scenario, port=pve_port)
    # Unless healthy, the Storj sync stalled a week ago: its last run did not fire (the job is
    # overdue) and the Storj copy is a week or more old.
    nas = truenas_homelab(
        clock.time, tz=TZ, skip_from=None if healthy else {STORJ_TASK: now - STORJ_STALL}
    )
    if healthy:
        # The reference disk sdb's newest short self-test failed; in the healthy lab it passed.
        for disk in nas.disks:
            disk.tests = [t for t in disk.tests if t.get("status") != "FAILED"]
        for dataset in nas.datasets:
            if dataset.quota:
                dataset.quota = 500 * 2**30
    else:
        # The drifted policy of the reference homelab: the PVE backup export opened to the LAN.
        nas.nfs_shares[0].networks = [LAN]
    truenas = await start_fake_truenas(nas, port=truenas_port)
    b2_sim, b2_key, b2_master = _seed_b2(now)
    moto_port = moto_port or _free_port()
    # moto's werkzeug server logs every request; only its errors are worth seeing.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    _seed_s3(moto_port)
    if not healthy:
        _age_storj(_last_storj_sync(now - STORJ_STALL))
    ha_dir = workdir / "ha-backup"
    _seed_files(ha_dir, now)
    _write_secret(secrets / "pve.token", pve.token_secret)
    _write_secret(secrets / "truenas.key", truenas.api_key)
    _write_secret(secrets / "b2.key", b2_key[1])
    _write_secret(secrets / "storj.key", S3_SECRET_KEY)
    hc = await start_fake_healthchecks(healthchecks_homelab(clock.time))
    _write_secret(secrets / "healthchecks.key", hc.readonly_key)
    _write_secret(secrets / "records.token", RECORDS_TOKEN)
    doc = config_document(
        {
            "pve_url": pve.url,
            "pve_token_id": pve.token_id,
            "pve_ca": pve.ca_file,
            "truenas_url": truenas.url,
            "truenas_user": truenas.username,
            "truenas_ca": truenas.ca_file,
            "ha_dir": str(ha_dir),
            "b2_key_id": b2_key[0],
            "s3_endpoint": f"http://127.0.0.1:{moto_port}",
            "hc_url": hc.url,
            "quota": "500GiB" if healthy else "150GiB",
        },
        secrets=secrets,
    )
    # Verification records: a restore script may POST its result (see the README's curl).
    doc["records_api"] = {"token_file": str(secrets / "records.token")}
    config_path = workdir / "config.yml"
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    config = parse_config(config_path.read_text(), base_dir=workdir)
    return Homelab(
        healthy=healthy,
        clock=clock,
        workdir=workdir,
        pve=pve,
        truenas=truenas,
        healthchecks=hc,
        b2_sim=b2_sim,
        b2_key=b2_key,
        b2_master=b2_master,
        moto=moto,
        moto_port=moto_port,
        config_path=config_path,
        config=config,
    )
