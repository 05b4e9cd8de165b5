"""The ``kind: smartctl`` configuration keys."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.config import Section, SourceConfig, SourceConfigBase

NOCHECK_MODES = ("standby", "sleep", "idle", "never")
_DEVICE_TYPE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789,+_-")


@dataclass(frozen=True)
class DeviceSpec:
    """A device to read: its name and optional smartctl ``-d`` type (``sat``, ``nvme``...)."""

    name: str
    type: str = ""


@dataclass(frozen=True, kw_only=True)
class SmartctlConfig(SourceConfig):
    """The ``kind: smartctl`` keys."""

    devices: tuple[DeviceSpec, ...] = ()
    command_prefix: tuple[str, ...] = ()
    nocheck: str = "standby"
    device_timeout: float = 20.0


def _parse_devices(sec: Section) -> tuple[DeviceSpec, ...]:
    if not sec.has("devices"):
        return ()
    raw = sec.data["devices"]
    if not isinstance(raw, list):
        sec.problem("devices", "must be a list of device names or {name, type} mappings")
        return ()
    out: list[DeviceSpec] = []
    for i, item in enumerate(raw):
        where = f"devices[{i}]"
        if isinstance(item, str) and item.strip():
            out.append(DeviceSpec(item.strip()))
        elif isinstance(item, dict):
            name, dtype = item.get("name"), item.get("type", "")
            unknown = set(item) - {"name", "type"}
            if unknown:
                sec.problem(where, f"unknown key {sorted(map(str, unknown))[0]}")
            if not isinstance(name, str) or not name.strip():
                sec.problem(where, "name: missing")
                continue
            if not isinstance(dtype, str) or not set(dtype) <= _DEVICE_TYPE_CHARS:
                sec.problem(where, f"type: not a smartctl -d type: {dtype!r}")
                continue
            out.append(DeviceSpec(name.strip(), dtype))
        else:
            sec.problem(where, "must be a device name or a {name, type} mapping")
    return tuple(out)


def parse(sec: Section, base: SourceConfigBase) -> SmartctlConfig:
    """Read the ``kind: smartctl`` keys."""
    return SmartctlConfig(
        name=base.name,
        kind=base.kind,
        interval=base.interval,
        timeout=base.timeout,
        jitter=base.jitter,
        devices=_parse_devices(sec),
        command_prefix=sec.str_list("command_prefix"),
        nocheck=sec.choice("nocheck", NOCHECK_MODES, "standby"),
        device_timeout=sec.duration("device_timeout", 20.0),
    )
