"""Nothing can wedge the exporter: hung mounts, SIGTERM, and large TrueNAS snapshot lists.

The hung mount is simulated without root and without FUSE by a real blocking syscall: a
``sitecustomize`` module (put on ``PYTHONPATH`` by the test only) installs an audit hook
that, when ``os.scandir`` is called on the "hung" directory, ``open()``s a FIFO nobody
writes to. ``open(2)`` of such a FIFO blocks in the kernel until a writer appears, as a
``stat``/``getdents`` on a dead NFS server blocks; Python cannot interrupt it. Only a process
that does the walk itself is stuck by it, so the test also proves that the exporter never
walks a mount in its own process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from exporter.core.clock import FakeClock
from exporter.core.config import parse_config
from exporter.sim.truenas import FakeTrueNAS, TrueNASScenario, homelab, start_fake_truenas
from exporter.sources.base import FetchContext, FetchError
from exporter.sources.files.config import SPEC as FILES_SPEC
from exporter.sources.files.source import SCAN_SCRIPT, FilesConfig, scan
from exporter.sources.truenas import client as truenas_client
from exporter.sources.truenas.client import OFFLOAD_DECODE_BYTES, TrueNASClient
from exporter.sources.truenas.parse import fold_snapshots
from exporter.sources.truenas.source import SPEC as TRUENAS_SPEC
from exporter.sources.truenas.source import TrueNASSource, read_snapshots
from exporter.storage.models import DatasetInfo

HOOK = """
import os, sys
_dir, _fifo = os.environ.get("WEDGE_HANG_DIR"), os.environ.get("WEDGE_HANG_FIFO")
if _dir and _fifo:
    def _hang(event, args):
        if event == "os.scandir" and args and os.fspath(args[0]).rstrip("/") == _dir:
            open(_fifo).close()  # blocks in open(2): no writer ever comes
    sys.addaudithook(_hang)
"""


@pytest.fixture
def hung_mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory whose listing blocks forever in any process started from now on."""
    mount = tmp_path / "mnt" / "ha-backups"
    mount.mkdir(parents=True)
    (mount / "backup.tar").write_bytes(b"x")
    fifo = tmp_path / "hang.fifo"
    os.mkfifo(fifo)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(HOOK)
    monkeypatch.setenv("PYTHONPATH", str(hooks))
    monkeypatch.setenv("WEDGE_HANG_DIR", str(mount))
    monkeypatch.setenv("WEDGE_HANG_FIFO", str(fifo))
    yield mount
    # Release anything still blocked on the FIFO (nothing should be).
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    os.close(fd)


def scan_children(path: Path) -> list[int]:
    """Pids of live scan children walking ``path`` (from /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        ours = str(SCAN_SCRIPT).encode() in cmdline and str(path).encode() in cmdline
        if ours and state != "Z":
            pids.append(int(proc.name))
    return pids


def files_config(path: Path, **extra: Any) -> FilesConfig:
    lines = "".join(f"    {k}: {v}\n" for k, v in extra.items())
    text = f"sources:\n  f:\n    kind: files\n    path: {path}\n{lines}"
    cfg = parse_config(text, kinds={"files": FILES_SPEC}).sources["f"]
    assert isinstance(cfg, FilesConfig)
    return cfg


# ------------------------------------------------------------------------------ file scans


async def test_scan_child_aggregates_what_it_streams(tmp_path: Path) -> None:
    for i, (name, size) in enumerate(
        [
            ("vzdump-qemu-100-2026_03_01-02_00_00.vma.zst", 10),
            ("vzdump-qemu-100-2026_03_02-02_00_00.vma.zst", 30),
            ("vzdump-lxc-101-2026_03_02-02_10_00.tar.zst", 5),
            ("notes.txt", 1),
        ]
    ):
        (tmp_path / name).write_bytes(b"x" * size)
        os.utime(tmp_path / name, (1_700_000_000 + i, 1_700_000_000 + i))
    (tmp_path / "subdir").mkdir()  # matches the glob, is not a file
    snap = await scan(files_config(tmp_path, vzdump="true"))
    assert (snap.count, snap.total_bytes) == (4, 46)
    assert (snap.oldest, snap.newest) == (1_700_000_000, 1_700_000_003)
    by_vmid = {g.vmid: g for g in snap.guests}
    assert (by_vmid[100].count, by_vmid[100].total_bytes, by_vmid[100].newest_bytes) == (2, 40, 30)
    assert (by_vmid[101].count, by_vmid[101].total_bytes) == (1, 5)


async def test_scan_of_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError) as err:
        await scan(files_config(tmp_path / "gone"))
    assert err.value.reason == "config"
    assert "not a readable directory" in err.value.message


async def test_a_hung_mount_is_abandoned_at_the_timeout(hung_mount: Path) -> None:
    cfg = files_config(hung_mount)
    task = asyncio.create_task(scan(cfg))
    deadline = time.monotonic() + 20
    while not scan_children(hung_mount):  # the child started and is blocked in open(2)
        assert time.monotonic() < deadline, "the scan child never started"
        await asyncio.sleep(0.02)
    assert not task.done()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(task, 0.5)
    assert time.monotonic() - started < 3, "cancelling the scan must not wait for the mount"
    deadline = time.monotonic() + 5
    while scan_children(hung_mount):  # SIGKILLed, and reaped
        assert time.monotonic() < deadline, "the hung scan child was not killed"
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for_text(http: aiohttp.ClientSession, url: str, needle: str, limit: float) -> str:
    deadline = time.monotonic() + limit
    while True:
        try:
            async with http.get(url) as resp:
                text = await resp.text()
                if needle in text:
                    return text
        except aiohttp.ClientConnectionError:
            pass
        assert time.monotonic() < deadline, f"{needle!r} never appeared at {url}"
        await asyncio.sleep(0.05)


async def test_hung_mount_serve_times_out_keeps_answering_and_exits_on_sigterm(
    tmp_path: Path, hung_mount: Path
) -> None:
    """The issue's test: the poll times out, /metrics keeps answering, SIGTERM exits < 5 s."""
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        f"state_path: {tmp_path / 'state.db'}\n"
        "sources:\n"
        "  ha-backups:\n"
        "    kind: files\n"
        f"    path: {hung_mount}\n"
        "    interval: 1h\n"
        "    timeout: 1s\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "--config.file", str(config),
        "--web.listen-address", f"127.0.0.1:{port}",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            text = await wait_for_text(http, f"{base}/metrics", 'reason="timeout"', 30)
            assert 'backup_source_up{kind="files",source="ha-backups"} 0.0' in text
            for _ in range(10):  # it keeps answering, promptly, with the mount still hung
                started = time.monotonic()
                async with http.get(f"{base}/metrics") as resp:
                    assert resp.status == 200
                    await resp.read()
                assert time.monotonic() - started < 1.0
            async with http.get(f"{base}/-/healthy") as resp:
                assert resp.status == 200
        assert scan_children(hung_mount) == [], "the timed-out scan child was left running"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=10)
        elapsed = time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert elapsed < 5, f"SIGTERM took {elapsed:.1f}s"
    assert proc.returncode == 0, err.decode()
    assert "poll failed reason=timeout" in err.decode()


async def test_sigterm_during_a_hung_scan_exits_within_five_seconds(
    tmp_path: Path, hung_mount: Path
) -> None:
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        "sources:\n  ha-backups:\n    kind: files\n"
        f"    path: {hung_mount}\n    interval: 2h\n    timeout: 1h\n"  # still scanning at SIGTERM
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "--config.file", str(config),
        "--web.listen-address", f"127.0.0.1:{port}",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not scan_children(hung_mount):
            assert proc.returncode is None, "the exporter exited"
            assert time.monotonic() < deadline, "the scan never started"
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as http:
            await wait_for_text(http, f"http://127.0.0.1:{port}/metrics", "backup_source_up", 10)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=10)
        elapsed = time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert elapsed < 5, f"SIGTERM took {elapsed:.1f}s"
    assert proc.returncode == 0, err.decode()
    deadline = time.monotonic() + 5
    while scan_children(hung_mount):
        assert time.monotonic() < deadline, "the scan child outlived the exporter"
        await asyncio.sleep(0.05)


def test_a_stuck_worker_thread_cannot_hold_the_exit(tmp_path: Path) -> None:
    """A thread blocked for good (an SDK on a dead socket) is what the watchdog ends."""
    script = tmp_path / "stuck.py"
    script.write_text(
        "import asyncio, sys, threading\n"
        "from exporter.core import cli\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "ex = ThreadPoolExecutor(1)\n"
        "ex.submit(threading.Event().wait)  # never returns: joined at exit forever\n"
        "cli.setup_logging('info', 'logfmt')\n"
        "cfg = cli.load_config(sys.argv[1])\n"
        "asyncio.run(cli._serve(cfg, sys.argv[2]))\n"
    )
    config = tmp_path / "config.yml"
    config.write_text(f"sources:\n  f:\n    kind: files\n    path: {tmp_path}\n")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(config), f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "never listened"
            time.sleep(0.05)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert elapsed < 5, f"SIGTERM took {elapsed:.1f}s"
    assert proc.returncode == 1  # forced: the stuck thread was not joined
    assert "exiting now" in err.decode()


def test_a_second_sigterm_exits_at_once(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    # The state store's close is made slow (a thread that would take 60 s): the first
    # SIGTERM starts a shutdown that cannot finish quickly, the second one ends it.
    script.write_text(
        "import asyncio, sys, time\n"
        "from exporter.core import cli, state\n"
        "async def slow_close(self):\n"
        "    await asyncio.sleep(60)\n"
        "state.StateKeeper.close = slow_close\n"
        "cli.SHUTDOWN_GRACE = 60.0\n"
        "cli.setup_logging('info', 'logfmt')\n"
        "cfg = cli.load_config(sys.argv[1])\n"
        "asyncio.run(cli._serve(cfg, sys.argv[2]))\n"
    )
    config = tmp_path / "config.yml"
    config.write_text(f"sources:\n  f:\n    kind: files\n    path: {tmp_path}\n")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(config), f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not any("listening on" in line for line in lines):
            assert time.monotonic() < deadline, "never listened"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        while not any("shutting down" in line for line in lines):
            assert time.monotonic() < deadline, "the first SIGTERM was not handled"
            time.sleep(0.02)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    proc.stderr.close()
    assert elapsed < 1.0, f"the second SIGTERM took {elapsed:.1f}s"
    assert proc.returncode == 1
    assert any("second SIGTERM" in line for line in lines)


# ------------------------------------------------------------------- TrueNAS snapshot paging


@pytest.fixture(params=["24.10", "25.04", "25.10"])
async def many_snapshots(request: pytest.FixtureRequest) -> AsyncIterator[FakeTrueNAS]:
    clock = FakeClock(start=1_773_000_000.0)
    scenario: TrueNASScenario = homelab(clock.time, release=str(request.param))
    # 3 datasets x 31 snapshots, created out of name order: 93 = 13 full pages of 7 + 2.
    scenario.snapshots.clear()
    for i, ds in enumerate(scenario.datasets[:3]):
        scenario.snapshots[ds.name] = [
            1_772_000_000.0 + 3600 * ((k * 7 + i) % 31) for k in range(31)
        ]
    server = await start_fake_truenas(scenario)
    yield server
    await server.stop()


def truenas_source(fake: FakeTrueNAS) -> TrueNASSource:
    text = (
        "timezone: UTC\nsources:\n  nas:\n    kind: truenas\n"
        f"    url: {fake.url}\n    username: {fake.username}\n"
        f'    api_key: "{fake.api_key}"\n    ca_file: {fake.ca_file}\n'
    )
    source = TRUENAS_SPEC.build(parse_config(text, kinds={"truenas": TRUENAS_SPEC}).sources["nas"])
    assert isinstance(source, TrueNASSource)
    return source


async def _paged_and_whole(fake: FakeTrueNAS, page: int) -> tuple[Any, Any, list[Any]]:
    source = truenas_source(fake)
    scenario = fake.scenario
    method = "zfs.snapshot.query" if scenario.series != "25.10" else "pool.snapshot.query"
    datasets = [DatasetInfo(name=d.name, used=0, available=0) for d in scenario.datasets]
    url = truenas_client.api_url(source.config.url)
    client = await source._open(url, FetchContext(clock=FakeClock()))
    try:
        await client.login_api_key(fake.api_key, username=fake.username)
        before = len(scenario.frames)
        paged = await read_snapshots(client, method, datasets, page=page)
        frames = scenario.frames[before:]
        # The whole list as one answer would decode (ejson dates and all), folded at once.
        entries = json.loads(
            json.dumps(scenario.snapshot_entries(["creation"])),
            object_hook=truenas_client.decode_ejson,
        )
        whole = fold_snapshots(entries, datasets)
    finally:
        await client.close()
    return paged, whole, frames


async def test_snapshots_are_read_in_pages_and_folded_like_the_whole_list(
    many_snapshots: FakeTrueNAS,
) -> None:
    paged, whole, frames = await _paged_and_whole(many_snapshots, page=7)
    assert paged == whole
    assert sum(d.snapshots for d in paged) == 93
    assert len(frames) == 14  # 13 full pages and the short last one
    if many_snapshots.scenario.series == "24.10":  # REST: limit/offset as query parameters
        offsets = [int(f["query"].get("offset", 0)) for f in frames]
        assert all(f["query"]["limit"] == "7" for f in frames)
    else:
        options = [f["params"][1] for f in frames]
        offsets = [o["offset"] for o in options]
        assert all(o["limit"] == 7 and o["order_by"] == ["name"] for o in options)
    assert offsets == list(range(0, 93, 7))


async def test_an_exact_multiple_of_the_page_ends_on_an_empty_page(
    many_snapshots: FakeTrueNAS,
) -> None:
    paged, whole, frames = await _paged_and_whole(many_snapshots, page=31)
    assert paged == whole
    assert len(frames) == 4  # 3 full pages, then an empty one


async def test_a_server_ignoring_limit_is_read_in_one_page(many_snapshots: FakeTrueNAS) -> None:
    scenario = many_snapshots.scenario
    method = "zfs.snapshot.query" if scenario.series != "25.10" else "pool.snapshot.query"
    scenario.results[method] = scenario.snapshot_entries(["creation"])  # no paging at all
    paged, whole, frames = await _paged_and_whole(many_snapshots, page=7)
    assert paged == whole
    assert len(frames) == 1


async def test_large_answers_are_decoded_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop_thread = threading.get_ident()
    decoded_in: set[int] = set()
    original = truenas_client.decode_ejson

    def spy(obj: dict[str, Any]) -> Any:
        decoded_in.add(threading.get_ident())
        return original(obj)

    monkeypatch.setattr(truenas_client, "decode_ejson", spy)
    small = '{"id": 1, "result": []}'
    assert await truenas_client._loads(small) == {"id": 1, "result": []}
    assert decoded_in == {loop_thread}
    decoded_in.clear()
    big = '{"id": 1, "result": [' + ",".join(['{"name": "p/d@s"}'] * 10_000) + "]}"
    assert len(big) > OFFLOAD_DECODE_BYTES
    answer = await truenas_client._loads(big)
    assert len(answer["result"]) == 10_000
    assert decoded_in and loop_thread not in decoded_in
    assert TrueNASClient  # the client decodes every frame through _loads
