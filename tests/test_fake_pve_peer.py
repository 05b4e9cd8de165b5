"""The fake PVE's endpoints for the peer tool (prometheus-pve-exporter), read with aiohttp.

The peer itself never runs here: these check the shapes its collectors index into
(``cluster/status`` entries by ``type``, the ``local`` node, ``onboot`` in guest configs, the
subscription ``status``), which ``bench/scrape_latency.py`` relies on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from exporter.core.clock import FakeClock
from exporter.sim.pve import FakeGuest, FakePVE, PVEScenario, homelab, start_fake_pve

START = 1_780_000_000.0


class Client:
    def __init__(self, fake: FakePVE, session: aiohttp.ClientSession) -> None:
        self.fake = fake
        self.session = session
        self.ssl = fake.cert.client_context()
        self.auth = f"PVEAPIToken={fake.token_id}={fake.token_secret}"

    async def raw(self, path: str, *, auth: str | None = None) -> tuple[int, str, Any]:
        headers = {"Authorization": self.auth if auth is None else auth}
        url = f"{self.fake.url}/api2/json/{path}"
        async with self.session.get(url, headers=headers, ssl=self.ssl) as resp:
            text = await resp.text()
            body = json.loads(text) if resp.content_type == "application/json" else text
            return resp.status, resp.reason or "", body

    async def data(self, path: str) -> Any:
        status, reason, body = await self.raw(path)
        assert status == 200, (status, reason, body)
        assert set(body) == {"data"}
        return body["data"]


async def _client(scenario: PVEScenario) -> AsyncIterator[Client]:
    fake = await start_fake_pve(scenario)
    try:
        async with aiohttp.ClientSession() as session:
            yield Client(fake, session)
    finally:
        await fake.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
async def client(clock: FakeClock) -> AsyncIterator[Client]:
    async for c in _client(homelab(clock.time)):
        yield c


@pytest.fixture
async def cluster(clock: FakeClock) -> AsyncIterator[Client]:
    """Three nodes, one offline, a VM on each online node and a container template on pve2."""
    scenario = homelab(clock.time)
    scenario.nodes = ["pve1", "pve2", "pve3"]
    scenario.offline_nodes = {"pve3"}
    scenario.guests += [
        FakeGuest(200, "web200", node="pve2"),
        FakeGuest(9000, "tpl-debian", node="pve2", guest_type="lxc", template=True),
        FakeGuest(300, "gone300", node="pve3"),
    ]
    async for c in _client(scenario):
        yield c


async def test_standalone_node_status_lists_only_itself_as_local(client: Client) -> None:
    entries = await client.data("cluster/status")
    # A single node without corosync has no "cluster" entry and corosync node id 0.
    assert [e["type"] for e in entries] == ["node"]
    node = entries[0]
    assert (node["id"], node["name"], node["online"], node["local"], node["nodeid"]) == (
        "node/pve1",
        "pve1",
        1,
        1,
        0,
    )
    assert isinstance(node["level"], str)
    assert isinstance(node["ip"], str)


async def test_clustered_status_has_a_cluster_entry_first_and_one_local_node(
    cluster: Client,
) -> None:
    entries = await cluster.data("cluster/status")
    head, *nodes = entries
    assert head["type"] == "cluster"
    assert (head["id"], head["nodes"]) == ("cluster", 3)
    assert isinstance(head["name"], str) and head["name"]
    assert head["quorate"] == 1  # 2 of 3 online is a majority
    assert {n["name"]: n["online"] for n in nodes} == {"pve1": 1, "pve2": 1, "pve3": 0}
    assert [n["name"] for n in nodes if n["local"]] == ["pve1"]
    assert sorted(n["nodeid"] for n in nodes) == [1, 2, 3]
    assert all(n["type"] == "node" and n["id"] == f"node/{n['name']}" for n in nodes)


async def test_quorum_is_lost_without_a_majority(clock: FakeClock) -> None:
    scenario = homelab(clock.time)
    scenario.nodes = ["pve1", "pve2"]
    scenario.offline_nodes = {"pve2"}
    async for c in _client(scenario):
        head = (await c.data("cluster/status"))[0]
        assert (head["type"], head["quorate"]) == ("cluster", 0)


async def test_no_qdevice_is_an_empty_object(client: Client) -> None:
    assert await client.data("cluster/config/qdevice") == {}


async def test_guest_lists_are_per_node_and_type(cluster: Client) -> None:
    assert [(g["vmid"], g["name"]) for g in await cluster.data("nodes/pve1/qemu")] == [
        (100, "infra100")
    ]
    assert [(g["vmid"], g["name"]) for g in await cluster.data("nodes/pve1/lxc")] == [
        ("101", "dns101")  # the container list's vmid is a string
    ]
    assert [g["vmid"] for g in await cluster.data("nodes/pve2/qemu")] == [200]
    (template,) = await cluster.data("nodes/pve2/lxc")
    assert (template["vmid"], template["template"], template["status"]) == ("9000", 1, "stopped")
    status, _, _ = await cluster.raw("nodes/pve3/qemu")
    assert status == 500  # an offline node does not answer
    status, _, _ = await cluster.raw("nodes/nope/lxc")
    assert status == 400


async def test_guest_configs(cluster: Client) -> None:
    vm = await cluster.data("nodes/pve1/qemu/100/config")
    assert (vm["name"], vm["onboot"]) == ("infra100", 1)
    ct = await cluster.data("nodes/pve1/lxc/101/config")
    assert (ct["hostname"], ct["onboot"]) == ("dns101", 1)
    assert "name" not in ct
    template = await cluster.data("nodes/pve2/lxc/9000/config")
    assert (template["onboot"], template["template"]) == (0, 1)
    assert all(isinstance(c["digest"], str) for c in (vm, ct, template))


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        # VM 100 lives on pve1, not pve2; 101 is a container, not a VM.
        ("nodes/pve2/qemu/100/config", 500, "Configuration file 'nodes/pve2/qemu-server/100.conf'"),
        ("nodes/pve1/qemu/101/config", 500, "qemu-server/101.conf' does not exist"),
        ("nodes/pve1/lxc/100/config", 500, "Configuration file 'nodes/pve1/lxc/100.conf'"),
        ("nodes/pve1/qemu/1x0/config", 400, "Parameter verification failed."),
        ("nodes/pve1/lxc/%0A/config", 400, "Parameter verification failed."),
    ],
)
async def test_missing_guest_config(cluster: Client, path: str, status: int, reason: str) -> None:
    got_status, got_reason, _ = await cluster.raw(path)
    assert got_status == status
    assert reason in got_reason


async def test_replication_and_subscription(client: Client) -> None:
    assert await client.data("nodes/pve1/replication") == []
    sub = await client.data("nodes/pve1/subscription")
    assert sub["status"] == "notfound"
    assert "level" not in sub  # only a node with a key has a level
    assert "nextduedate" not in sub
    assert {"message", "serverid", "url"} <= set(sub)


async def test_new_endpoints_check_the_token_record_requests_and_honour_knobs(
    client: Client,
) -> None:
    sc = client.fake.scenario
    before = len(sc.requests)
    status, _, _ = await client.raw("nodes/pve1/subscription", auth="PVEAPIToken=x@pve!y=z")
    assert status == 401
    await client.data("cluster/status")
    assert sc.requests[before:] == [
        "/api2/json/nodes/pve1/subscription",
        "/api2/json/cluster/status",
    ]
    sc.malformed = True
    assert isinstance(await client.data("nodes/pve1/qemu"), dict)
    sc.malformed = False
    sc.fail_status = 503
    status, _, _ = await client.raw("nodes/pve1/lxc")
    assert status == 503
