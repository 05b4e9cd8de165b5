"""``kind: smartctl``: disk health and self-test results from ``smartctl --json``.

Per poll, one ``smartctl --json -i -H -c -A -l selftest [--nocheck=standby] [-d TYPE] DEV``
per device, one after the other (``-c`` adds the current self-test state; the other
options are those of ``-a`` minus the error logs). The devices come from the config or,
when none are listed, from ``smartctl --scan --json``. Commands run locally or through
``command_prefix`` (``ssh``).

smartctl's exit status is a bitmask and valid JSON comes with non-zero statuses: the
JSON is always parsed and each bit is exported. A disk that cannot be read (open
failure, timeout, garbage output) gets ``backup_smart_device_error_info{reason}`` and
does not fail the source; only when *every* disk fails does the poll fail.

With ``nocheck: standby`` (default) a sleeping disk is not woken up: smartctl exits
with status 2 and "Device is in STANDBY mode". That disk keeps the values of its
previous successful read, flagged by ``backup_smart_standby 1``.

A self-test's time is estimated from power-on hours the first time its log entry is seen
and then kept in the source's memory, across polls and restarts
(:mod:`exporter.storage.selftest_pins`).

Sample exposition::

    # HELP backup_smart_healthy 1 when the SMART overall-health self-assessment passed.
    # TYPE backup_smart_healthy gauge
    backup_smart_healthy{device="/dev/sda",disk="9RJ1XXXA",source="nas",type=""} 1.0
    backup_smart_healthy{device="/dev/bus/0",disk="ZL2A03",source="nas",type="megaraid,3"} 1.0
    # HELP backup_smart_device_error_info The disk could not be read at the last poll.
    # TYPE backup_smart_device_error_info gauge
    backup_smart_device_error_info{device="/dev/sdz",disk="",reason="open_failed",source="nas",\
type=""} 1.0
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from prometheus_client.core import Metric

from exporter.core.command import run_command
from exporter.schedule.jobs import Evidence
from exporter.sources.base import FetchContext, FetchError, Reason, Source
from exporter.sources.smartctl import KIND
from exporter.sources.smartctl.config import _DEVICE_TYPE_CHARS, DeviceSpec, SmartctlConfig
from exporter.sources.smartctl.config import SPEC as SPEC  # noqa: PLC0414 - re-export
from exporter.storage.evidence import selftest_evidence
from exporter.storage.models import SELFTEST_KINDS, SmartDevice
from exporter.storage.render import render_smart
from exporter.storage.selftest_pins import SelfTestPins, smartctl_identity
from exporter.storage.smartctl import parse_smartctl_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmartSnapshot:
    """One poll: every device, read now or (standby) carried over from an earlier poll."""

    devices: tuple[SmartDevice, ...]


def parse_scan(doc: Mapping[str, object]) -> tuple[DeviceSpec, ...]:
    """Parse ``smartctl --scan --json``: ``devices[].name`` and ``.type`` (key may be absent)."""
    devices = doc.get("devices")
    out: list[DeviceSpec] = []
    for raw in devices if isinstance(devices, list) else []:
        if not isinstance(raw, dict):
            continue
        name, dtype = raw.get("name"), raw.get("type")
        if isinstance(name, str) and name:
            ok_type = isinstance(dtype, str) and set(dtype) <= _DEVICE_TYPE_CHARS
            out.append(DeviceSpec(name, dtype if ok_type and isinstance(dtype, str) else ""))
    return tuple(out)


def _load(text: str) -> dict[str, object] | None:
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class SmartctlSource(Source[SmartctlConfig, SmartSnapshot]):
    """Reads each disk with ``smartctl --json``; renders with :mod:`exporter.storage.render`.

    Sample exposition::

        # HELP backup_smart_selftest_last_passed 1 when the newest self-test of this kind passed.
        # TYPE backup_smart_selftest_last_passed gauge
        backup_smart_selftest_last_passed{device="/dev/sda",disk="9RJ1XXXA",source="nas",\
test="long",type=""} 1.0
    """

    kind = KIND

    def __init__(self, config: SmartctlConfig) -> None:
        super().__init__(config)
        # Last good read per (path, -d type), reused while a disk sleeps (polls never
        # overlap). The type is part of the key: the disks behind one MegaRAID node share
        # the path /dev/bus/N. A sleeping disk's answer names no disk (smartctl checks the
        # power mode before reading IDENTIFY: smartmontools src/ataprint.cpp ataPrintMain),
        # so the slot is the only key; the read it maps to carries the disk's identity.
        self._last: dict[tuple[str, str], SmartDevice] = {}

    def device_argv(self, dev: DeviceSpec) -> list[str]:
        """Build the smartctl command line for one device."""
        argv = ["smartctl", "--json", "-i", "-H", "-c", "-A", "-l", "selftest"]
        if self.config.nocheck != "never":
            argv.append(f"--nocheck={self.config.nocheck}")
        if dev.type:
            argv += ["-d", dev.type]
        # "--" ends the options: a device name can never be taken for one.
        return [*argv, "--", dev.name]

    async def _scan(self, ctx: FetchContext) -> tuple[DeviceSpec, ...]:
        ctx.count_request()
        result = await run_command(
            ["smartctl", "--scan", "--json"],
            timeout=self.config.device_timeout,
            prefix=self.config.command_prefix,
            ok_codes=None,
        )
        doc = _load(result.stdout)
        if doc is None:
            raise FetchError(
                "parse", f"smartctl --scan --json printed no JSON (exit {result.returncode})"
            )
        return parse_scan(doc)

    async def _read(
        self, ctx: FetchContext, dev: DeviceSpec, now: float, pins: SelfTestPins
    ) -> SmartDevice:
        ctx.count_request()
        try:
            result = await run_command(
                self.device_argv(dev),
                timeout=self.config.device_timeout,
                prefix=self.config.command_prefix,
                ok_codes=None,
            )
        except FetchError as exc:
            if exc.reason != "timeout":
                raise  # missing smartctl / ssh failure: every device would fail alike
            return SmartDevice(
                device=dev.name,
                device_type=dev.type,
                disk=self._known_disk(dev),
                error=exc.message,
                error_reason="timeout",
            )
        doc = _load(result.stdout)
        if doc is None:
            detail = " ".join(result.stderr.split())[:200] or "no output"
            return SmartDevice(
                device=dev.name,
                device_type=dev.type,
                disk=self._known_disk(dev),
                error=f"smartctl printed no JSON (exit {result.returncode}): {detail}",
                error_reason="parse",
                exit_status=result.returncode,
            )
        plain = smartctl_identity(doc, dev.name, dev.type)
        identity = pins.claim(plain, f"{plain}@{dev.name},{dev.type}")
        disk = pins.disk(identity)
        parsed = parse_smartctl_json(doc, now=now, device=dev.name, device_type=dev.type, pins=disk)
        if parsed.error is not None and not parsed.disk:
            parsed = replace(parsed, disk=self._known_disk(dev))
        if parsed.standby:
            previous = self._last.get((dev.name, dev.type))
            if previous is not None:
                # Keep the last real read whole, its exit bits too: "open failed" (bit 1)
                # is how smartctl reports the sleep, not a problem of the disk.
                return replace(previous, standby=True)
            return replace(parsed, exit_status=None)
        if parsed.error is None:
            self._last[(dev.name, dev.type)] = parsed
            pins.commit(identity, disk)
        return parsed

    def _known_disk(self, dev: DeviceSpec) -> str:
        """Return the identity last read in this slot (an unreadable disk keeps its label)."""
        previous = self._last.get((dev.name, dev.type))
        return "" if previous is None else previous.disk

    async def fetch(self, ctx: FetchContext) -> SmartSnapshot:
        """Read every configured (or scanned) device, one after the other."""
        specs = self.config.devices or await self._scan(ctx)
        if not specs:
            raise FetchError("config", "smartctl --scan found no devices; list them under devices:")
        pins = SelfTestPins(ctx.memory, ctx.clock.time())
        devices: list[SmartDevice] = []
        for spec in specs:
            devices.append(await self._read(ctx, spec, ctx.clock.time(), pins))
        pins.forget_stale()
        failed = [d for d in devices if d.error is not None]
        for dev in failed:
            log.debug("source=%s device=%s unreadable: %s", self.name, dev.device, dev.error)
        if len(failed) == len(devices):
            first = failed[0]
            raise FetchError(
                _fetch_reason(first),
                f"all {len(devices)} devices failed; {first.device}: {first.error}",
            )
        return SmartSnapshot(devices=tuple(devices))

    def render(self, snapshot: SmartSnapshot) -> Iterator[Metric]:
        """Render every device."""
        yield from render_smart(self.name, snapshot.devices)

    def evidence(self, snapshot: SmartSnapshot, selector: Mapping[str, str]) -> Evidence | None:
        """``{test: long[, device, type, disk]}`` → the oldest of each disk's newest passed test.

        ``disk`` is the serial number (else WWN) the ``disk`` label shows; ``device`` and
        ``type`` name a path and ``-d`` type (one slot behind a MegaRAID controller).
        """
        test = selector.get("test", "")
        if test not in SELFTEST_KINDS:
            return None
        return selftest_evidence(
            snapshot.devices,
            test,
            selector.get("device"),
            disk=selector.get("disk"),
            device_type=selector.get("type"),
        )


def _fetch_reason(dev: SmartDevice) -> Reason:
    if dev.error_reason == "timeout":
        return "timeout"
    if dev.error_reason in ("parse", "no_data"):
        return "parse"
    text = (dev.error or "").lower()
    if "permission denied" in text or "operation not permitted" in text:
        return "permission"
    return "config"
