"""deploy/backup-exporter.service: ``systemd-analyze verify`` and ``security --offline``.

``verify`` needs every ``Exec*`` binary to exist, so it checks a copy of the unit whose only
change is ``/usr/local/bin/backup-exporter`` pointing at the ``backup-exporter`` of this venv
(the real entry point). ``security --offline=true`` scores the unit file as it ships; the
score may not get worse than the one recorded in the README.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "backup-exporter.service"
README = ROOT / "README.md"
SHIPPED_BINARY = "/usr/local/bin/backup-exporter"
ENTRY_POINT = Path(sys.executable).parent / "backup-exporter"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze not found: it comes with Debian's systemd package"
    return found


def local_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with its binary at this venv's entry point, under the unit's own name."""
    assert ENTRY_POINT.exists(), ENTRY_POINT
    text = UNIT.read_text() if text is None else text
    assert SHIPPED_BINARY in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(SHIPPED_BINARY, str(ENTRY_POINT)))
    return unit


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    # Console logging: without it, the "…, ignoring" warnings of a bad setting may go to a
    # journal instead of stderr, and a unit systemd would half-ignore would look clean.
    return subprocess.run(
        [systemd_analyze(), "verify", str(unit)],
        capture_output=True, text=True, check=False, timeout=60,
        env={"PATH": "/usr/bin:/bin", "SYSTEMD_LOG_TARGET": "console"},
    )  # fmt: skip


def test_the_unit_verifies(tmp_path: Path) -> None:
    proc = verify(local_copy(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("\nProtectSystem=strict", "\nProtectSystem=very"), "Failed to parse protect system"),
        (("\nType=simple", "\nType=simplest"), "Failed to parse service type"),
        (("\nExecStartPre=", "\nExecStartPre=relative/"), "Neither a valid executable name"),
    ],
)
def test_verify_catches_a_broken_unit(
    tmp_path: Path, change: tuple[str, str], complaint: str
) -> None:
    old, new = change
    text = UNIT.read_text()
    assert old in text
    proc = verify(local_copy(tmp_path, text.replace(old, new, 1)))
    assert complaint in proc.stderr, proc.stderr


def test_verify_needs_the_binary(tmp_path: Path) -> None:
    # Why the copy: the shipped path does not exist on a test machine, and verify says so.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(SHIPPED_BINARY, str(tmp_path / "missing")))
    proc = verify(unit)
    assert proc.returncode != 0
    assert "is not executable" in proc.stderr


def exposure(unit: Path) -> float:
    proc = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", proc.stdout)
    assert match, proc.stdout[-2000:]
    return float(match.group(1))


def recorded_exposure() -> float:
    match = re.search(
        r"`systemd-analyze security --offline=true`[^\n]*\*\*(\d+\.\d)\*\*", README.read_text()
    )
    assert match, "README records no systemd-analyze security score"
    return float(match.group(1))


def test_the_security_score_is_no_worse_than_recorded() -> None:
    assert exposure(UNIT) <= recorded_exposure()


def test_the_score_reacts_to_hardening(tmp_path: Path) -> None:
    # Dropping the sandbox must raise the exposure: the score is measured, not constant.
    loose = tmp_path / UNIT.name
    loose.write_text(
        "\n".join(
            line
            for line in UNIT.read_text().splitlines()
            if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "Capability"))
        )
    )
    assert exposure(loose) > exposure(UNIT) + 2
