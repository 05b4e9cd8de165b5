"""Typed configuration fields and the validation base every config section shares.

Each field type is an ``Annotated`` type whose validator accepts exactly what the YAML may
hold and reports a problem in the project's phrasing (``must be a number, got str``,
``invalid duration 'soon' (use e.g. 30s, 5m, 6h, 7d)``) instead of pydantic's text. The
:class:`ConfigSection` base collects every problem of a section at once, keyed by its path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGTP]i?B|B)?$")
_SIZE_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "PB": 10**15,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
    "PiB": 2**50,
}
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: Where a problem is, relative to the section that reports it: keys and list indexes.
Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds every ``path: message``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


class Secret:
    """A credential that never shows itself in logs, reprs, exceptions or model dumps."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value; call only where it is sent to the backend."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Accept a :class:`Secret` (or a plain string) and always serialize as ``***``."""

        def check(value: Any) -> Secret:
            if isinstance(value, Secret):
                return value
            if isinstance(value, str):
                return Secret(value)
            raise problem("must be a string")

        return core_schema.no_info_plain_validator_function(
            check,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda _: "***"),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Describe a secret as a string (typically a ``${ENV}`` reference)."""
        return {"type": "string", "writeOnly": True}


def problem(message: str) -> PydanticCustomError:
    """Return the error a field validator raises: ``message`` is shown as it is."""
    return PydanticCustomError("config", "{message}", {"message": message})


def parse_duration(text: str) -> float:
    """Parse ``30s``/``5m``/``6h``/``7d``/``2w``/``250ms`` into seconds."""
    m = _DURATION_RE.match(text.strip())
    if not m:
        raise ValueError(f"invalid duration {text!r} (use e.g. 30s, 5m, 6h, 7d)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def format_duration(seconds: float) -> str:
    """Render seconds in the largest whole unit (the inverse of :func:`parse_duration`)."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_size(text: str | int) -> int:
    """Parse ``16MiB``/``1GB``/``512`` into bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE_RE.match(str(text).strip())
    if not m:
        raise ValueError(f"invalid size {text!r} (use e.g. 16MiB, 1GB or bytes)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2) or "B"])


def zone_or_none(name: str) -> ZoneInfo | None:
    """Return the time zone called ``name``, or ``None`` when it is unknown or malformed."""
    try:
        return ZoneInfo(name)
    # OSError: a directory of the zone database ("Europe") or an overlong name.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def expand_env(value: str) -> str:
    """Replace ``${NAME}`` by the environment variable; an unset one is a problem."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise problem(f"environment variable {name} is not set")
        return os.environ[name]

    return _ENV_RE.sub(repl, value)


def _typed(value: Any, kinds: tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) and bool not in kinds:
        raise problem(f"must be {what}, got {value!r}")
    if not isinstance(value, kinds):
        raise problem(f"must be {what}, got {type(value).__name__}")
    return value


def _context(info: ValidationInfo) -> Mapping[str, Any]:
    return info.context if isinstance(info.context, Mapping) else {}


def _text(value: Any) -> str:
    if isinstance(value, str):
        return expand_env(value)
    return str(_typed(value, (str, int, float), "a string"))


def _bool(value: Any) -> bool:
    result: bool = _typed(value, (bool,), "true or false")
    return result


def _int(value: Any) -> int:
    result: int = _typed(value, (int,), "an integer")
    return result


def _number(value: Any) -> float:
    return float(_typed(value, (int, float), "a number"))


def _non_negative(value: float) -> float:
    if value < 0:
        raise problem("must be >= 0")
    return value


def _duration(value: Any) -> float:
    raw = _typed(value, (str, int, float), "a duration")
    try:
        seconds = parse_duration(raw) if isinstance(raw, str) else float(raw)
    except ValueError as exc:
        raise problem(str(exc)) from None
    if seconds <= 0:
        raise problem("must be greater than 0")
    return seconds


def _duration_or_zero(value: Any) -> float:
    if isinstance(value, str) and value.strip() and _zero_duration(value):
        return 0.0
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return _duration(value)


def _zero_duration(text: str) -> bool:
    try:
        return parse_duration(text) == 0
    except ValueError:
        return False


def _size(value: Any) -> int:
    raw = _typed(value, (str, int), "a size")
    try:
        return parse_size(raw)
    except ValueError as exc:
        raise problem(str(exc)) from None


def _str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in value
    ):
        raise problem("must be a list of strings")
    return tuple(str(v) for v in value)


def _regexes(value: Any) -> tuple[str, ...]:
    patterns = _str_list(value)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise problem(f"invalid regular expression {pattern!r}: {exc}") from None
    return patterns


def _path(value: Any, info: ValidationInfo) -> Path:
    if isinstance(value, Path):
        return value
    path = Path(_text(value)).expanduser()
    base = _context(info).get("base_dir")
    return base / path if base is not None and not path.is_absolute() else path


def _zone(value: Any) -> str:
    name = _text(value)
    if zone_or_none(name) is None:
        raise problem(f"unknown time zone {name!r}")
    return name


def _inherited(check: Callable[[Any], str]) -> Callable[[Any, ValidationInfo], str]:
    def validate(value: Any, info: ValidationInfo) -> str:
        name = check(value) if value != "" else ""
        return name or str(_context(info).get("timezone", ""))

    return validate


def _zone_or_empty(value: Any) -> str:
    return _zone(value) if value != "" else ""


def at_least(minimum: int) -> BeforeValidator:
    """Validate an integer that must be ``>= minimum``."""

    def check(value: Any) -> int:
        number = _int(value)
        if number < minimum:
            raise problem(f"must be >= {minimum}, got {number}")
        return number

    return BeforeValidator(check)


def one_of(*choices: str) -> Any:
    """Return a string type restricted to ``choices`` (reported with the choices)."""

    def check(value: Any) -> str:
        text = _text(value)
        if text not in choices:
            raise problem(f"must be one of {', '.join(choices)}, got {text!r}")
        return text

    return Annotated[str, BeforeValidator(check), WithJsonSchema({"enum": list(choices)})]


_DURATION_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d|w)$"},
        {"type": "number", "exclusiveMinimum": 0},
    ],
    "description": "a duration: 30s, 5m, 6h, 7d, 2w, 250ms or seconds",
}
_ENV_SCHEMA = {"type": ["string", "number"]}
_STR_LIST_SCHEMA = {
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": ["string", "integer"]}}]
}

#: A string; ``${ENV}`` references are expanded; numbers are taken as their text.
Text = Annotated[str, BeforeValidator(_text), WithJsonSchema(_ENV_SCHEMA)]
Bool = Annotated[bool, BeforeValidator(_bool), WithJsonSchema({"type": "boolean"})]
Int = Annotated[int, BeforeValidator(_int), WithJsonSchema({"type": "integer"})]
Number = Annotated[float, BeforeValidator(_number), WithJsonSchema({"type": "number"})]
#: A number that must not be negative (prices).
NonNegative = Annotated[
    float,
    BeforeValidator(lambda v: _non_negative(_number(v))),
    WithJsonSchema({"type": "number", "minimum": 0}),
]
#: Seconds, written as ``5m``/``6h``/``7d``... or a number; must be greater than 0.
Duration = Annotated[float, BeforeValidator(_duration), WithJsonSchema(_DURATION_SCHEMA)]
#: Like :data:`Duration`, but 0 is allowed (``jitter: 0`` turns jitter off).
DurationOrZero = Annotated[
    float,
    BeforeValidator(_duration_or_zero),
    WithJsonSchema(
        {
            "anyOf": [_DURATION_SCHEMA["anyOf"][0], {"type": "number", "minimum": 0}],
            "description": _DURATION_SCHEMA["description"],
        }
    ),
]
#: Bytes, written as ``16MiB``/``1GB`` or a number.
Size = Annotated[
    int,
    BeforeValidator(_size),
    WithJsonSchema({"type": ["string", "integer"], "description": "16MiB, 1GB or bytes"}),
]
#: A list of strings; a single string counts as a one-item list.
StrList = Annotated[tuple[str, ...], BeforeValidator(_str_list), WithJsonSchema(_STR_LIST_SCHEMA)]
#: A list of regular expressions (each must compile).
Regexes = Annotated[tuple[str, ...], BeforeValidator(_regexes), WithJsonSchema(_STR_LIST_SCHEMA)]
#: A filesystem path; relative paths resolve against the config file's folder.
ConfigPath = Annotated[Path, BeforeValidator(_path), WithJsonSchema({"type": "string"})]
#: An IANA time zone name such as ``Europe/Berlin``.
Zone = Annotated[str, BeforeValidator(_zone), WithJsonSchema({"type": "string"})]
#: A time zone name or empty; empty means "ask the system".
OptionalZone = Annotated[str, BeforeValidator(_zone_or_empty), WithJsonSchema({"type": "string"})]
#: A time zone name; empty (or absent) inherits the top-level ``timezone:``.
InheritedZone = Annotated[
    str,
    BeforeValidator(_inherited(_zone)),
    WithJsonSchema({"type": "string"}),
    Field(validate_default=True),
]
#: A string that, when empty or absent, inherits the top-level ``timezone:`` (not checked).
InheritedText = Annotated[
    str,
    BeforeValidator(_inherited(_text)),
    WithJsonSchema(_ENV_SCHEMA),
    Field(validate_default=True),
]

#: Every config section forbids unknown keys.
STRICT = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


def phrase(error: Mapping[str, Any]) -> str:
    """Translate one pydantic error into the project's phrasing (one line)."""
    kind = error.get("type")
    ctx = error.get("ctx") or {}
    if kind == "config":
        return str(ctx.get("message", error.get("msg", "")))
    if kind == "missing":
        return "missing"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown key"
    if kind in (
        "dict_type",
        "model_type",
        "dataclass_type",
        "mapping_type",
        "model_attributes_type",
    ):
        return "must be a mapping"
    if kind in ("string_type", "str_type"):
        return f"must be a string, got {type(error.get('input')).__name__}"
    if kind in ("union_tag_not_found",):
        return "missing"
    text = str(error.get("msg", "invalid"))
    return text.removeprefix("Value error, ").splitlines()[0]


def section_problems(exc: ValidationError) -> list[tuple[Loc, str]]:
    """Return ``(loc, message)`` of every error in ``exc``, messages already translated."""
    return [(tuple(e["loc"]), phrase(e)) for e in exc.errors(include_url=False)]


def raise_problems(title: str, found: list[tuple[Loc, str]]) -> None:
    """Raise one :class:`ValidationError` holding every ``(loc, message)``, if any."""
    if not found:
        return
    details: list[InitErrorDetails] = [
        {"type": problem(message), "loc": loc, "input": None}
        for loc, message in dict.fromkeys(found)
    ]
    raise ValidationError.from_exception_data(title, details)


@dataclass(frozen=True, kw_only=True, config=STRICT)
class ConfigSection:
    """Base of every config mapping: reports every problem of the section at once.

    A mapping (YAML) goes through :meth:`prepare` (keys that are not plain fields, such as
    ``*_file`` secrets), then the fields' validators, then :meth:`problems` (checks across
    keys) and :meth:`complete` (values derived from others). When a key is invalid, the
    section is validated again without it, so checks across the other keys still run and
    every problem is reported in one go. Objects built from keyword arguments skip all this.
    """

    #: Keys that are fields for code and tests but never written in YAML.
    derived: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="wrap")
    @classmethod
    def _validate_section(
        cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        if not isinstance(data, Mapping):
            return handler(data)
        context = _context(info)
        found: list[tuple[Loc, str]] = []
        raw = {str(k): v for k, v in data.items() if v is not None}
        for key in cls.derived:
            if key in raw:
                del raw[key]
                found.append(((key,), "unknown key"))
        raw = cls.prepare(raw, found, context)
        result = None
        try:
            result = handler(raw)
        except ValidationError as exc:
            errors = section_problems(exc)
            found += errors
            bad = {loc[0] for loc, _ in errors if loc}
            trimmed = {k: v for k, v in raw.items() if k not in bad}
            if len(trimmed) < len(raw):
                try:
                    result = handler(trimmed)
                except ValidationError as again:
                    found += [
                        (loc, m)
                        for loc, m in section_problems(again)
                        if loc[:1] and loc[0] not in bad
                    ]
        if result is not None:
            found += [((key,), message) for key, message in result.problems(context)]
            result.complete(raw, context)
        raise_problems(cls.__name__, found)
        return result

    @classmethod
    def prepare(
        cls, raw: dict[str, Any], found: list[tuple[Loc, str]], context: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Turn YAML-only keys of ``raw`` into field values; append problems to ``found``."""
        return raw

    def complete(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        """Fill in values derived from other keys (only after validating YAML)."""

    def problems(self, context: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """Yield ``(key, message)`` for checks that involve several keys."""
        return iter(())

    def _set(self, name: str, value: Any) -> None:
        """Set a derived value on the frozen object (only while validating)."""
        object.__setattr__(self, name, value)
