"""The ``assets:`` section: evidence checked like a job's, defaults, the snapshot medium rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from test_deploy import SECRETS

from exporter.core.config import ConfigError, config_schema, load_config, parse_config
from exporter.sim.homelab import ASSETS

SOURCES = """
sources:
  truenas: {kind: truenas, url: "wss://nas.example/api/current", api_key: k}
  nas-copy: {kind: files, path: /tmp}
  b2: {kind: b2, key_id: k, application_key: s, buckets: {homelab-b2: {}}}
  storj:
    kind: s3
    endpoint: https://gateway.storjshare.io
    access_key_id: a
    secret_access_key: s
    buckets: {homelab: {}}
jobs:
  nas-daily: {schedule: "0 3 * * *", grace: 2h, evidence: {source: nas-copy}}
"""


# The demo's sources, enough to validate its assets (nothing is contacted).
SIM_SOURCES = {
    "pve1": {
        "kind": "proxmox",
        "url": "https://pve.example:8006",
        "token_id": "a@pve!b",
        "token_secret": "s",
    },
    "truenas": {"kind": "truenas", "url": "wss://nas.example/api/current", "api_key": "k"},
    "ha-backups": {"kind": "files", "path": "/tmp"},
    "b2": {"kind": "b2", "key_id": "k", "application_key": "s", "buckets": {"homelab-b2": {}}},
    "storj": {
        "kind": "s3",
        "endpoint": "https://gateway.storjshare.io",
        "access_key_id": "a",
        "secret_access_key": "s",
        "buckets": {"homelab-storj": {}},
    },
}


def parse(assets: str) -> object:
    return parse_config(SOURCES + "assets:\n" + assets)


def problems(assets: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(assets)
    return err.value.problems


def test_the_issue_example_loads_with_default_names_and_media() -> None:
    config = parse_config(
        SOURCES
        + """
assets:
  immich:
    rpo: 2d
    criticality: high
    locations:
      - {layer: snapshot, evidence: {source: truenas, dataset: tank/immich}}
      - {layer: local,    evidence: {source: nas-copy}}
      - {layer: offsite,  evidence: {source: b2, bucket: homelab-b2, prefix: immich/}}
      - {layer: offsite, evidence: {source: storj, bucket: homelab, prefix: immich/}, medium: storj}
      - {layer: offsite,  evidence: {source: b2, bucket: homelab-b2, prefix: immich2/}}
"""
    )
    immich = config.assets["immich"]  # type: ignore[attr-defined]
    assert immich.rpo == 2 * 86400
    assert immich.criticality == "high"
    assert immich.sla_target == 0.95
    names = [loc.name for loc in immich.locations]
    assert names == [
        "snapshot-truenas",
        "local-nas-copy",
        "offsite-b2",
        "offsite-storj",
        "offsite-b2-2",
    ]
    assert [loc.medium for loc in immich.locations] == ["truenas", "nas-copy", "b2", "storj", "b2"]
    assert immich.locations[2].evidence == {
        "source": "b2",
        "bucket": "homelab-b2",
        "prefix": "immich/",
    }


def test_a_snapshot_takes_the_medium_of_the_data_it_snapshots_on_its_source() -> None:
    config = parse(
        """
  immich:
    rpo: 1d
    locations:
      - {layer: snapshot, evidence: {source: truenas, dataset: tank/immich}}
      - {layer: primary, evidence: {source: truenas, dataset: tank/immich}, medium: nas-disks}
      - {layer: offsite, evidence: {source: b2, prefix: immich/}}
"""
    )
    locs = config.assets["immich"].locations  # type: ignore[attr-defined]
    assert [loc.medium for loc in locs] == ["nas-disks", "nas-disks", "b2"]
    # An explicit medium on a snapshot must be one another location has.
    assert problems(
        """
  immich:
    rpo: 1d
    locations:
      - {layer: local, evidence: {source: nas-copy}, medium: nas}
      - {layer: snapshot, evidence: {source: truenas, dataset: tank/immich}, medium: elsewhere}
"""
    ) == [
        "assets.immich.locations[1].medium: a snapshot is never a separate medium: give the "
        "medium of the location it snapshots (one of: nas)"
    ]


def test_evidence_errors_carry_their_path() -> None:
    found = problems(
        """
  immich:
    rpo: 2d
    locations:
      - {layer: snapshot, evidence: {source: truenas, dataset: tank/immich, pool2: x}}
      - {layer: local, evidence: {source: nas}}
      - {layer: offsite, evidence: {source: b2, bucket: [homelab-b2]}}
      - {layer: offsite, evidence: {bucket: homelab}}
      - {layer: tape, evidence: {source: b2}}
"""
    )
    assert found[0].startswith(
        "assets.immich.locations[0].evidence.pool2: unknown key (kind truenas accepts: source,"
    )
    assert found[1:] == [
        "assets.immich.locations[1].evidence.source: no source named 'nas'",
        "assets.immich.locations[2].evidence.bucket: must be a string",
        "assets.immich.locations[3].evidence.source: missing",
        "assets.immich.locations[4].layer: Input should be 'primary', 'snapshot', 'local' or "
        "'offsite'",
    ]


def test_job_locations_name_a_jobs_entry_or_a_sources_job() -> None:
    config = parse(
        """
  nas:
    rpo: 2d
    locations:
      - {layer: local, evidence: {job: nas-daily}}
      - {layer: offsite, evidence: {job: cloudsync-b2-daily, source: truenas}}
      - {layer: snapshot, evidence: {source: nas-copy}}
"""
    )
    locs = config.assets["nas"].locations  # type: ignore[attr-defined]
    assert [(loc.name, loc.medium) for loc in locs] == [
        ("local-nas-daily", "nas-copy"),  # the medium of the source its evidence names
        ("offsite-truenas", "truenas"),
        ("snapshot-nas-copy", "nas-copy"),
    ]
    assert problems(
        """
  nas:
    rpo: 2d
    locations:
      - {layer: local, evidence: {job: nope}}
      - {layer: local, evidence: {job: x, source: nope}}
      - {layer: local, evidence: {job: x, source: truenas, dataset: y}}
      - {layer: local, evidence: {job: ""}}
"""
    ) == [
        "assets.nas.locations[0].evidence.job: no jobs: entry named 'nope' (known: nas-daily); "
        "a job a source discovers needs its source: {job: NAME, source: SOURCE}",
        "assets.nas.locations[1].evidence.source: no source named 'nope'",
        "assets.nas.locations[2].evidence.dataset: unknown key (a job location accepts: job, "
        "source, vmid)",
        "assets.nas.locations[3].evidence.job: must not be empty",
    ]


def test_asset_level_problems() -> None:
    assert problems(
        """
  a: {rpo: 2d, sla_target: 1.5, locations: [{layer: local, evidence: {source: nas-copy}}]}
  b: {rpo: 2d}
  c: {rpo: soon, criticality: urgent, locations: [{layer: local, evidence: {source: nas-copy}}]}
  d:
    rpo: 1d
    locations:
      - {layer: local, evidence: {source: nas-copy}, name: x}
      - {layer: offsite, evidence: {source: b2}, name: x}
"""
    ) == [
        "assets.a.sla_target: must be a ratio in (0, 1], got 1.5",
        "assets.b.locations: list at least one location",
        "assets.c.rpo: invalid duration 'soon' (use e.g. 30s, 5m, 6h, 7d)",
        "assets.c.criticality: Input should be 'high', 'normal' or 'low'",
        "assets.d.locations: duplicate location name 'x'",
    ]


def test_check_config_exits_2_on_an_asset_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        SOURCES
        + "assets:\n  immich:\n    rpo: 2d\n    locations:\n"
        + "      - {layer: offsite, evidence: {source: b2, bucket: 7, prefix: [a]}}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(bad)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "assets.immich.locations[0].evidence.prefix: must be a string" in proc.stderr


def test_the_example_config_and_the_demo_ship_the_same_reference_assets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in SECRETS:
        monkeypatch.setenv(name, f"example-{name.lower()}")
    monkeypatch.setenv("HC_API_KEY", "k" * 32)
    example = load_config(Path(__file__).resolve().parents[1] / "deploy" / "config.example.yml")
    demo = parse_config(yaml.safe_dump({"sources": SIM_SOURCES, "assets": ASSETS}))

    def shape(assets: object) -> dict[str, object]:
        return {
            name: (
                a.rpo,
                a.criticality,
                [
                    (loc.name, loc.layer, loc.medium, loc.evidence.get("prefix", ""))
                    for loc in a.locations
                ],
            )
            for name, a in assets.items()  # type: ignore[attr-defined]
        }

    assert set(example.assets) == {
        "infra100",
        "immich",
        "nextcloud",
        "home-assistant",
        "truenas-config",
    }
    # The demo's prefix for the manual TrueNAS exports is truenas-config/ (reference-homelab.md).
    expected = shape(example.assets)
    expected["truenas-config"] = (
        8 * 86400.0,
        "low",
        [("offsite-b2", "offsite", "b2", "truenas-config/")],
    )
    assert shape(demo.assets) == expected


def test_the_schema_knows_location_evidence() -> None:
    validator = jsonschema.Draft202012Validator(config_schema())

    def doc(evidence: dict[str, object]) -> dict[str, object]:
        return {
            "assets": {"a": {"rpo": "2d", "locations": [{"layer": "local", "evidence": evidence}]}}
        }

    assert validator.is_valid(doc({"job": "nightly"}))
    assert validator.is_valid(doc({"job": "cloudsync-b2-daily", "source": "truenas"}))
    assert validator.is_valid(doc({"source": "b2", "bucket": "homelab", "prefix": "immich/"}))
    assert not validator.is_valid(doc({"job": "nightly", "dataset": "tank"}))
    assert not validator.is_valid(doc({"bucket": "homelab"}))
