"""Property tests for every parser: whatever a backend or a user sends, only our own errors.

Inputs are arbitrary (text, JSON, YAML) and, more usefully, real captures and fake answers
with random subtrees replaced (:func:`mutated`), which keeps them close enough to the real
shape to reach deep into the parsers. A parser may accept, return "unknown" (None) or raise
the project's parse error for its layer (``FetchError``, ``StorageParseError``,
``ScheduleError``, ``ConfigError``, ``ValueError`` for the field parsers); anything else is a
bug. The budget comes from the Hypothesis profile (conftest: ``ci``; ``make fuzz``: ``fuzz``).
"""

from __future__ import annotations

import contextlib
import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from exporter.buckets.listing import PrefixAggregate
from exporter.core.config import ConfigError, parse_config
from exporter.core.fields import parse_duration, parse_size
from exporter.schedule.base import ScheduleError
from exporter.schedule.expressions import parse_schedule
from exporter.sources.base import MAX_RETRY_AFTER, FetchError, parse_retry_after
from exporter.sources.healthchecks.source import parse_checks, parse_pings
from exporter.sources.proxmox import responses as pve
from exporter.sources.s3.source import _entry
from exporter.sources.smartctl.source import parse_scan
from exporter.sources.truenas import parse as nas
from exporter.sources.truenas.client import decode_ejson
from exporter.storage.models import DatasetInfo
from exporter.storage.smartctl import parse_smartctl_json
from exporter.storage.zfs import (
    StorageParseError,
    parse_zfs_list_json,
    parse_zfs_list_text,
    parse_zpool_status_json,
    parse_zpool_status_text,
)
from exporter.vzdump import parse_archive_name, parse_volid

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NOW = 1_780_000_000.0

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=12), kids, max_size=5)
    ),
    max_leaves=12,
)
# A field's value inside a realistic item: mostly scalars (cheap to generate).
field_values = scalars | st.lists(scalars, max_size=3)


def _paths(doc: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*here, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*here, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, original: Any, *, times: int = 3) -> Any:
    """``original`` with up to ``times`` subtrees replaced by arbitrary JSON (or removed)."""
    doc = copy.deepcopy(original)
    for _ in range(draw(st.integers(0, times))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            doc = draw(json_values)
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return doc


def reason_of(fn: Any, *args: Any, **kwargs: Any) -> str | None:
    """Call ``fn``; return None when it returns, the reason of a FetchError it raises."""
    try:
        fn(*args, **kwargs)
    except FetchError as exc:
        return exc.reason
    return None


def load(*parts: str) -> Any:
    return json.loads((FIXTURES.joinpath(*parts)).read_text())


SMART_DOCS = [load("smartctl", p.name) for p in sorted((FIXTURES / "smartctl").glob("*.json"))]
ZPOOL_JSON = load("zfs", "zpool_status_jp.json")
ZFS_JSON = load("zfs", "zfs_list_j_int.json")
ZFS_TEXT = (FIXTURES / "zfs" / "zfs_list_hp.txt").read_text()
ZPOOL_TEXT = (FIXTURES / "zfs" / "zpool_status_two_pools.txt").read_text()


# ------------------------------------------------------------------------------ names


@given(
    st.text(max_size=80)
    | st.from_regex(
        r"vzdump-(qemu|lxc)-\d{1,6}-\d{4}_\d\d_\d\d-\d\d_\d\d_\d\d\.\w{1,8}(\.\w{1,4})?"
    )
)
def test_vzdump_names_never_raise(name: str) -> None:
    parse_archive_name(name)
    parse_archive_name(name, "Europe/Berlin")
    parse_volid(f"store:backup/{name}")
    parse_volid(name)


# ------------------------------------------------------------------------------ smartctl


@given(st.sampled_from(SMART_DOCS).flatmap(mutated))
def test_smartctl_json_only_parse_errors(doc: Any) -> None:
    if not isinstance(doc, dict):
        doc = {"smartctl": doc}
    with contextlib.suppress(StorageParseError, FetchError):
        parse_smartctl_json(doc, now=NOW)


@given(mutated(load("smartctl", "scan.json")))
def test_smartctl_scan_only_parse_errors(doc: Any) -> None:
    with contextlib.suppress(StorageParseError, FetchError):
        parse_scan(doc if isinstance(doc, dict) else {"devices": doc})


# ------------------------------------------------------------------------------ zfs / zpool


@given(mutated(ZPOOL_JSON, times=4))
def test_zpool_status_json_only_parse_errors(doc: Any) -> None:
    with contextlib.suppress(StorageParseError):
        parse_zpool_status_json(doc if isinstance(doc, dict) else {"pools": doc})


@given(mutated(ZFS_JSON, times=4))
def test_zfs_list_json_only_parse_errors(doc: Any) -> None:
    with contextlib.suppress(StorageParseError):
        parse_zfs_list_json(doc if isinstance(doc, dict) else {"datasets": doc})


def _text_mutations(text: str) -> st.SearchStrategy[str]:
    lines = text.splitlines()

    @st.composite
    def build(draw: st.DrawFn) -> str:
        out = list(lines)
        for _ in range(draw(st.integers(0, 4))):
            i = draw(st.integers(0, max(0, len(out) - 1)))
            action = draw(st.sampled_from(["drop", "replace", "cut", "dup", "tabs"]))
            if not out:
                break
            if action == "drop":
                del out[i]
            elif action == "replace":
                out[i] = draw(st.text(max_size=60))
            elif action == "cut":
                out[i] = out[i][: draw(st.integers(0, len(out[i])))]
            elif action == "dup":
                out.insert(i, out[i])
            else:
                out[i] = (
                    out[i]
                    .replace(" ", "\t")
                    .replace("\t", draw(st.sampled_from(["", "\t\t", " - "])), 1)
                )
        return "\n".join(out)

    return build()


@given(_text_mutations(ZFS_TEXT) | st.text(max_size=200))
def test_zfs_list_text_only_parse_errors(text: str) -> None:
    with contextlib.suppress(StorageParseError):
        parse_zfs_list_text(text)


@given(_text_mutations(ZPOOL_TEXT) | st.text(max_size=200))
def test_zpool_status_text_only_parse_errors(text: str) -> None:
    with contextlib.suppress(StorageParseError):
        parse_zpool_status_text(text, tz=UTC)


# ------------------------------------------------------------------------------ TrueNAS


NAS_PARSERS: list[tuple[str, Any]] = [
    ("pool.dataset.query", nas.parse_datasets),
    ("zpool.query", nas.parse_pools),
    ("pool.scrub.query", nas.parse_scrub_tasks),
    ("cloudsync.query", nas.parse_cloudsync),
    ("smart.test.results", nas.parse_smart_results),
    ("zfs.snapshot.query", lambda r: nas.fold_snapshots(r, [DatasetInfo(name="tank/a")])),
    ("system.version", nas.detect_version),
]


@pytest.mark.parametrize(("method", "parser"), NAS_PARSERS, ids=[m for m, _ in NAS_PARSERS])
@given(result=json_values)
def test_truenas_results_only_parse_errors(method: str, parser: Any, result: Any) -> None:
    def call() -> None:
        with nas.parsing(method):
            parser(result)

    # An unsupported release is the deployment's problem: config (parse.py detect_version).
    allowed = (None, "parse", "config") if method == "system.version" else (None, "parse")
    assert reason_of(call) in allowed


@given(
    st.dictionaries(
        st.sampled_from(["$date", "$type", "$set", "$time", "x"]), json_values, max_size=3
    )
)
def test_truenas_ejson_objects_only_parse_errors(obj: dict[str, Any]) -> None:
    with contextlib.suppress(FetchError):
        decode_ejson(obj)


# ------------------------------------------------------------------------------ Proxmox VE


PVE_PARSERS: list[tuple[str, Any]] = [
    ("nodes", pve.parse_nodes),
    ("guests", pve.parse_guests),
    ("jobs", pve.parse_jobs),
    ("storage", pve.parse_storage_config),
    ("not-backed-up", pve.parse_not_backed_up),
    ("node-storages", lambda d: pve.parse_node_storages(d, "pve1")),
    ("content", lambda d: pve.parse_content(d, "pve1", "nfs", "Europe/Berlin")),
]
_PVE_ITEM = st.fixed_dictionaries(
    {},
    optional={
        k: field_values | st.integers(0, 2**40)
        for k in ("node", "status", "vmid", "type", "name", "template", "id", "schedule",
                  "storage", "enabled", "prune-backups", "content", "active", "total", "used",
                  "volid", "ctime", "size", "format", "notes", "protected", "vmid", "mode")
    },
)  # fmt: skip


@pytest.mark.parametrize(("endpoint", "parser"), PVE_PARSERS, ids=[e for e, _ in PVE_PARSERS])
@given(data=json_values | st.lists(_PVE_ITEM, max_size=4))
def test_pve_responses_only_parse_errors(endpoint: str, parser: Any, data: Any) -> None:
    assert reason_of(parser, data) in (None, "parse")


# ------------------------------------------------------------------------------ Healthchecks


_HC_CHECK = st.fixed_dictionaries(
    {},
    optional=dict.fromkeys(
        ("name", "slug", "tags", "desc", "grace", "n_pings", "status", "started", "last_ping",
         "next_ping", "manual_resume", "methods", "timeout", "schedule", "tz", "unique_key",
         "uuid", "ping_url", "update_url", "last_duration"),
        field_values,
    ),
)  # fmt: skip


@given(json_values | st.fixed_dictionaries({"checks": st.lists(_HC_CHECK, max_size=4)}))
def test_healthchecks_checks_only_parse_errors(doc: Any) -> None:
    assert reason_of(parse_checks, doc) in (None, "parse")


@given(json_values | st.fixed_dictionaries({"pings": st.lists(json_values, max_size=4)}))
def test_healthchecks_pings_only_parse_errors(doc: Any) -> None:
    assert reason_of(parse_pings, doc) in (None, "parse")


# ------------------------------------------------------------------------------ buckets


_S3_ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "Key": st.text(max_size=20) | json_values,
        "Size": st.integers(-5, 2**63) | json_values,
        "LastModified": st.datetimes(timezones=st.just(UTC)) | json_values,
        "ETag": json_values,
    },
)


@given(_S3_ENTRY | json_values)
def test_s3_listing_entries_only_parse_errors(obj: Any) -> None:
    if reason_of(_entry, obj) == "parse":
        return
    key, size, modified = _entry(obj)
    agg = PrefixAggregate()
    agg.add(size, modified)
    assert isinstance(key, str) and size >= 0


class _Call:
    def check(self) -> None:
        pass


_B2_ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "action": st.sampled_from(["upload", "hide", "start", "folder"]) | st.text(max_size=5),
        "contentLength": st.integers(-3, 2**50) | st.none() | st.text(max_size=3),
        "uploadTimestamp": st.integers(-(2**40), 2**45) | st.none() | st.floats(),
        "fileName": st.text(max_size=20) | st.integers(),
        "fileId": st.text(max_size=8) | st.none(),
        "contentSha1": st.text(max_size=8) | st.none(),
    },
)
_B2_PAGE = st.fixed_dictionaries(
    {},
    optional={
        "files": st.lists(_B2_ENTRY | st.integers() | st.none(), max_size=6) | st.text(max_size=3),
        "nextFileName": st.text(max_size=20) | st.none() | st.integers(),
    },
)


@given(st.lists(_B2_PAGE | st.none() | st.lists(st.integers(), max_size=2), min_size=1, max_size=4))
def test_b2_listing_only_parse_errors(pages: list[Any]) -> None:
    """b2_list_file_names pages as the session returns them (b2sdk raw_api: JSON dicts)."""
    from types import SimpleNamespace

    from exporter.buckets.config import BucketConfig
    from exporter.sources.b2.source import B2Config, B2Source

    cfg = B2Config(name="b2", kind="b2", key_id="k", application_key="s",  # type: ignore[arg-type]
                   buckets=(BucketConfig(name="bk", prefixes=("",)),))  # fmt: skip
    source = B2Source(cfg, api_factory=lambda: None)  # type: ignore[arg-type,return-value]
    served = iter(pages)

    def list_file_names(*_: Any) -> Any:
        return next(served, {"files": [], "nextFileName": None})

    source._api = SimpleNamespace(session=SimpleNamespace(list_file_names=list_file_names))  # type: ignore[assignment]
    source._bucket = lambda call, name: SimpleNamespace(id_="bucket-id")  # type: ignore[method-assign]
    agg = PrefixAggregate()
    assert reason_of(source.list_prefix, _Call(), cfg.buckets[0], "", agg, None) in (None, "parse")


# ------------------------------------------------------------------------------ schedules


_CRONISH = st.lists(
    st.sampled_from(["*", "*/5", "0", "1-5", "MON", "mon..fri", "L", "?", "#2", "60", "24", ",",
                     "-1", "Sun", "*-*-01", "02:30", "daily", "weekly", "@hourly", "13/7", "31",
                     "Feb"]),
    min_size=0,
    max_size=7,
).map(" ".join)  # fmt: skip


@given(_CRONISH | st.text(max_size=40))
def test_schedules_only_schedule_errors(expression: str) -> None:
    for dst in ("cron", "systemd"):
        try:
            schedule = parse_schedule(expression, "Europe/Berlin", dst=dst)  # type: ignore[arg-type]
        except ScheduleError:
            continue
        start = datetime.fromtimestamp(NOW, UTC)
        try:
            nxt = schedule.next_after(start)
        except ScheduleError:  # NoNextStartError: a one-shot date in the past
            continue
        assert nxt > start


@given(
    st.text(max_size=20) | st.from_regex(r"-?\d{1,30}(\.\d{0,5})?(ms|s|m|h|d|w|y)?", fullmatch=True)
)
def test_durations_only_value_errors(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert seconds >= 0


@given(
    st.text(max_size=20)
    | st.from_regex(r"-?\d{1,30}(\.\d{0,5})?\s?(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB|PB)?", fullmatch=True)
    | st.integers()
)
def test_sizes_only_value_errors(text: str | int) -> None:
    with contextlib.suppress(ValueError):
        parse_size(text)


# ------------------------------------------------------------------------------ Retry-After


@given(st.text(max_size=40) | st.integers(-(10**12), 10**40).map(str))
def test_retry_after_never_raises_and_is_bounded(value: str) -> None:
    wait = parse_retry_after(value, NOW)
    assert wait is None or 0 <= wait <= MAX_RETRY_AFTER


def test_retry_after_rfc9110_forms() -> None:
    # RFC 9110 section 10.2.3 (Retry-After) and the three HTTP-date forms of §5.6.7.
    at = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC).timestamp()
    assert parse_retry_after("120", at) == 120
    assert parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", at) == 60
    assert parse_retry_after("Sunday, 06-Nov-94 08:50:37 GMT", at) == 60
    assert parse_retry_after("Sun Nov  6 08:50:37 1994", at) == 60
    assert parse_retry_after("Sun, 06 Nov 1994 08:48:37 GMT", at) == 0  # in the past
    assert parse_retry_after("-5", at) is None
    assert parse_retry_after("1.5", at) is None
    assert parse_retry_after("soon", at) is None
    assert parse_retry_after("99999999999", at) == MAX_RETRY_AFTER


# ------------------------------------------------------------------------------ the config


_KEYS = ["sources", "jobs", "timezone", "state_path", "kind", "url", "interval", "timeout",
         "token_id", "token_secret", "api_key", "buckets", "prefixes", "schedule", "grace",
         "evidence", "source", "path", "glob", "devices", "command_prefix", "offline",
         "retries", "restore_check", "max_bytes", "ca_file", "verify_tls", "assets",
         "x"]  # fmt: skip
_KINDS = ["proxmox", "truenas", "zfs", "smartctl", "b2", "s3", "files", "healthchecks", "nope"]
_yaml_values = st.recursive(
    scalars | st.sampled_from(_KINDS) | st.sampled_from(["5m", "0 3 * * *", "1MiB", "https://x"]),
    lambda kids: st.lists(kids, max_size=4)
    | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), kids, max_size=5),
    max_leaves=40,
)  # fmt: skip


def _homelab_doc() -> dict[str, Any]:
    from exporter.sim.homelab import config_document

    lab = dict.fromkeys(
        ("pve_url", "pve_token_id", "pve_ca", "truenas_url", "truenas_user", "truenas_ca",
         "ha_dir", "b2_key_id", "s3_endpoint", "hc_url"),
        "x",
    )  # fmt: skip
    lab.update(pve_url="https://pve:8006", truenas_url="wss://nas", hc_url="https://hc.example",
               s3_endpoint="https://gateway.storjshare.io", pve_token_id="u@pam!t",
               quota="150GiB")  # fmt: skip
    return config_document(lab, secrets=Path("/nonexistent"))


HOMELAB = _homelab_doc()


def _check_config(text: str) -> None:
    try:
        parse_config(text, base_dir=Path("/nonexistent"))
    except ConfigError as exc:
        problem = str(exc)
    else:
        return
    assert problem, "a config error must say what is wrong"


@given(mutated(HOMELAB, times=5))
def test_mutated_homelab_config_only_config_errors(doc: Any) -> None:
    _check_config(yaml.safe_dump(doc, allow_unicode=True))


@given(st.dictionaries(st.sampled_from(_KEYS), _yaml_values, max_size=5))
def test_generated_config_only_config_errors(doc: dict[str, Any]) -> None:
    _check_config(yaml.safe_dump(doc, allow_unicode=True))


@given(st.text(max_size=200) | st.binary(max_size=100).map(lambda b: b.decode("latin-1")))
def test_config_text_only_config_errors(text: str) -> None:
    _check_config(text)


def test_mutations_reach_the_parsers() -> None:
    """The strategies are not vacuous: a real capture parses, a broken one is a parse error."""
    assert parse_zpool_status_json(ZPOOL_JSON)
    broken = copy.deepcopy(ZPOOL_JSON)
    broken["pools"] = "nope"
    with pytest.raises(StorageParseError):
        parse_zpool_status_json(broken)
    assert parse_checks({"checks": []}) == []
    with pytest.raises(FetchError):
        parse_checks({"checks": "nope"})
