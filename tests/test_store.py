"""The durable state store: schema versions, errors with reasons, history, crash safety."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.core.store import (
    SCHEMA_VERSION,
    Run,
    StateError,
    StateStore,
    decode_families,
    encode_families,
)


def test_a_new_database_is_wal_and_at_the_current_schema(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    assert store.schema_version == SCHEMA_VERSION
    mode = sqlite3.connect(tmp_path / "state.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    store.close()
    # Opening again migrates nothing and keeps the data.
    again = StateStore(tmp_path / "state.db")
    assert again.schema_version == SCHEMA_VERSION
    again.close()


def test_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.execute("CREATE TABLE future (x)")
    db.close()
    with pytest.raises(StateError) as info:
        StateStore(path)
    assert info.value.reason == "newer_schema"
    assert f"newer than this exporter's {SCHEMA_VERSION}" in info.value.message
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_a_file_that_is_not_a_database_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(StateError) as info:
        StateStore(path)
    assert info.value.reason == "corrupt"
    assert "move it aside" in info.value.message


def test_a_damaged_page_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    store.add_runs((Run(job="j", result="ok", finished=float(i)) for i in range(2000)), 1.0)
    store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 3 * page
    data[2 * page : 3 * page] = b"\xff" * page  # an index or table page turned to garbage
    path.write_bytes(bytes(data))
    with pytest.raises(StateError) as info:
        StateStore(path)
    assert info.value.reason == "corrupt"


def test_a_locked_database_is_reported_as_locked(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore(path).close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        # WAL readers are never blocked, so opening works; the first write is refused.
        store = StateStore(path, busy_timeout=0.05)
        with pytest.raises(StateError) as info:
            store.add_runs([Run(job="j", result="ok", finished=1.0)], 2.0)
        assert info.value.reason == "locked"
        assert "another process" in info.value.message
        assert store.runs() == []
    finally:
        other.execute("ROLLBACK")


def _families() -> list[Metric]:
    gauge = GaugeMetricFamily("backup_x_timestamp_seconds", "A time.", labels=["source", "vmid"])
    gauge.add_metric(["pve1", "100"], 1.7e9)
    gauge.add_metric(["pve1", 'odd"name\\'], float("nan"))
    counter = CounterMetricFamily("backup_calls", "Calls.", labels=["source"])
    counter.add_metric(["pve1"], 42)
    return [gauge, counter]


def _exposition(families: list[Metric] | tuple[Metric, ...]) -> bytes:
    class Fixed:
        def collect(self) -> list[Metric]:
            return list(families)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())  # type: ignore[arg-type]
    return generate_latest(registry)


def test_rendered_families_round_trip_to_the_same_exposition(tmp_path: Path) -> None:
    families = _families()
    assert _exposition(decode_families(encode_families(families))) == _exposition(families)
    store = StateStore(tmp_path / "state.db")
    store.save_result("pve1", 100.0, families, [{"job": "daily", "vmid": "100"}])
    store.save_result("pve1", 200.0, families[:1], [])
    store.close()
    results = StateStore(tmp_path / "state.db").results()
    assert list(results) == ["pve1"]
    assert results["pve1"].taken_at == 200.0
    assert results["pve1"].jobs == []
    assert _exposition(results["pve1"].families) == _exposition(families[:1])


def test_first_seen_keeps_the_first_time(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    assert store.first_seen(["job:a", "job:b"], 10.0) == {"job:a": 10.0, "job:b": 10.0}
    assert store.first_seen(["job:a", "job:c"], 20.0) == {"job:a": 10.0, "job:c": 20.0}
    many = [f"guest:{i}" for i in range(1200)]  # more than one IN (...) chunk
    assert len(store.first_seen(many, 30.0)) == 1200


def test_runs_are_appended_once_and_read_in_order(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    a1 = Run(job="a", result="ok", scheduled_start=0.0, started=5.0, finished=50.0)
    a2 = Run(job="a", result="failed", scheduled_start=100.0, started=105.0, finished=110.0)
    b1 = Run(job="b", result="ok", finished=70.0)  # evidence without a start
    assert store.add_runs([a2, a1, b1], 200.0) == 3
    assert store.add_runs([a1, b1], 300.0) == 0  # seen again on the next poll: no duplicate
    assert store.runs() == [a1, b1, a2]
    assert store.runs("a", since=60.0) == [a2]
    assert store.runs(until=60.0) == [a1]


def test_memory_is_per_source(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.remember("nas", {"scrub:tank": [1.0, 2.0], "cloud:3": None})
    store.remember("nas", {"scrub:tank": [3.0, 4.0]})
    store.remember("other", {"scrub:tank": "x"})
    assert store.memory("nas") == {"scrub:tank": [3.0, 4.0], "cloud:3": None}
    assert store.memory("absent") == {}
    store.replace_memory("nas", {"scrub:tank": [5.0, 6.0]})
    assert store.memory("nas") == {"scrub:tank": [5.0, 6.0]}
    assert store.memory("other") == {"scrub:tank": "x"}


_WRITER = textwrap.dedent(
    """
    import sys
    from exporter.core.store import Run, StateStore

    store = StateStore(sys.argv[1])
    base = int(sys.argv[2])
    for i in range(base, base + 100_000):
        store.add_runs([Run(job=f"j{i % 7}", result="ok", started=float(i), finished=i + 0.5)], i)
        store.save_result("src", float(i), [], [{"i": i}])
        print(i, flush=True)  # printed only after both commits returned
    """
)


def test_kill_9_while_writing_never_corrupts_or_loses_a_committed_run(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    rng = random.Random(20261201)
    committed: set[int] = set()
    base = 0
    for _round in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(base)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        # Kill at a random moment: after a random number of committed writes.
        for _ in range(rng.randint(1, 60)):
            line = proc.stdout.readline()
            assert line, "the writer died on its own"
            committed.add(int(line))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        store = StateStore(path)
        assert store.integrity_check() == "ok"
        seen = {int(r.started) for r in store.runs() if r.started is not None}
        assert committed <= seen
        store.close()
        base += 100_000


def test_two_processes_creating_the_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    code = textwrap.dedent(
        """
        import sys
        from exporter.core.store import StateStore
        StateStore(sys.argv[1]).close()
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    errors = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    assert StateStore(path).schema_version == SCHEMA_VERSION
