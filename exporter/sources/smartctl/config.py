"""The ``kind: smartctl`` configuration keys and job evidence selector."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, WithJsonSchema
from pydantic.dataclasses import dataclass

from exporter.core.config import EvidenceSelector, KindSpec, SourceConfig
from exporter.core.fields import (
    STRICT,
    Duration,
    Loc,
    StrList,
    Text,
    one_of,
    problem,
    raise_problems,
)

NOCHECK_MODES = ("standby", "sleep", "idle", "never")
_DEVICE_TYPE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789,+_-")


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    """A device to read: its name and optional smartctl ``-d`` type (``sat``, ``nvme``...)."""

    name: str
    type: str = ""


def _devices(raw: Any) -> Any:
    """Read ``devices:``: device names or ``{name, type}`` mappings."""
    if isinstance(raw, tuple):
        return raw
    if not isinstance(raw, list):
        raise problem("must be a list of device names or {name, type} mappings")
    out: list[DeviceSpec] = []
    found: list[tuple[Loc, str]] = []
    for i, item in enumerate(raw):
        if isinstance(item, DeviceSpec):
            out.append(item)
        elif isinstance(item, str) and item.strip():
            out.append(DeviceSpec(item.strip()))
        elif isinstance(item, dict):
            name, dtype = item.get("name"), item.get("type", "")
            unknown = set(item) - {"name", "type"}
            if unknown:
                found.append(((i,), f"unknown key {sorted(map(str, unknown))[0]}"))
            if not isinstance(name, str) or not name.strip():
                found.append(((i,), "name: missing"))
                continue
            if not isinstance(dtype, str) or not set(dtype) <= _DEVICE_TYPE_CHARS:
                found.append(((i,), f"type: not a smartctl -d type: {dtype!r}"))
                continue
            out.append(DeviceSpec(name.strip(), dtype))
        else:
            found.append(((i,), "must be a device name or a {name, type} mapping"))
    raise_problems("devices", found)
    return tuple(out)


_DEVICES_SCHEMA = {
    "type": "array",
    "items": {
        "anyOf": [
            {"type": "string"},
            {
                "type": "object",
                "properties": {"name": {"type": "string"}, "type": {"type": "string"}},
                "required": ["name"],
                "additionalProperties": False,
            },
        ]
    },
}


@dataclass(frozen=True, kw_only=True, config=STRICT)
class SmartctlConfig(SourceConfig):
    """The ``kind: smartctl`` keys."""

    kind: Literal["smartctl"] = "smartctl"
    interval: Duration = 1800.0
    timeout: Duration = 60.0
    devices: Annotated[
        tuple[DeviceSpec, ...], BeforeValidator(_devices), WithJsonSchema(_DEVICES_SCHEMA)
    ] = ()
    command_prefix: StrList = ()
    nocheck: one_of(*NOCHECK_MODES) = "standby"  # type: ignore[valid-type]
    device_timeout: Duration = 20.0


@dataclass(frozen=True, kw_only=True, config=STRICT)
class SmartctlEvidence(EvidenceSelector):
    """``{source, test[, device, type, disk]}``: the oldest of each disk's newest passed self-test.

    ``disk`` is a serial number (else WWN), as in the ``disk`` label; ``type`` a ``-d`` type.
    """

    test: Text
    device: Text = ""
    type: Text = ""
    disk: Text = ""


SPEC = KindSpec(
    config=SmartctlConfig,
    evidence=SmartctlEvidence,
    source="exporter.sources.smartctl.source:SmartctlSource",
)
