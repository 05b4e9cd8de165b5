from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import MEMORY_SPEC
from pydantic import ValidationError

from exporter.core.config import (
    ConfigError,
    Secret,
    format_duration,
    parse_config,
    parse_duration,
    parse_size,
)

KINDS = {"memory": MEMORY_SPEC}


def problems_of(text: str, tmp_path: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, kinds=KINDS, base_dir=tmp_path)
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("6h", 21600), ("7d", 604800), ("2w", 1209600), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    if seconds >= 1:
        assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["5", "5 minutes", "-1s", "1y", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_sizes() -> None:
    assert parse_size("16MiB") == 16 * 1024 * 1024
    assert parse_size("1GB") == 10**9
    assert parse_size(512) == 512
    with pytest.raises(ValueError, match="invalid size"):
        parse_size("lots")


def test_valid_config_is_frozen_and_typed() -> None:
    cfg = parse_config(
        """
timezone: Europe/Berlin
sources:
  mem1: {kind: memory, interval: 5m, timeout: 30s, value: 3}
jobs:
  ha-daily: {schedule: "0 3 * * *", grace: 2h, evidence: {source: mem1}}
""",
        kinds=KINDS,
    )
    src = cfg.sources["mem1"]
    assert (src.interval, src.timeout, src.kind) == (300, 30, "memory")
    assert 0 < src.jitter <= 30
    job = cfg.jobs["ha-daily"]
    assert (job.grace, job.timezone, dict(job.evidence)) == (
        7200,
        "Europe/Berlin",
        {"source": "mem1"},
    )
    with pytest.raises((dataclasses.FrozenInstanceError, ValidationError)):
        src.interval = 1  # type: ignore[misc]


def test_every_problem_reported_once_with_its_path() -> None:
    problems = problems_of(
        """
timezone: Mars/Olympus
sources:
  a: {kind: memory, interval: soon, value: "x"}
  b: {kind: nosuch}
  c: {interval: 5m}
  d: {kind: memory, interval: 1m, timeout: 2m, colour: red}
jobs:
  j1: {schedule: "99 * * * *", evidence: {source: zzz}}
  j2: {schedule: "21:00", grace: 1h, evidence: {source: a}, extra: 1}
bogus: 1
"""
    )
    joined = "\n".join(problems)
    for expected in (
        "timezone: unknown time zone 'Mars/Olympus'",
        "sources.a.interval: invalid duration 'soon'",
        "sources.a.value: must be a number",
        "sources.b.kind: unknown kind 'nosuch'",
        "sources.c.kind: missing",
        "sources.d.timeout: must be shorter than interval",
        "sources.d.colour: unknown key",
        "jobs.j1.schedule:",
        "jobs.j1.grace: missing",
        "jobs.j1.evidence.source: no source named 'zzz'",
        "jobs.j2.extra: unknown key",
        "bogus: unknown key",
    ):
        assert expected in joined, f"{expected!r} not in:\n{joined}"
    assert len(problems) == 12


def test_invalid_yaml_names_the_line() -> None:
    problems = problems_of("sources:\n  a: [unclosed\n")
    assert problems[0].startswith("line ")


def _proxmox(extra: str, tmp_path: Path) -> object:
    from exporter.sources.proxmox.config import SPEC

    text = (
        "sources:\n  pve1: {kind: proxmox, url: 'https://pve.lan:8006', "
        f"token_id: 'monitor@pve!exporter'{extra}}}\n"
    )
    return parse_config(text, kinds={"proxmox": SPEC}, base_dir=tmp_path).sources["pve1"]


def test_secret_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_TOKEN", "canary-3f1c")
    cfg = _proxmox(", token_secret: '${CANARY_TOKEN}'", tmp_path)
    secret = cfg.token_secret  # type: ignore[attr-defined]
    assert secret.reveal() == "canary-3f1c"
    assert "canary" not in repr(secret) and "canary" not in str(secret)
    assert "canary" not in repr(cfg) and "canary" not in str(cfg)
    (tmp_path / "pve.secret").write_text("from-file\n")
    cfg = _proxmox(", token_secret_file: pve.secret", tmp_path)
    assert cfg.token_secret == Secret("from-file")  # type: ignore[attr-defined]


def test_secrets_never_appear_in_dumps_or_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from pydantic import TypeAdapter

    from exporter.core.config import config_schema
    from exporter.sources.proxmox.config import ProxmoxConfig

    monkeypatch.setenv("PVE_TOKEN", "s3cr3t-7f2a")
    cfg = _proxmox(", token_secret: '${PVE_TOKEN}'", Path.cwd())
    adapter = TypeAdapter(ProxmoxConfig)
    assert "s3cr3t" not in adapter.dump_json(cfg).decode()  # type: ignore[arg-type]
    assert "s3cr3t" not in repr(adapter.dump_python(cfg))  # type: ignore[arg-type]
    assert "s3cr3t" not in json.dumps(config_schema())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("", 'sources.pve1.token_secret: missing (set token_secret: "${ENV_VAR}" or'),
        (", token_secret: '${NOPE_NOT_SET}'", "environment variable NOPE_NOT_SET is not set"),
        (", token_secret: a, token_secret_file: f", "not both"),
        (", token_secret_file: absent", "sources.pve1.token_secret_file: cannot read"),
        (", token_secret: ''", "sources.pve1.token_secret: is empty"),
    ],
)
def test_secret_problems(extra: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _proxmox(extra, tmp_path)
    assert any(message in p for p in info.value.problems), info.value.problems
    assert len(info.value.problems) == 1, info.value.problems


def test_only_configured_kinds_are_imported(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "c.yml"
    cfg.write_text(f"sources:\n  ha: {{kind: files, path: {tmp_path}}}\n")
    code = (
        "import sys; from exporter.core.config import load_config; "
        f"load_config({str(cfg)!r}); "
        "print(sorted(m for m in ('b2sdk', 'boto3', 'proxmoxer') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_registered_kind_loads() -> None:
    from exporter.sources import KIND_NAMES, kinds

    for name in KIND_NAMES:
        assert kinds()[name].build is not None


@pytest.mark.parametrize("zone", ["Europe", "Mars/Olympus", "../etc/passwd"])
def test_a_bad_time_zone_is_a_problem_not_a_crash(zone: str) -> None:
    problems = problems_of(f"timezone: {zone!r}\n")
    assert problems == [f"timezone: unknown time zone {zone!r}"]
