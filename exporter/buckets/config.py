"""The bucket keys shared by ``kind: b2`` and ``kind: s3``: ``buckets:``, ``restore_check``."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    GetJsonSchemaHandler,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.json_schema import JsonSchemaValue, SkipJsonSchema
from pydantic_core import core_schema

from exporter.core.config import SourceConfig
from exporter.core.fields import (
    STRICT,
    ConfigPath,
    ConfigSection,
    Duration,
    DurationOrZero,
    Loc,
    NonNegative,
    Size,
    StrList,
    Text,
    problem,
    raise_problems,
    section_problems,
)
from exporter.sources.targets import effective_target_timeout, target_timeout_problems

DEFAULT_BUCKET_INTERVAL = 6 * 3600.0
DEFAULT_RESTORE_INTERVAL = 7 * 86400.0
DEFAULT_MAX_BYTES = 16 * 2**20
MAX_RETRIES = 10


# --------------------------------------------------------------------------- config


def _max_bytes(value: Any) -> int:
    size = int(value)
    if size <= 0:
        raise problem("must be greater than 0")
    if size > 2**30:
        # The sample is held in memory; a restore check is a spot check, not a full restore.
        raise problem("must be at most 1GiB (the sample is held in memory)")
    return size


def _retries(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise problem(f"must be an integer, got {type(value).__name__}")
    if value < 0:
        raise problem(f"must be >= 0, got {value}")
    if value > MAX_RETRIES:
        raise problem(f"must be <= {MAX_RETRIES}, got {value}")
    return value


#: ``retries`` (0..10): extra attempts per API call after the first.
Retries = Annotated[
    int,
    BeforeValidator(_retries),
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_RETRIES}),
]


@dataclass(frozen=True, kw_only=True, config=STRICT)
class RestoreCheckConfig(ConfigSection):
    """When and how to restore a sample object of a bucket."""

    interval: Duration = DEFAULT_RESTORE_INTERVAL
    max_bytes: Annotated[Size, WithJsonSchema({"type": ["string", "integer"]})] = DEFAULT_MAX_BYTES
    canary: Text | None = None
    keep_file: ConfigPath | None = None

    @field_validator("max_bytes")
    @classmethod
    def _bounded(cls, value: int) -> int:
        return _max_bytes(value)

    @field_validator("canary")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("/"):
            raise problem("object keys do not start with '/'")
        return value or None


@dataclass(frozen=True, kw_only=True, config=STRICT)
class BucketConfig(ConfigSection):
    """One watched bucket: its prefixes, listing interval, restore check and price.

    ``name`` is the key in ``buckets:``; read from YAML, ``price_per_tb_month`` defaults to
    the source's price.
    """

    name: SkipJsonSchema[str]
    prefixes: StrList = ("",)
    interval: Duration = DEFAULT_BUCKET_INTERVAL
    restore_check: RestoreCheckConfig | None = None
    price_per_tb_month: NonNegative = 0.0

    @classmethod
    def prepare(
        cls, raw: dict[str, Any], found: list[tuple[Loc, str]], context: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Check the name (the key in ``buckets:``)."""
        name = str(raw.get("name", ""))
        if not name.strip() or len(name) > 255:
            found.append(((), "bucket names must be 1-255 characters"))
        return raw

    def complete(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        """Drop duplicate prefixes (they are reported); no prefix means the whole bucket."""
        self._set("prefixes", tuple(dict.fromkeys(self.prefixes)) or ("",))

    def problems(self, context: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """Report duplicate and absolute prefixes."""
        seen: set[str] = set()
        for prefix in self.prefixes:
            if prefix in seen:
                yield "prefixes", f"duplicate prefix {prefix!r}"
            seen.add(prefix)
            if prefix.startswith("/"):
                yield "prefixes", f"prefix {prefix!r} must not start with '/'"


@functools.cache
def _bucket_adapter() -> TypeAdapter[BucketConfig]:
    return TypeAdapter(BucketConfig)


def _buckets(value: Any, info: ValidationInfo) -> Any:
    """Validate the ``buckets:`` map (prepared into a list) bucket by bucket, keyed by name."""
    if not isinstance(value, list):
        return value
    adapter = _bucket_adapter()
    out: list[BucketConfig] = []
    found: list[tuple[Loc, str]] = []
    for entry in value:
        if isinstance(entry, BucketConfig):
            out.append(entry)
            continue
        name = str(entry.get("name", "")) if isinstance(entry, Mapping) else ""
        if not isinstance(entry, Mapping):
            found.append(((name,), "must be a mapping"))
            continue
        try:
            out.append(adapter.validate_python(entry, context=info.context))
        except ValidationError as exc:
            found += [((name, *loc), message) for loc, message in section_problems(exc)]
    raise_problems("buckets", found)
    return tuple(out)


class _AsNamedMap:
    """JSON Schema of ``buckets:``: a map from bucket name to its keys (a tuple in code)."""

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        items = handler(schema).get("items", {})
        return {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": items,
            "description": "bucket name -> its keys",
        }


@dataclass(frozen=True, kw_only=True, config=STRICT)
class BucketSourceConfig(SourceConfig):
    """Keys shared by ``kind: b2`` and ``kind: s3``.

    In YAML ``buckets:`` maps each bucket name to its keys; in code it is a tuple.
    """

    buckets: Annotated[tuple[BucketConfig, ...], BeforeValidator(_buckets), _AsNamedMap()]
    retries: Retries = 2
    #: List calls a day that the source's listings may average (0: no budget); large
    #: buckets are listed less often than their ``interval`` to stay within it.
    list_calls_per_day: NonNegative = 0.0
    #: Each bucket's listing (and restore check) within the poll; 0: half of ``timeout``.
    target_timeout: DurationOrZero = 0.0

    @property
    def bucket_timeout(self) -> float:
        """The time one bucket may take within a poll."""
        return effective_target_timeout(self.timeout, self.target_timeout)

    def problems(self, context: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """Run the common checks; a bucket's own timeout ends before the poll's."""
        yield from super().problems(context)
        yield from target_timeout_problems(self.timeout, self.target_timeout)

    @classmethod
    def bucket_price(cls, raw: Mapping[str, Any]) -> Any:
        """Return the price of a bucket without its own ``price_per_tb_month`` (raw YAML)."""
        return raw.get("price_per_tb_month", 0.0)

    @classmethod
    def prepare(
        cls, raw: dict[str, Any], found: list[tuple[Loc, str]], context: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Read secrets; turn the ``buckets:`` map into a list of named entries."""
        raw = super().prepare(raw, found, context)
        buckets = raw.get("buckets")
        if buckets is None:
            found.append((("buckets",), "missing (name at least one bucket)"))
            raw["buckets"] = ()
        elif isinstance(buckets, Mapping):
            if not buckets:
                found.append((("buckets",), "name at least one bucket"))
            price = cls.bucket_price(raw)
            if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
                price = 0.0
            entries: list[Any] = []
            for key, value in buckets.items():
                entry = {} if value is None else value
                if isinstance(entry, Mapping):
                    entry = {"price_per_tb_month": price, **entry, "name": str(key)}
                    found += cls._prefix_problems(str(key), entry.get("prefixes"))
                entries.append(entry)
            raw["buckets"] = entries
        return raw

    @classmethod
    def prefix_problem(cls, prefix: str) -> str | None:
        """Check a prefix by the kind's own rule: return a problem text or ``None``."""
        return None

    @classmethod
    def _prefix_problems(cls, bucket: str, prefixes: Any) -> list[tuple[Loc, str]]:
        """Apply :meth:`prefix_problem` to the prefixes as written (all at once)."""
        written = [prefixes] if isinstance(prefixes, str) else prefixes
        if not isinstance(written, list):
            return []
        return [
            (("buckets", bucket, "prefixes"), text)
            for prefix in written
            if isinstance(prefix, str) and not prefix.startswith("/")
            if (text := cls.prefix_problem(prefix))
        ]
