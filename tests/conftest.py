"""Shared test helpers: a controllable in-memory source kind and the shared fixtures path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic.dataclasses import dataclass as config_dataclass

from exporter.core.config import KindSpec, SourceConfig
from exporter.core.fields import STRICT, Duration, Number
from exporter.sources.base import FetchContext, FetchError, Source

SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@config_dataclass(frozen=True, kw_only=True, config=STRICT)
class MemoryConfig(SourceConfig):
    kind: Literal["memory"] = "memory"
    interval: Duration = 60.0
    timeout: Duration = 5.0
    value: Number = 1.0


@dataclass(frozen=True)
class MemorySnapshot:
    value: float


class MemorySource(Source[MemoryConfig, MemorySnapshot]):
    """A source whose next fetch result the test controls.

    Sample exposition::

        # HELP backup_test_value A value.
        # TYPE backup_test_value gauge
        backup_test_value{source="mem"} 1.0
    """

    kind = "memory"

    def __init__(self, config: MemoryConfig) -> None:
        super().__init__(config)
        self.value = config.value
        self.error: FetchError | None = None
        self.crash: Exception | None = None
        self.hang = asyncio.Event()
        self.hang.set()
        self.calls = 0
        self.active = 0
        self.max_active = 0

    async def fetch(self, ctx: FetchContext) -> MemorySnapshot:
        self.calls += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            ctx.count_request()
            await self.hang.wait()
            if self.crash is not None:
                raise self.crash
            if self.error is not None:
                raise self.error
            return MemorySnapshot(self.value)
        finally:
            self.active -= 1

    def render(self, snapshot: MemorySnapshot) -> Iterator[Metric]:
        fam = GaugeMetricFamily("backup_test_value", "A value.", labels=["source"])
        fam.add_metric([self.name], snapshot.value)
        yield fam


MEMORY_SPEC = KindSpec(config=MemoryConfig, factory=MemorySource)


def memory_source(
    name: str = "mem", *, value: float = 1.0, timeout: float = 5.0, jitter: float = 0.0
) -> MemorySource:
    cfg = MemoryConfig(
        name=name, kind="memory", interval=60.0, timeout=timeout, jitter=jitter, value=value
    )
    return MemorySource(cfg)


@pytest.fixture
def shared_fixtures() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"shared fixtures folder {SHARED_FIXTURES} is absent")
    return SHARED_FIXTURES
