"""Endpoints of the fake PVE that only the peer tool (prometheus-pve-exporter) reads.

The exporter never calls them; ``bench/scrape_latency.py`` runs the peer against the same fake.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from exporter.sim.pve.handlers import SCENARIO, bit, listing, ok, request_node
from exporter.sim.pve.scenario import GIB, FakeGuest

CLUSTER_NAME = "homelab"
_DIGEST = "9f3c2a7d4e1b0c8a6f5e4d3c2b1a09f8e7d6c5b4"


async def _cluster_status(request: web.Request) -> web.Response:
    """``GET /cluster/status``: a ``cluster`` entry (only when clustered), then one per node.

    A standalone node (one node, no corosync) lists just itself with ``nodeid`` 0; the first
    node answers the request, so it is the ``local`` one.
    """
    sc = request.app[SCENARIO]
    items: list[dict[str, Any]] = []
    clustered = len(sc.nodes) > 1
    if clustered:
        online = [n for n in sc.nodes if n not in sc.offline_nodes]
        items.append(
            {
                "type": "cluster",
                "id": "cluster",
                "name": CLUSTER_NAME,
                "nodes": len(sc.nodes),
                "quorate": bit(2 * len(online) > len(sc.nodes)),
                "version": len(sc.nodes),
            }
        )
    for index, n in enumerate(sc.nodes):
        items.append(
            {
                "type": "node",
                "id": f"node/{n}",
                "name": n,
                "ip": f"192.0.2.{20 + index}",
                "level": "",
                "local": bit(index == 0),
                "nodeid": index + 1 if clustered else 0,
                "online": bit(n not in sc.offline_nodes),
            }
        )
    return listing(request, items)


async def _qdevice(request: web.Request) -> web.Response:
    """``GET /cluster/config/qdevice``: no QDevice configured answers an empty object."""
    return ok({})


def _node_guests(request: web.Request, guest_type: str) -> list[FakeGuest]:
    node = request_node(request)
    sc = request.app[SCENARIO]
    return [g for g in sc.guests if g.node == node and g.guest_type == guest_type]


async def _qemu_list(request: web.Request) -> web.Response:
    """``GET /nodes/{node}/qemu``: the node's VMs (templates included, flagged)."""
    items: list[dict[str, Any]] = []
    for g in _node_guests(request, "qemu"):
        item: dict[str, Any] = {
            "vmid": g.vmid,
            "name": g.name,
            "status": "stopped" if g.template else "running",
            "cpus": 2,
            "maxmem": 4 * GIB,
            "maxdisk": 32 * GIB,
        }
        if g.template:
            item["template"] = 1
        items.append(item)
    return listing(request, items)


async def _lxc_list(request: web.Request) -> web.Response:
    """``GET /nodes/{node}/lxc``: the node's containers; ``vmid`` is a string here.

    Some PVE versions serialise the container list's ``vmid`` as a JSON string (the VM list
    uses a number), so clients must accept both.
    """
    items: list[dict[str, Any]] = []
    for g in _node_guests(request, "lxc"):
        item: dict[str, Any] = {
            "vmid": str(g.vmid),
            "name": g.name,
            "type": "lxc",
            "status": "stopped" if g.template else "running",
            "cpus": 1,
            "maxmem": GIB // 2,
            "maxdisk": 8 * GIB,
        }
        if g.template:
            item["template"] = 1
        items.append(item)
    return listing(request, items)


def _node_guest(request: web.Request, guest_type: str) -> FakeGuest:
    vmid = request.match_info["vmid"]
    if not (vmid.isascii() and vmid.isdigit()):
        raise web.HTTPBadRequest(reason="Parameter verification failed.")
    for g in _node_guests(request, guest_type):
        if str(g.vmid) == vmid:
            return g
    folder = "qemu-server" if guest_type == "qemu" else "lxc"
    node = request.match_info["node"]
    raise web.HTTPInternalServerError(
        reason=f"Configuration file 'nodes/{node}/{folder}/{vmid}.conf' does not exist"
    )


async def _qemu_config(request: web.Request) -> web.Response:
    """``GET /nodes/{node}/qemu/{vmid}/config``: the VM's config; booleans as ``0``/``1``."""
    g = _node_guest(request, "qemu")
    config: dict[str, Any] = {
        "name": g.name,
        "onboot": bit(not g.template),
        "cores": 2,
        "memory": "4096",
        "ostype": "l26",
        "boot": "order=scsi0;net0",
        "scsi0": f"local-lvm:vm-{g.vmid}-disk-0,size=32G",
        "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
        "digest": _DIGEST,
    }
    if g.template:
        config["template"] = 1
    return ok(config)


async def _lxc_config(request: web.Request) -> web.Response:
    """``GET /nodes/{node}/lxc/{vmid}/config``: the container's config (``hostname``)."""
    g = _node_guest(request, "lxc")
    config: dict[str, Any] = {
        "hostname": g.name,
        "onboot": bit(not g.template),
        "cores": 1,
        "memory": 512,
        "swap": 512,
        "ostype": "debian",
        "arch": "amd64",
        "rootfs": f"local-lvm:vm-{g.vmid}-disk-0,size=8G",
        "net0": "name=eth0,bridge=vmbr0,ip=dhcp,type=veth",
        "digest": _DIGEST,
    }
    if g.template:
        config["template"] = 1
    return ok(config)


async def _replication(request: web.Request) -> web.Response:
    """``GET /nodes/{node}/replication``: no storage replication jobs in a homelab."""
    request_node(request)
    return listing(request, [])


async def _subscription(request: web.Request) -> web.Response:
    """``GET /nodes/{node}/subscription``: a node without a subscription key."""
    request_node(request)
    return ok(
        {
            "status": "notfound",
            "message": "There is no subscription key",
            "serverid": "0123456789ABCDEF0123456789ABCDEF",
            "url": "https://www.proxmox.com/en/proxmox-virtual-environment/pricing",
        }
    )


def add_peer_routes(app: web.Application, api: str) -> None:
    """Route the endpoints only the peer tool reads under ``api``."""
    app.router.add_get(f"{api}/cluster/status", _cluster_status)
    app.router.add_get(f"{api}/cluster/config/qdevice", _qdevice)
    app.router.add_get(f"{api}/nodes/{{node}}/qemu", _qemu_list)
    app.router.add_get(f"{api}/nodes/{{node}}/qemu/{{vmid}}/config", _qemu_config)
    app.router.add_get(f"{api}/nodes/{{node}}/lxc", _lxc_list)
    app.router.add_get(f"{api}/nodes/{{node}}/lxc/{{vmid}}/config", _lxc_config)
    app.router.add_get(f"{api}/nodes/{{node}}/replication", _replication)
    app.router.add_get(f"{api}/nodes/{{node}}/subscription", _subscription)
