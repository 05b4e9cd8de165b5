"""The durable state store: one SQLite database beside the pollers, never on the scrape path.

The store keeps what the exporter must not forget across a restart:

* per source, the last good result (the families ``render()`` produced and the jobs
  ``jobs()`` yielded, serialized) and when it was taken;
* first-seen times of jobs, guests and schedule expressions;
* an append-only, deduplicated run history per job;
* a small key-value memory per source that a kind may use (scrub history, SMART test
  anchoring, bucket listing results);
* the verification records (restore tests, DR drills, docs reviews): append-only, written
  by ``backup-exporter record`` and ``POST /api/records``.

Kinds stay unaware of storage: the poller persists what they produced, and hands a kind its
memory. Every write happens in one worker thread that owns the connection, so the event
loop never waits on the disk and a scrape never touches the database.

The schema version is SQLite's ``user_version``. It migrates forward on open; a database
written by a newer exporter is refused with a clear error instead of being damaged. A locked
or corrupt database raises :class:`StateError` with a machine-readable ``reason``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

StateReason = Literal["locked", "corrupt", "newer_schema", "io"]
STATE_REASONS: tuple[StateReason, ...] = get_args(StateReason)

# Each entry migrates the schema from version ``i`` to ``i + 1``; append, never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE source_result (
        source   TEXT PRIMARY KEY,
        taken_at REAL NOT NULL,
        families TEXT NOT NULL,
        jobs     TEXT NOT NULL
    );
    CREATE TABLE first_seen (
        entity TEXT PRIMARY KEY,
        at     REAL NOT NULL
    );
    CREATE TABLE run (
        job             TEXT NOT NULL,
        scheduled_start REAL,
        started         REAL,
        finished        REAL,
        result          TEXT NOT NULL,
        recorded_at     REAL NOT NULL
    );
    CREATE UNIQUE INDEX run_identity ON run (
        job, coalesce(started, -1), coalesce(finished, -1), result
    );
    CREATE INDEX run_by_job ON run (job, finished);
    CREATE TABLE memory (
        source TEXT NOT NULL,
        key    TEXT NOT NULL,
        value  TEXT NOT NULL,
        PRIMARY KEY (source, key)
    );
    """,
    # 2: verification records (restore tests, DR drills, docs reviews). Append-only: the
    # triggers refuse any UPDATE or DELETE, so no code path can edit or drop one.
    """
    CREATE TABLE record (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        activity    TEXT NOT NULL,
        asset       TEXT NOT NULL,
        result      TEXT NOT NULL,
        at          REAL NOT NULL,
        note        TEXT NOT NULL,
        depth       TEXT,
        origin      TEXT NOT NULL,
        recorded_at REAL NOT NULL
    );
    CREATE INDEX record_by_asset ON record (asset, activity, at);
    CREATE TRIGGER record_never_edited BEFORE UPDATE ON record
    BEGIN
        SELECT RAISE(ABORT, 'verification records are append-only');
    END;
    CREATE TRIGGER record_never_dropped BEFORE DELETE ON record
    BEGIN
        SELECT RAISE(ABORT, 'verification records are append-only');
    END;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StateError(Exception):
    """The state database cannot be used; ``reason`` says why, the message says what to do."""

    def __init__(self, reason: StateReason, message: str) -> None:
        self.reason: StateReason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


@dataclass(frozen=True)
class Run:
    """One run of a job as the exporter saw it (Unix seconds; result ``ok``/``failed``/…)."""

    job: str
    result: str
    scheduled_start: float | None = None
    started: float | None = None
    finished: float | None = None


@dataclass(frozen=True)
class StoredRecord:
    """One verification record as stored (validated by :mod:`exporter.assets.records`)."""

    id: int
    activity: str
    asset: str
    result: str
    at: float
    note: str
    depth: str | None
    origin: str
    recorded_at: float


@dataclass(frozen=True)
class SourceResult:
    """The last good result of a source: rendered families, discovered jobs and its time."""

    source: str
    taken_at: float
    families: tuple[Metric, ...]
    jobs: Any


def encode_families(families: Iterable[Metric]) -> str:
    """Serialize metric families (name, type, help, unit and samples) as JSON."""
    out = []
    for fam in families:
        out.append(
            {
                "name": fam.name,
                "type": fam.type,
                "help": fam.documentation,
                "unit": fam.unit,
                "samples": [[s.name, s.labels, s.value, s.timestamp] for s in fam.samples],
            }
        )
    return json.dumps(out, separators=(",", ":"), allow_nan=True)


def decode_families(text: str) -> tuple[Metric, ...]:
    """Rebuild the families :func:`encode_families` wrote."""
    families: list[Metric] = []
    for raw in json.loads(text):
        fam = Metric(raw["name"], raw["help"], raw["type"], raw.get("unit", ""))
        for name, labels, value, timestamp in raw["samples"]:
            fam.samples.append(Sample(name, dict(labels), float(value), timestamp))
        families.append(fam)
    return tuple(families)


def _classify(exc: sqlite3.Error, path: Path) -> StateError:
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return StateError(
            "locked", f"{path} is locked by another process (is a second exporter running?)"
        )
    if isinstance(exc, sqlite3.DatabaseError) and (
        "malformed" in text or "not a database" in text or "corrupt" in text
    ):
        return StateError(
            "corrupt",
            f"{path} is corrupt ({text}); move it aside to start with an empty state",
        )
    return StateError("io", f"{path}: {text}")


class StateStore:
    """A versioned SQLite database in WAL mode; use from one thread at a time.

    The exporter opens it in its store thread (see :class:`StoreWorker`); tests and the CLI
    commands that only read may use it directly.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 2.0) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise _classify(exc, self.path) from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed transaction survives a crash of the process
            # (kill -9); only a power loss may drop the last ones.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._check()
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise _classify(exc, self.path) from exc
        except StateError:
            self._db.close()
            raise

    def _check(self) -> None:
        row = self._db.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise StateError(
                "corrupt",
                f"{self.path} failed its integrity check ({row[0] if row else 'no answer'}); "
                "move it aside to start with an empty state",
            )

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StateError(
                "newer_schema",
                f"{self.path} has schema version {version}, newer than this exporter's "
                f"{SCHEMA_VERSION}: upgrade the exporter or point state_path elsewhere",
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            # One immediate transaction per step, re-checking the version under the lock: two
            # processes opening a new database at once migrate it once.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                current = int(self._db.execute("PRAGMA user_version").fetchone()[0])
                if current < target:
                    for statement in _statements(MIGRATIONS[target - 1]):
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version={target}")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        """Return the schema version of the open database."""
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction: committed at the end, rolled back on any exception."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _classify(exc, self.path) from exc

    def _write(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> int:
        """Run one statement over ``rows`` in one immediate transaction."""
        with self._transaction() as db:
            return db.executemany(sql, rows).rowcount

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise _classify(exc, self.path) from exc

    # ------------------------------------------------------------------ source results

    def save_result(
        self, source: str, taken_at: float, families: Iterable[Metric], jobs: Any
    ) -> None:
        """Replace the last good result of ``source``."""
        self._write(
            "INSERT INTO source_result (source, taken_at, families, jobs) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (source) DO UPDATE SET taken_at=excluded.taken_at, "
            "families=excluded.families, jobs=excluded.jobs",
            [(source, taken_at, encode_families(families), json.dumps(jobs))],
        )

    def results(self) -> dict[str, SourceResult]:
        """Return every source's last good result."""
        return {
            source: SourceResult(source, taken_at, decode_families(fams), json.loads(jobs))
            for source, taken_at, fams, jobs in self._read(
                "SELECT source, taken_at, families, jobs FROM source_result"
            )
        }

    # ---------------------------------------------------------------------- first seen

    def first_seen(self, entities: Iterable[str], now: float) -> dict[str, float]:
        """Return each entity's first-seen time, recording ``now`` for new ones."""
        keys = list(dict.fromkeys(entities))
        self._write(
            "INSERT INTO first_seen (entity, at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(k, now) for k in keys],
        )
        found: dict[str, float] = {}
        for chunk in _chunks(keys, 500):
            marks = ",".join("?" * len(chunk))
            rows = self._read(f"SELECT entity, at FROM first_seen WHERE entity IN ({marks})", chunk)  # noqa: S608 - only placeholders
            found.update((entity, at) for entity, at in rows)
        return found

    def all_first_seen(self) -> dict[str, float]:
        """Return every recorded first-seen time."""
        return {str(e): float(at) for e, at in self._read("SELECT entity, at FROM first_seen")}

    # -------------------------------------------------------------------- run history

    def add_runs(self, runs: Iterable[Run], now: float) -> int:
        """Append runs, ignoring ones already recorded; return how many were new."""
        return self._write(
            "INSERT OR IGNORE INTO run "
            "(job, scheduled_start, started, finished, result, recorded_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(r.job, r.scheduled_start, r.started, r.finished, r.result, now) for r in runs],
        )

    def runs(
        self, job: str | None = None, *, since: float | None = None, until: float | None = None
    ) -> list[Run]:
        """Return the recorded runs, oldest first, optionally of one job and a time range."""
        where: list[str] = []
        args: list[str | float] = []
        if job is not None:
            where.append("job = ?")
            args.append(job)
        if since is not None:
            where.append("coalesce(finished, started) >= ?")
            args.append(since)
        if until is not None:
            where.append("coalesce(finished, started) <= ?")
            args.append(until)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            "SELECT job, result, scheduled_start, started, finished FROM run "  # noqa: S608
            f"{clause} ORDER BY coalesce(finished, started), rowid",
            tuple(args),
        )
        return [Run(*row) for row in rows]

    # ------------------------------------------------------------------------- memory

    def remember(self, source: str, values: Mapping[str, Any]) -> None:
        """Store JSON-serializable values under ``source``'s memory."""
        self._write(
            "INSERT INTO memory (source, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (source, key) DO UPDATE SET value=excluded.value",
            [(source, key, json.dumps(value)) for key, value in values.items()],
        )

    def replace_memory(self, source: str, values: Mapping[str, Any]) -> None:
        """Make ``values`` the whole memory of ``source`` (keys not in it are dropped)."""
        rows = [(source, key, json.dumps(value)) for key, value in values.items()]
        with self._transaction() as db:
            db.execute("DELETE FROM memory WHERE source = ?", (source,))
            db.executemany("INSERT INTO memory (source, key, value) VALUES (?, ?, ?)", rows)

    def memory(self, source: str) -> dict[str, Any]:
        """Return everything remembered for ``source``."""
        rows = self._read("SELECT key, value FROM memory WHERE source = ?", (source,))
        return {key: json.loads(value) for key, value in rows}

    def all_memories(self) -> dict[str, dict[str, Any]]:
        """Return every source's memory."""
        out: dict[str, dict[str, Any]] = {}
        for source, key, value in self._read("SELECT source, key, value FROM memory"):
            out.setdefault(source, {})[key] = json.loads(value)
        return out

    # ------------------------------------------------------------- verification records

    def add_record(
        self,
        *,
        activity: str,
        asset: str,
        result: str,
        at: float,
        note: str,
        depth: str | None,
        origin: str,
        now: float,
    ) -> int:
        """Append one verification record in its own transaction; return its id."""
        row = (activity, asset, result, at, note, depth, origin, now)
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO record "
                "(activity, asset, result, at, note, depth, origin, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        return int(cursor.lastrowid or 0)

    def records(self, *, asset: str | None = None, after_id: int = 0) -> list[StoredRecord]:
        """Return the verification records (of one asset; newer than ``after_id``), in order."""
        where, args = "WHERE id > ?", [str(after_id)]
        if asset is not None:
            where += " AND asset = ?"
            args.append(asset)
        rows = self._read(
            "SELECT id, activity, asset, result, at, note, depth, origin, recorded_at "  # noqa: S608
            f"FROM record {where} ORDER BY id",
            tuple(args),
        )
        return [StoredRecord(*row) for row in rows]

    def integrity_check(self) -> str:
        """Run SQLite's full integrity check; ``"ok"`` when the file is sound."""
        row = self._read("PRAGMA integrity_check")
        return str(row[0][0]) if row else "no answer"

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        self._db.close()


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into complete SQL statements."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in a migration: {pending.strip()!r}")


def _chunks(items: list[str], size: int) -> Iterator[tuple[str, ...]]:
    for i in range(0, len(items), size):
        yield tuple(items[i : i + size])
