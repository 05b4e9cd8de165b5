"""The config models seen from outside: typed evidence selectors and the JSON Schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from exporter.core.config import ConfigError, config_schema, parse_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "docs" / "config.schema.json"
EXAMPLE = ROOT / "deploy" / "config.example.yml"

PVE = (
    "sources:\n"
    "  pve1: {kind: proxmox, url: 'https://pve.lan:8006', token_id: 'monitor@pve!exporter',"
    " token_secret: x}\n"
)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], capture_output=True, text=True, check=False
    )


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.problems


def test_check_config_rejects_an_unknown_selector_key_naming_the_accepted_ones(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        PVE + "jobs:\n  j: {schedule: 'sat 02:30', grace: 6h, "
        "evidence: {source: pve1, vmidd: '100'}}\n"
    )
    proc = run_cli("check-config", str(bad))
    assert proc.returncode == 2, proc.stderr
    assert (
        "jobs.j.evidence.vmidd: unknown key (kind proxmox accepts: source, vmid, storage)"
        in proc.stderr
    ), proc.stderr
    # The required selector key is reported as missing too.
    assert "jobs.j.evidence.vmid: missing" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("evidence", "expected"),
    [
        ("{source: zzz}", "jobs.j.evidence.source: no source named 'zzz'"),
        ("{vmid: '100'}", "jobs.j.evidence.source: missing"),
        ("{source: pve1}", "jobs.j.evidence.vmid: missing"),
        ("{source: pve1, vmid: [1]}", "jobs.j.evidence.vmid: must be a string"),
    ],
)
def test_evidence_selector_problems(evidence: str, expected: str) -> None:
    found = problems(
        PVE + f"jobs:\n  j: {{schedule: 'sat 02:30', grace: 6h, evidence: {evidence}}}\n"
    )
    assert expected in found, found


def test_a_valid_selector_is_kept_as_strings() -> None:
    cfg = parse_config(
        PVE + "jobs:\n  j: {schedule: 'sat 02:30', grace: 6h, "
        "evidence: {source: pve1, vmid: 100, storage: nas}}\n"
    )
    assert dict(cfg.jobs["j"].evidence) == {"source": "pve1", "vmid": "100", "storage": "nas"}


def test_a_kind_timezone_inherits_the_top_level_one() -> None:
    cfg = parse_config("timezone: Europe/Berlin\n" + PVE)
    assert cfg.sources["pve1"].timezone == "Europe/Berlin"  # type: ignore[attr-defined]
    assert parse_config(PVE).sources["pve1"].timezone == "UTC"  # type: ignore[attr-defined]


def test_the_schema_command_prints_the_committed_schema() -> None:
    proc = run_cli("config", "schema")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed == json.loads(SCHEMA_FILE.read_text(encoding="utf-8")), (
        "docs/config.schema.json is stale: backup-exporter config schema > docs/config.schema.json"
    )
    assert printed == config_schema()
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(printed)


def test_the_schema_command_loads_no_sdk() -> None:
    code = (
        "import sys, io, contextlib; from exporter.core.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['config', 'schema'])\n"
        "print(sorted(m for m in ('b2sdk', 'boto3', 'proxmoxer') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(config_schema())


def test_the_example_config_validates_against_the_schema() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert text.startswith("# yaml-language-server: $schema=../docs/config.schema.json\n")
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in validator().iter_errors(yaml.safe_load(text))
    ]
    assert errors == []


@pytest.mark.parametrize(
    "doc",
    [
        {"sources": {"x": {"kind": "nosuch"}}},
        {"sources": {"x": {"interval": "5m"}}},
        {"sources": {"x": {"kind": "zfs", "colour": "red"}}},
        {"sources": {"x": {"kind": "zfs", "interval": "soon"}}},
        {"sources": {"x": {"kind": "proxmox", "url": "https://pve", "token_id": "a@pve!b"}}},
        {
            "jobs": {
                "j": {"schedule": "daily", "grace": "1h", "evidence": {"source": "x", "vmidd": 1}}
            }
        },
        {"bogus": 1},
    ],
)
def test_the_schema_rejects_what_the_loader_rejects(doc: dict[str, Any]) -> None:
    assert not validator().is_valid(doc)


def test_env_references_durations_and_secret_files_validate() -> None:
    doc = {
        "sources": {
            "pve1": {
                "kind": "proxmox",
                "url": "${PVE_URL}",
                "token_id": "monitor@pve!exporter",
                "token_secret_file": "pve.secret",
                "interval": "5m",
                "timeout": 30,
            }
        },
        "jobs": {
            "j": {
                "schedule": "sat 02:30",
                "grace": "6h",
                "evidence": {"source": "pve1", "vmid": "100"},
            }
        },
    }
    assert validator().is_valid(doc), [e.message for e in validator().iter_errors(doc)]
