"""``kind: zfs`` end to end against fake ``zfs``/``zpool`` programs, plus ``run_command``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import Metric

from exporter.core.clock import FakeClock
from exporter.core.command import run_command
from exporter.core.config import ConfigError, parse_config
from exporter.sources.base import FetchContext, FetchError
from exporter.sources.zfs.source import SPEC, ZfsConfig, ZfsSource

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BIN = FIXTURES / "bin"
# Only this kind: other kinds' modules are not this file's business.
KINDS = {"zfs": SPEC}


class FakeTools:
    """Writes the fake tools' answers and reads back how they were called."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.config_path = tmp / "fake.json"
        self.log = tmp / "calls.log"
        self.pidfile = tmp / "pids"
        self.answers: dict[str, Any] = {}

    def set(self, key: str, **answer: Any) -> None:
        self.answers[key] = answer
        self.config_path.write_text(
            json.dumps({"log": str(self.log), "pidfile": str(self.pidfile), **self.answers}),
            encoding="utf-8",
        )

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text("utf-8").splitlines()]


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    fake = FakeTools(tmp_path)
    fake.set("unused")
    monkeypatch.setenv("FAKE_TOOL_CONFIG", str(fake.config_path))
    monkeypatch.setenv("FAKE_PYTHON", sys.executable)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return fake


def ctx() -> FetchContext:
    return FetchContext(clock=FakeClock())


def source(**overrides: Any) -> ZfsSource:
    fields: dict[str, Any] = {
        "name": "nas",
        "kind": "zfs",
        "interval": 300.0,
        "timeout": 10.0,
        "json": "false",
    }
    fields.update(overrides)
    return ZfsSource(ZfsConfig(**fields))


def samples(families: Iterable[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for fam in families for s in fam.samples
    }


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text("utf-8")
    except FileNotFoundError:
        return True
    # An orphan may wait as a zombie for a non-reaping PID 1; it no longer runs.
    return "\nState:\tZ" in status


async def process_gone(pid: int) -> bool:
    """Wait (bounded) for SIGKILL to take effect: the kernel delivers it asynchronously."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while not _gone(pid):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# ---------------------------------------------------------------- fetch + render


async def test_text_mode_end_to_end(tools: FakeTools) -> None:
    tools.set("zfs_list", file=str(FIXTURES / "zfs" / "zfs_list_hp.txt"))
    tools.set("zpool_status", file=str(FIXTURES / "zfs" / "zpool_status_two_pools.txt"))
    src = source(exclude=("tank/vm-.*",))
    c = ctx()
    snap = await src.fetch(c)
    assert snap.json is False
    assert sum(c.requests.values()) == 2
    found = samples(src.render(snap))
    ds = (("dataset", "tank/backups"), ("source", "nas"))
    assert found[("backup_zfs_snapshots", ds)] == 3
    assert found[("backup_zfs_snapshot_newest_timestamp_seconds", ds)] == 1769644800
    assert found[("backup_zfs_dataset_quota_bytes", ds)] == 2199023255552
    assert not any(dict(k[1]).get("dataset") == "tank/vm-100-disk-0" for k in found)
    tank = (("pool", "tank"), ("source", "nas"))
    end = datetime(2026, 1, 11, 0, 34, 2, tzinfo=UTC).timestamp()
    assert found[("backup_zfs_scrub_last_end_timestamp_seconds", tank)] == end
    assert found[("backup_zfs_pool_healthy", (("pool", "backup"), ("source", "nas")))] == 0
    calls = tools.calls()
    assert [c["tool"] for c in calls] == ["zfs", "zpool"]
    assert calls[0]["args"] == [
        "list", "-H", "-p", "-t", "filesystem,volume,snapshot",
        "-o", "name,used,avail,quota,refer,creation",
    ]  # fmt: skip
    assert calls[1]["args"] == ["status"]
    # Config jobs: scrub and snapshot evidence.
    ev = src.evidence(snap, {"source": "nas", "pool": "tank"})
    assert ev is not None
    assert (ev.last_success, ev.running, ev.tracks_start) == (end, False, False)
    running = src.evidence(snap, {"source": "nas", "pool": "backup"})
    assert running is not None
    assert running.running is True
    snapshot_ev = src.evidence(snap, {"source": "nas", "dataset": "tank/backups"})
    assert snapshot_ev is not None
    assert snapshot_ev.last_success == 1769644800
    assert src.evidence(snap, {"source": "nas", "dataset": "tank/nope"}) is None


async def test_text_dates_follow_the_timezone_key(tools: FakeTools) -> None:
    tools.set("zfs_list", stdout="")
    tools.set("zpool_status", file=str(FIXTURES / "zfs" / "zpool_status_two_pools.txt"))
    snap = await source(timezone="America/New_York").fetch(ctx())
    tank = next(p for p in snap.pools if p.name == "tank")
    # 00:34:02 EST (UTC-5) is 05:34:02 UTC.
    assert tank.scrub_last_end == datetime(2026, 1, 11, 5, 34, 2, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("version", "expect_json"),
    [
        ("zfs-2.3.0-1\nzfs-kmod-2.3.0-1\n", True),
        ("zfs-2.2.7-1\nzfs-kmod-2.2.7-1\n", False),
        (None, False),  # OpenZFS 0.7: no "version" subcommand, exits 1
    ],
)
async def test_json_auto_detects_openzfs_2_3(
    tools: FakeTools, version: str | None, expect_json: bool
) -> None:
    if version is None:
        tools.set("zfs_version", stderr="unrecognized command 'version'\n", rc=2)
    else:
        tools.set("zfs_version", stdout=version)
    tools.set("zfs_list_json", file=str(FIXTURES / "zfs" / "zfs_list_j_int.json"))
    tools.set("zpool_status_json", file=str(FIXTURES / "zfs" / "zpool_status_jp.json"))
    tools.set("zfs_list", file=str(FIXTURES / "zfs" / "zfs_list_hp.txt"))
    tools.set("zpool_status", file=str(FIXTURES / "zfs" / "zpool_status_two_pools.txt"))
    src = source(json="auto")
    snap = await src.fetch(ctx())
    assert snap.json is expect_json
    await src.fetch(ctx())
    calls = tools.calls()
    # Detection runs once; later polls reuse it.
    assert sum(c["args"][:1] == ["version"] for c in calls) == 1
    if expect_json:
        assert calls[1]["args"][:4] == ["list", "-j", "--json-int", "-p"]
        assert calls[2]["args"] == ["status", "-j", "-p", "--json-int"]
        assert {p.name for p in snap.pools} == {"tank", "backup", "fresh"}
    else:
        assert "-j" not in calls[1]["args"]


async def test_command_prefix_is_prepended(tools: FakeTools) -> None:
    tools.set("zfs_list", stdout="")
    tools.set("zpool_status", stdout="no pools available\n")
    # "env VAR=1 zfs ..." stands in for "ssh host zfs ...": the prefix runs the command.
    snap = await source(command_prefix=("env", "FAKE_VIA=prefix")).fetch(ctx())
    assert snap.pools == ()
    assert [c["via"] for c in tools.calls()] == ["prefix", "prefix"]


async def test_failures_are_fetch_errors(tools: FakeTools) -> None:
    tools.set("zfs_list", stdout="tank\tbroken\n")
    tools.set("zpool_status", stdout="no pools available\n")
    with pytest.raises(FetchError) as err:
        await source().fetch(ctx())
    assert err.value.reason == "parse"
    tools.set("zfs_list", stderr="cannot open 'x': permission denied\n", rc=1)
    with pytest.raises(FetchError) as err:
        await source().fetch(ctx())
    assert err.value.reason == "permission"
    assert "permission denied" in err.value.message
    tools.set("zfs_list", stderr="failed to initialize ZFS library\n", rc=1)
    with pytest.raises(FetchError) as err:
        await source().fetch(ctx())
    assert err.value.reason == "connection"
    tools.set("zfs_list_json", stdout='{"datasets": {}}')
    tools.set("zpool_status_json", stdout="{not json")
    with pytest.raises(FetchError) as err:
        await source(json="true").fetch(ctx())
    assert err.value.reason == "parse"


async def test_missing_binary(
    tools: FakeTools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only = tmp_path / "onlyzfs"
    only.mkdir()
    wrapper = only / "zfs"  # absolute paths: PATH holds nothing else, not even dirname
    wrapper.write_text(f'#!/bin/sh\nexec "$FAKE_PYTHON" "{BIN / "_fake_tool.py"}" zfs "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", str(only))
    tools.set("zfs_list", stdout="")
    with pytest.raises(FetchError) as err:
        await source().fetch(ctx())
    assert (err.value.reason, err.value.message) == ("config", "zpool: command not found")
    with pytest.raises(FetchError) as err:
        await source(command_prefix=("/nonexistent/ssh", "nas")).fetch(ctx())
    assert err.value.reason == "config"
    assert "/nonexistent/ssh" in err.value.message


# ---------------------------------------------------------------- run_command


async def test_timeout_kills_the_process_group(tools: FakeTools) -> None:
    tools.set("zpool_status", hang=True)
    with pytest.raises(FetchError) as err:
        # The outer bound turns a broken kill (a child holding the pipes) into a failure.
        async with asyncio.timeout(10):
            await run_command(["zpool", "status"], timeout=0.5)
    assert err.value.reason == "timeout"
    assert "zpool status" in err.value.message
    pids = [int(p) for p in tools.pidfile.read_text("utf-8").split()]
    assert len(pids) == 2  # the fake tool and its "sleep" child
    assert [await process_gone(pid) for pid in pids] == [True, True]


async def test_cancelled_command_leaves_no_process(tools: FakeTools) -> None:
    tools.set("zpool_status", hang=True)
    task = asyncio.ensure_future(run_command(["zpool", "status"], timeout=60))
    while not tools.pidfile.exists() or len(tools.pidfile.read_text("utf-8").split()) < 2:
        await asyncio.sleep(0.02)  # waiting for a condition: the fake has started
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await task
    pids = [int(p) for p in tools.pidfile.read_text("utf-8").split()]
    assert [await process_gone(pid) for pid in pids] == [True, True]


async def test_run_command_codes_and_ssh_reasons(tools: FakeTools) -> None:
    tools.set("zfs_version", stdout="x", stderr="warn", rc=3)
    res = await run_command(["zfs", "version"], timeout=10, ok_codes=None)
    assert (res.returncode, res.stdout, res.stderr) == (3, "x", "warn")
    with pytest.raises(FetchError) as err:
        await run_command(["zfs", "version"], timeout=10)
    assert err.value.reason == "connection"
    assert "exited with 3" in err.value.message
    # A prefix whose program is called "ssh" and exits 255 is a connection problem.
    fake_ssh = tools.tmp / "ssh"
    fake_ssh.write_text(
        "#!/bin/sh\necho 'ssh: connect to host nas: No route to host' >&2\nexit 255\n"
    )
    fake_ssh.chmod(0o755)
    with pytest.raises(FetchError) as err:
        await run_command(["zpool", "status"], timeout=10, prefix=[str(fake_ssh), "nas"])
    assert err.value.reason == "connection"
    fake_ssh.write_text(
        "#!/bin/sh\necho 'root@nas: Permission denied (publickey).' >&2\nexit 255\n"
    )
    with pytest.raises(FetchError) as err:
        await run_command(["zpool", "status"], timeout=10, prefix=[str(fake_ssh), "nas"])
    assert err.value.reason == "auth"
    fake_ssh.write_text("#!/bin/sh\necho 'bash: zpool: command not found' >&2\nexit 127\n")
    with pytest.raises(FetchError) as err:
        await run_command(["zpool", "status"], timeout=10, prefix=[str(fake_ssh), "nas"])
    assert err.value.reason == "config"


async def test_invalid_utf8_output_is_replaced(tools: FakeTools) -> None:
    raw = tools.tmp / "raw.txt"
    raw.write_bytes(b"tank/\xff\xfe\t1\t2\t0\t3\t4\n")
    tools.set("zfs_list", file=str(raw))
    tools.set("zpool_status", stdout="no pools available\n")
    snap = await source().fetch(ctx())
    assert [d.name for d in snap.datasets] == ["tank/\ufffd\ufffd"]


# ---------------------------------------------------------------- config


def test_config_keys() -> None:
    yaml = """
sources:
  nas:
    kind: zfs
    command_prefix: [ssh, -o, BatchMode=yes, root@nas]
    datasets:
      include: ["tank(/.*)?"]
      exclude: ["tank/tmp(/.*)?"]
    json: true
    timezone: Europe/Berlin
"""
    cfg = parse_config(yaml, kinds=KINDS).sources["nas"]
    assert isinstance(cfg, ZfsConfig)
    assert cfg.command_prefix == ("ssh", "-o", "BatchMode=yes", "root@nas")
    assert (cfg.include, cfg.exclude) == (("tank(/.*)?",), ("tank/tmp(/.*)?",))
    assert (cfg.json, cfg.timezone) == ("true", "Europe/Berlin")
    assert (cfg.interval, cfg.timeout) == (300.0, 30.0)
    default = parse_config("sources:\n  z:\n    kind: zfs\n", kinds=KINDS).sources["z"]
    assert isinstance(default, ZfsConfig)
    assert (default.json, default.timezone, default.command_prefix) == ("auto", "UTC", ())


def test_config_problems_are_reported_with_paths() -> None:
    yaml = """
sources:
  nas:
    kind: zfs
    datasets:
      include: ["tank(("]
      exlude: []
    json: maybe
    timezone: Mars/Olympus
"""
    with pytest.raises(ConfigError) as err:
        parse_config(yaml, kinds=KINDS)
    text = "\n".join(err.value.problems)
    assert "sources.nas.datasets.include: invalid regular expression" in text
    assert "sources.nas.datasets.exlude: unknown key" in text
    assert "sources.nas.json: must be auto, true or false" in text
    assert "sources.nas.timezone: unknown time zone" in text
