"""Load the YAML configuration once into frozen, typed objects.

Every problem is collected with its path (``sources.pve1.token_secret: missing``) and
reported together in one :class:`ConfigError`; the CLI exits with status 2 on it.

Secrets are never stored as plain ``str``: they are :class:`Secret` objects whose
``repr``/``str`` are masked, read from ``${ENV}`` references or from a ``*_file`` key.
"""

from __future__ import annotations

import builtins
import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

T = TypeVar("T")

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
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds every ``path: message``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


class Secret:
    """A credential that never shows itself in logs, reprs or exceptions."""

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


class Problems:
    """Collects configuration problems with their paths."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        """Record one problem at ``path``."""
        self.items.append(f"{path}: {message}")

    def raise_if_any(self) -> None:
        """Raise :class:`ConfigError` with every problem recorded so far."""
        if self.items:
            raise ConfigError(self.items)


_MISSING = object()


def zone_or_none(name: str) -> ZoneInfo | None:
    """Return the time zone called ``name``, or ``None`` when it is unknown or malformed."""
    try:
        return ZoneInfo(name)
    # OSError: a directory of the zone database ("Europe") or an overlong name.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


@dataclass(frozen=True, kw_only=True)
class TLSConfig:
    """How an HTTPS client checks the server: ``verify_tls`` and an optional ``ca_file``."""

    verify: bool = True
    ca_file: Path | None = None

    @property
    def requests_verify(self) -> bool | str:
        """The ``verify=`` of requests, proxmoxer and botocore: the CA bundle or the flag."""
        return str(self.ca_file) if self.ca_file is not None else self.verify


class Section:
    """A typed reader over one YAML mapping that records problems instead of raising.

    Each getter returns a usable default on error, so validation always runs to the end
    and reports everything at once. Call :meth:`finish` to flag unknown keys.
    """

    def __init__(
        self,
        data: Mapping[builtins.str, Any],
        path: builtins.str,
        problems: Problems,
        base_dir: Path,
    ) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.base_dir = base_dir
        self._seen: set[builtins.str] = set()

    def _where(self, key: builtins.str) -> builtins.str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: builtins.str, message: builtins.str) -> None:
        """Record a problem for ``key`` of this section."""
        self.problems.add(self._where(key), message)

    def has(self, key: builtins.str) -> builtins.bool:
        """Tell whether ``key`` is present (and mark it as known)."""
        self._seen.add(key)
        return key in self.data and self.data[key] is not None

    def _get(self, key: builtins.str) -> Any:
        self._seen.add(key)
        value = self.data.get(key, _MISSING)
        return _MISSING if value is None else value

    def _typed(
        self,
        key: builtins.str,
        default: Any,
        kinds: tuple[type, ...],
        what: builtins.str,
        *,
        required: builtins.bool,
    ) -> Any:
        value = self._get(key)
        if value is _MISSING:
            if required:
                self.problem(key, "missing")
            return default
        if isinstance(value, bool) and bool not in kinds:
            self.problem(key, f"must be {what}, got {value!r}")
            return default
        if not isinstance(value, kinds):
            self.problem(key, f"must be {what}, got {type(value).__name__}")
            return default
        return value

    def str(
        self, key: builtins.str, default: builtins.str = "", *, required: builtins.bool = False
    ) -> builtins.str:
        """Read a string, expanding ``${ENV}`` references."""
        value = self._typed(key, default, (str, int, float), "a string", required=required)
        return self._expand(key, str(value)) if value is not default else default

    def bool(self, key: builtins.str, default: builtins.bool) -> builtins.bool:
        """Read a boolean."""
        value: builtins.bool = self._typed(key, default, (bool,), "true or false", required=False)
        return value

    def int(
        self, key: builtins.str, default: builtins.int, *, minimum: builtins.int | None = None
    ) -> builtins.int:
        """Read an integer, optionally with a lower bound."""
        value: builtins.int = self._typed(key, default, (int,), "an integer", required=False)
        if minimum is not None and value < minimum:
            self.problem(key, f"must be >= {minimum}, got {value}")
            return default
        return value

    def float(self, key: builtins.str, default: builtins.float) -> builtins.float:
        """Read a number."""
        value = self._typed(key, default, (int, float), "a number", required=False)
        return float(value)

    def duration(
        self,
        key: builtins.str,
        default: builtins.float | None = None,
        *,
        required: builtins.bool = False,
    ) -> builtins.float:
        """Read a duration such as ``5m`` into seconds (must be > 0)."""
        raw = self._typed(key, _MISSING, (str, int, float), "a duration", required=required)
        if raw is _MISSING:
            return default if default is not None else 0.0
        try:
            seconds = parse_duration(str(raw)) if isinstance(raw, str) else float(raw)
        except ValueError as exc:
            self.problem(key, str(exc))
            return default if default is not None else 0.0
        if seconds <= 0:
            self.problem(key, "must be greater than 0")
            return default if default is not None else 0.0
        return seconds

    def optional_duration(self, key: builtins.str) -> builtins.float | None:
        """Read a duration that may be absent."""
        if not self.has(key):
            return None
        return self.duration(key)

    def size(self, key: builtins.str, default: builtins.int) -> builtins.int:
        """Read a byte size such as ``16MiB``."""
        raw = self._typed(key, _MISSING, (str, int), "a size", required=False)
        if raw is _MISSING:
            return default
        try:
            return parse_size(raw)
        except ValueError as exc:
            self.problem(key, str(exc))
            return default

    def str_list(self, key: builtins.str) -> tuple[builtins.str, ...]:
        """Read a list of strings (a single string counts as a one-item list)."""
        value = self._get(key)
        if value is _MISSING:
            return ()
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            self.problem(key, "must be a list of strings")
            return ()
        return tuple(str(v) for v in value)

    def choice(
        self, key: builtins.str, choices: tuple[builtins.str, ...], default: builtins.str
    ) -> builtins.str:
        """Read a string restricted to ``choices``."""
        value = self.str(key, default)
        if value not in choices:
            self.problem(key, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def section(self, key: builtins.str, *, required: builtins.bool = False) -> Section:
        """Read a nested mapping as a :class:`Section` (empty when absent)."""
        value = self._get(key)
        if value is _MISSING:
            if required:
                self.problem(key, "missing")
            value = {}
        elif not isinstance(value, dict):
            self.problem(key, "must be a mapping")
            value = {}
        return Section(value, self._where(key), self.problems, self.base_dir)

    def sections(self, key: builtins.str) -> Iterator[tuple[builtins.str, Section]]:
        """Iterate over a mapping of named mappings (``sources:``, ``jobs:``, ``buckets:``)."""
        outer = self.section(key)
        for name, raw in outer.data.items():
            outer._seen.add(str(name))
            inner_path = f"{outer.path}.{name}"
            value = {} if raw is None else raw
            if not isinstance(value, dict):
                self.problems.add(inner_path, "must be a mapping")
                continue
            yield str(name), Section(value, inner_path, self.problems, self.base_dir)

    def secret(self, key: builtins.str, *, required: builtins.bool = True) -> Secret | None:
        """Read ``key`` (with ``${ENV}``) or ``key_file``; exactly one must be given."""
        file_key = f"{key}_file"
        inline, from_file = self.has(key), self.has(file_key)
        if inline and from_file:
            self.problem(key, f"give either {key} or {file_key}, not both")
            return None
        if from_file:
            path = self.path_value(file_key)
            try:
                text = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                self.problem(file_key, f"cannot read {path}: {exc.strerror or exc}")
                return None
            if not text:
                self.problem(file_key, f"{path} is empty")
                return None
            return Secret(text)
        if inline:
            raw = self.data[key]
            if not isinstance(raw, str):
                self.problem(key, "must be a string")
                return None
            value = self._expand(key, raw)
            if not value:
                self.problem(key, "is empty")
                return None
            return Secret(value)
        if required:
            self.problem(key, f'missing (set {key}: "${{ENV_VAR}}" or {file_key})')
        return None

    def timezone(self, key: builtins.str, default: builtins.str) -> builtins.str:
        """Read an IANA time zone name such as ``Europe/Berlin``.

        An unknown zone is recorded as a problem and ``default`` returned. With an empty
        ``default`` an empty value is accepted too (it means "inherit" or "ask the system").
        """
        value = self.str(key, default)
        if not value and not default:
            return value
        if zone_or_none(value) is None:
            self.problem(key, f"unknown time zone {value!r}")
            return default
        return value

    def tls(self, *, insecure_allowed: builtins.bool = True) -> TLSConfig:
        """Read ``verify_tls`` (unless not ``insecure_allowed``) and ``ca_file``.

        ``ca_file`` must be a readable file and makes no sense with ``verify_tls: false``.
        Without ``insecure_allowed`` the kind has no ``verify_tls`` key (it stays unknown).
        """
        verify = self.bool("verify_tls", True) if insecure_allowed else True
        ca_file: Path | None = None
        if self.has("ca_file"):
            ca_file = self.path_value("ca_file")
            if not verify:
                self.problem("ca_file", "cannot be used with verify_tls: false")
            elif not ca_file.is_file():
                self.problem("ca_file", f"{ca_file} is not a readable file")
        return TLSConfig(verify=verify, ca_file=ca_file)

    def path_value(self, key: builtins.str, *, required: builtins.bool = False) -> Path:
        """Read a filesystem path, relative to the config file's folder."""
        text = self.str(key, required=required)
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def _expand(self, key: builtins.str, value: builtins.str) -> builtins.str:
        def repl(m: re.Match[builtins.str]) -> builtins.str:
            name = m.group(1)
            if name not in os.environ:
                self.problem(key, f"environment variable {name} is not set")
                return ""
            return os.environ[name]

        return _ENV_RE.sub(repl, value)

    def finish(self) -> None:
        """Report keys that no getter asked for (typos are errors, not silently ignored)."""
        for key in self.data:
            if key not in self._seen:
                self.problem(str(key), "unknown key")


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """Settings every source has; each kind subclasses this with its own keys."""

    name: str
    kind: str
    interval: float
    timeout: float
    jitter: float = 0.0


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """A job declared in the ``jobs:`` map."""

    name: str
    schedule: str
    timezone: str
    grace: float
    start_grace: float | None
    evidence: Mapping[str, str]


@dataclass(frozen=True, kw_only=True)
class Config:
    """The whole validated configuration."""

    timezone: str = "UTC"
    sources: Mapping[str, SourceConfig] = field(default_factory=dict)
    jobs: Mapping[str, JobConfig] = field(default_factory=dict)


SourceParser = Callable[[Section, "SourceConfigBase"], SourceConfig]


@dataclass(frozen=True)
class SourceConfigBase:
    """The common keys read for a source, handed to its kind's parser."""

    name: str
    kind: str
    interval: float
    timeout: float
    jitter: float


@dataclass(frozen=True)
class KindSpec:
    """How one ``kind:`` is configured and built.

    ``parse`` reads the kind's own keys; ``build`` turns its config into a source object.
    """

    parse: SourceParser
    build: Callable[[Any], Any]
    default_interval: float
    default_timeout: float


def load_config(path: str | Path, *, kinds: Mapping[str, KindSpec] | None = None) -> Config:
    """Read and validate the YAML file at ``path``; raise :class:`ConfigError` on problems."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    return parse_config(text, base_dir=path.parent, kinds=kinds)


def parse_config(
    text: str, *, base_dir: Path | None = None, kinds: Mapping[str, KindSpec] | None = None
) -> Config:
    """Validate YAML text into a :class:`Config`."""
    if kinds is None:
        from exporter.sources import kinds as registered  # noqa: PLC0415 - import cycle

        kinds = registered()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "yaml"
        raise ConfigError([f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["(top level): must be a mapping"])
    problems = Problems()
    root = Section(data, "", problems, base_dir or Path.cwd())
    timezone = root.timezone("timezone", "UTC")
    sources: dict[str, SourceConfig] = {}
    for name, sec in root.sections("sources"):
        if not _NAME_RE.match(name):
            problems.add(sec.path, "source names use letters, digits, '_', '.', '-'")
            continue
        kind = sec.str("kind", required=True)
        spec = kinds.get(kind)
        if spec is None:
            if kind:
                sec.problem("kind", f"unknown kind {kind!r} (known: {', '.join(sorted(kinds))})")
            continue
        interval = sec.duration("interval", spec.default_interval)
        timeout = sec.duration("timeout", spec.default_timeout)
        # Jitter spreads polls of many exporters hitting one backend; 10 % of the interval.
        jitter = sec.duration("jitter") if sec.has("jitter") else min(interval * 0.1, 30.0)
        if timeout >= interval:
            sec.problem("timeout", "must be shorter than interval")
        base = SourceConfigBase(name, kind, interval, timeout, jitter)
        parsed = spec.parse(sec, base)
        # Kinds with a ``timezone`` key inherit the top-level one when it is left empty.
        if getattr(parsed, "timezone", None) == "":
            parsed = dataclasses.replace(parsed, timezone=timezone)  # type: ignore[call-arg]
        sources[name] = parsed
        sec.finish()
    jobs: dict[str, JobConfig] = {}
    for name, sec in root.sections("jobs"):
        jobs[name] = _parse_job(name, sec, timezone, sources)
    root.finish()
    problems.raise_if_any()
    return Config(timezone=timezone, sources=sources, jobs=jobs)


def _parse_job(
    name: str, sec: Section, default_tz: str, sources: Mapping[str, SourceConfig]
) -> JobConfig:
    from exporter.schedule.expressions import ScheduleError, parse_schedule  # noqa: PLC0415

    schedule = sec.str("schedule", required=True)
    tz = sec.str("timezone", default_tz)
    if schedule:
        try:
            parse_schedule(schedule, tz)
        except ScheduleError as exc:
            sec.problem("schedule", str(exc))
    grace = sec.duration("grace", required=True)
    start_grace = sec.optional_duration("start_grace")
    if start_grace is not None and grace and start_grace > grace:
        sec.problem("start_grace", "must not be longer than grace")
    ev = sec.section("evidence", required=True)
    evidence: dict[str, str] = {}
    for key, value in ev.data.items():
        ev._seen.add(str(key))
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            ev.problem(str(key), "must be a string")
            continue
        evidence[str(key)] = str(value)
    if ev.data and "source" not in evidence:
        ev.problem("source", "missing")
    elif "source" in evidence and evidence["source"] not in sources:
        ev.problem("source", f"no source named {evidence['source']!r}")
    sec.finish()
    return JobConfig(
        name=name,
        schedule=schedule,
        timezone=tz,
        grace=grace,
        start_grace=start_grace,
        evidence=evidence,
    )
