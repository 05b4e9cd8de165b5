"""The fake PVE API's shapes and quirks, read with a plain aiohttp client over TLS."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from exporter.core.clock import FakeClock
from exporter.sim.pve import FakeGuest, FakeJob, FakePVE, PVEScenario, homelab, start_fake_pve
from exporter.vzdump import parse_volid

BERLIN = ZoneInfo("Europe/Berlin")
# 2026-05-28 20:26:40 UTC = 22:26:40 in Berlin: today's 21:00 run is done.
START = 1_780_000_000.0
GIB = 2**30


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakePVE]:
    server = await start_fake_pve(homelab(clock.time))
    yield server
    await server.stop()


class Client:
    def __init__(self, fake: FakePVE, session: aiohttp.ClientSession) -> None:
        self.fake = fake
        self.session = session
        self.ssl = fake.cert.client_context()
        self.auth = f"PVEAPIToken={fake.token_id}={fake.token_secret}"

    async def raw(self, path: str, *, auth: str | None = None, **params: Any) -> tuple[int, Any]:
        headers = {"Authorization": self.auth if auth is None else auth}
        url = f"{self.fake.url}/api2/json/{path}"
        async with self.session.get(url, headers=headers, params=params, ssl=self.ssl) as resp:
            return resp.status, json.loads(await resp.text())

    async def data(self, path: str, **params: Any) -> Any:
        status, body = await self.raw(path, **params)
        assert status == 200, body
        return body["data"]


@pytest.fixture
async def client(fake: FakePVE) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        yield Client(fake, session)


def last_21h_before(ts: float) -> datetime:
    local = datetime.fromtimestamp(ts, BERLIN)
    day = local.date() if local.hour >= 21 else local.date() - timedelta(days=1)
    return datetime(day.year, day.month, day.day, 21, 0, tzinfo=BERLIN)


async def test_token_is_checked_exactly(client: Client, fake: FakePVE) -> None:
    assert client.auth == "PVEAPIToken=monitor@pve!exporter=" + fake.token_secret
    assert (await client.raw("nodes", auth=""))[0] == 401
    assert (await client.raw("nodes", auth=client.auth + "x"))[0] == 401
    # PBS separates the secret with ':'; PVE does not accept that spelling.
    pbs_style = f"PVEAPIToken={fake.token_id}:{fake.token_secret}"
    assert (await client.raw("nodes", auth=pbs_style))[0] == 401
    status, body = await client.raw("nodes")
    assert status == 200
    assert set(body) == {"data"}
    assert body["data"][0]["node"] == "pve1"
    assert body["data"][0]["status"] == "online"


async def test_guests_jobs_and_storages_use_pve_types(client: Client) -> None:
    guests = await client.data("cluster/resources", type="vm")
    assert [(g["vmid"], g["name"], g["type"]) for g in guests] == [
        (100, "infra100", "qemu"),
        (101, "dns101", "lxc"),
    ]
    assert all(g["template"] == 0 and g["template"] is not False for g in guests)
    (job,) = await client.data("cluster/backup")
    assert job["id"] == "backup-infra-daily"
    assert job["schedule"] == "21:00"
    assert job["enabled"] == 1
    assert job["enabled"] is not True  # Perl booleans are JSON integers
    assert job["vmid"] == "100"
    assert job["prune-backups"] == {"keep-last": "14"}  # a string, as PVE returns it
    assert job["next-run"] == last_21h_before(START).timestamp() + 86400
    storages = {s["storage"]: s for s in await client.data("nodes/pve1/storage")}
    nas = storages["truenas-backups"]
    assert (nas["type"], nas["content"], nas["shared"], nas["active"]) == ("nfs", "backup", 1, 1)
    assert nas["total"] == 161061273600 == 150 * GIB
    assert nas["avail"] == nas["total"] - nas["used"]
    assert storages["local"]["shared"] == 0
    config = {s["storage"]: s for s in await client.data("storage")}
    assert "prune-backups" not in config["truenas-backups"]
    assert config["local"]["prune-backups"] == "keep-all=1"  # property string in the config
    (missing,) = await client.data("cluster/backup-info/not-backed-up")
    assert missing == {"vmid": 101, "type": "lxc", "name": "dns101"}


async def test_backup_listing_shapes(client: Client) -> None:
    items = await client.data("nodes/pve1/storage/truenas-backups/content", content="backup")
    assert len(items) == 14
    volids = [i["volid"] for i in items]
    assert volids == sorted(volids, key=str.lower)
    newest_expected = last_21h_before(START)
    for item in items:
        assert item["volid"].startswith("truenas-backups:backup/vzdump-qemu-100-")
        assert item["volid"].endswith(".vma.zst")
        assert (item["content"], item["format"], item["subtype"]) == ("backup", "vma.zst", "qemu")
        assert item["vmid"] == 100
        assert 10_000_000_000 <= item["size"] <= 30_000_000_000
        # The API's ctime is the name's node-local time stamp.
        name = parse_volid(item["volid"], BERLIN)
        assert name is not None
        assert name.ctime == item["ctime"]
        local = datetime.fromtimestamp(item["ctime"], BERLIN)
        assert (local.hour, local.minute) == (21, 0)
    ctimes = sorted(i["ctime"] for i in items)
    assert ctimes[-1] - newest_expected.timestamp() < 60
    days = {datetime.fromtimestamp(t, BERLIN).date() for t in ctimes}
    assert len(days) == 14
    assert max(days) - min(days) == timedelta(days=13)
    # 14 archives fit in 150 GiB today, 14 times the newest does not.
    sizes = [i["size"] for i in sorted(items, key=lambda i: i["ctime"])]
    assert sum(sizes) < 150 * GIB < 14 * sizes[-1]


async def test_tasks_shapes(client: Client) -> None:
    status, body = await client.raw(
        "nodes/pve1/tasks", typefilter="vzdump", limit="5", source="all"
    )
    assert status == 200
    assert body["total"] == 14  # beside data, counting all matches
    tasks = body["data"]
    assert len(tasks) == 5
    starts = [t["starttime"] for t in tasks]
    assert starts == sorted(starts, reverse=True)
    newest = tasks[0]
    assert newest["starttime"] == last_21h_before(START).timestamp()
    assert newest["status"] == "OK"
    assert newest["id"] == "100"
    assert newest["type"] == "vzdump"
    assert newest["endtime"] > newest["starttime"]
    assert newest["upid"].startswith("UPID:pve1:")
    assert f":{newest['starttime']:08X}:vzdump:100:root@pam:" in newest["upid"]


async def test_without_privileges_backups_vanish_silently(client: Client, fake: FakePVE) -> None:
    fake.scenario.privileged = False
    status, body = await client.raw("nodes/pve1/storage/truenas-backups/content", content="backup")
    assert (status, body) == (200, {"data": []})
    tasks = await client.data("nodes/pve1/tasks", typefilter="vzdump")
    assert tasks[0]["status"] == "OK"


async def test_days_pass_break_and_repair(client: Client, clock: FakeClock, fake: FakePVE) -> None:
    path = "nodes/pve1/storage/truenas-backups/content"
    before = await client.data(path)
    clock.advance(86400)
    after = await client.data(path)
    assert len(after) == 14  # keep-last 14 pruned the oldest
    assert {i["volid"] for i in after} - {i["volid"] for i in before} != set()
    assert min(i["ctime"] for i in after) > min(i["ctime"] for i in before)

    fake.scenario.break_backups()
    clock.advance(86400)
    assert await client.data(path) == after
    failed = (await client.data("nodes/pve1/tasks"))[0]
    assert failed["status"] == "job errors"
    assert failed["starttime"] == last_21h_before(clock.time()).timestamp()

    fake.scenario.repair()
    fake.scenario.run_backup("backup-infra-daily")
    latest = max((await client.data(path)), key=lambda i: i["ctime"])
    assert clock.time() - 600 < latest["ctime"] < clock.time()
    manual = (await client.data("nodes/pve1/tasks"))[0]
    assert manual["status"] == "OK"
    assert manual["endtime"] == int(clock.time())


async def test_running_tasks_and_multi_guest_jobs(client: Client, clock: FakeClock) -> None:
    sc: PVEScenario = client.fake.scenario
    sc.guests.append(FakeGuest(102, "infra102"))
    sc.jobs.append(
        FakeJob("backup-all", schedule="03:00", storage="truenas-backups", all=True, exclude="101")
    )
    sc.start_backup("backup-all")
    running = await client.data("nodes/pve1/tasks", source="active")
    assert len(running) == 1
    assert running[0]["status"] == "RUNNING"
    assert "endtime" not in running[0]
    assert running[0]["id"] == ""  # two guests: PVE leaves the id empty
    archived = await client.data("nodes/pve1/tasks")  # default source=archive: finished only
    assert all(t["status"] != "RUNNING" for t in archived)
    clock.advance(900)
    sc.finish_backups()
    done = (await client.data("nodes/pve1/tasks"))[0]
    assert (done["id"], done["status"]) == ("", "OK")
    assert done["endtime"] == START + 900
    items = await client.data("nodes/pve1/storage/truenas-backups/content", vmid="102")
    assert [i["vmid"] for i in items] == [102]


async def test_failures_latency_and_malformed(client: Client, fake: FakePVE) -> None:
    fake.scenario.fail_status = 500
    assert (await client.raw("nodes"))[0] == 500
    fake.scenario.fail_status = None
    fake.scenario.malformed = True
    assert isinstance(await client.data("nodes"), dict)
    fake.scenario.malformed = False
    assert isinstance(await client.data("nodes"), list)


async def test_restart_keeps_port(client: Client, fake: FakePVE) -> None:
    port = fake.port
    await fake.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.raw("nodes")
    await fake.restart()
    assert fake.port == port
    assert (await client.raw("nodes"))[0] == 200


async def test_pbs_option(clock: FakeClock) -> None:
    server = await start_fake_pve(homelab(clock.time, pbs=True))
    try:
        async with aiohttp.ClientSession() as session:
            c = Client(server, session)
            items = await c.data("nodes/pve1/storage/pbs-offsite/content", content="backup")
    finally:
        await server.stop()
    assert len(items) == 7
    for item in items:
        assert item["volid"].startswith("pbs-offsite:backup/vm/100/")
        assert item["format"] == "pbs-vm"
        name = parse_volid(item["volid"])
        assert name is not None
        assert name.ctime == item["ctime"]
    states = [i["verification"]["state"] for i in sorted(items, key=lambda i: i["ctime"])]
    assert states == ["failed"] + ["ok"] * 6
