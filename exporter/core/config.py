"""Load the YAML configuration once into frozen, typed objects (pydantic v2 models).

Every problem is collected with its path (``sources.pve1.token_secret: missing``) and
reported together in one :class:`ConfigError`; the CLI exits with status 2 on it.

Each ``kind:`` has its own model (``exporter/sources/<kind>/config.py``), discriminated on
``kind``; the registry (:mod:`exporter.sources`) supplies them, so this module imports no kind.
Secrets are never stored as plain ``str``: they are :class:`Secret` objects whose
``repr``/``str`` and dumps are masked, read from ``${ENV}`` references or from a ``*_file`` key.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from exporter.assets.config import AssetConfig, check_asset_evidence
from exporter.assets.records import RecordsApiConfig, VerificationConfig
from exporter.core.fields import (
    STRICT,
    ConfigError,
    ConfigPath,
    ConfigSection,
    Duration,
    DurationOrZero,
    InheritedText,
    Loc,
    Secret,
    Text,
    Zone,
    expand_env,
    format_duration,
    parse_duration,
    parse_size,
    phrase,
    problem,
    zone_or_none,
)
from exporter.policy.config import PolicyConfig, policy_problems

__all__ = [
    "Config",
    "ConfigError",
    "EvidenceSelector",
    "JobConfig",
    "KindSpec",
    "Secret",
    "SourceConfig",
    "TLSConfig",
    "config_schema",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
    "tls_problems",
    "zone_or_none",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True, kw_only=True, config=STRICT)
class TLSConfig:
    """How an HTTPS client checks the server: ``verify_tls`` and an optional ``ca_file``."""

    verify: bool = True
    ca_file: Path | None = None

    @property
    def requests_verify(self) -> bool | str:
        """The ``verify=`` of requests, proxmoxer and botocore: the CA bundle or the flag."""
        return str(self.ca_file) if self.ca_file is not None else self.verify


def tls_problems(verify: bool, ca_file: Path | None) -> Iterator[tuple[str, str]]:
    """Check ``ca_file``: a readable file, and pointless with ``verify_tls: false``."""
    if ca_file is None:
        return
    if not verify:
        yield "ca_file", "cannot be used with verify_tls: false"
    elif not ca_file.is_file():
        yield "ca_file", f"{ca_file} is not a readable file"


def _secret_fields(cls: type) -> tuple[str, ...]:
    fields = getattr(cls, "__pydantic_fields__", {})
    return tuple(name for name, info in fields.items() if info.annotation is Secret)


def _read_secret(
    raw: dict[str, Any], key: str, found: list[tuple[Loc, str]], context: Mapping[str, Any]
) -> Secret | None:
    """Read ``key`` (with ``${ENV}``) or ``key_file`` of ``raw``; exactly one must be given."""
    file_key = f"{key}_file"
    inline, from_file = raw.pop(key, None), raw.pop(file_key, None)
    if inline is not None and from_file is not None:
        found.append(((key,), f"give either {key} or {file_key}, not both"))
        return None
    if from_file is not None:
        try:
            text = expand_env(str(from_file))
        except PydanticCustomError as exc:
            found.append(((file_key,), exc.message()))
            return None
        path = Path(text).expanduser()
        base = context.get("base_dir")
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            found.append(((file_key,), f"cannot read {path}: {exc.strerror or exc}"))
            return None
        if not value:
            found.append(((file_key,), f"{path} is empty"))
            return None
        return Secret(value)
    if inline is not None:
        if not isinstance(inline, str):
            found.append(((key,), "must be a string"))
            return None
        try:
            value = expand_env(inline)
        except PydanticCustomError as exc:
            found.append(((key,), exc.message()))
            return None
        if not value:
            found.append(((key,), "is empty"))
            return None
        return Secret(value)
    found.append(((key,), f'missing (set {key}: "${{ENV_VAR}}" or {file_key})'))
    return None


@dataclass(frozen=True, kw_only=True, config=STRICT)
class OfflineWindowConfig:
    """One ``offline:`` window: it opens at each start of ``schedule`` and lasts ``duration``."""

    schedule: Text
    duration: Duration


@dataclass(frozen=True, kw_only=True, config=STRICT)
class SourceConfig(ConfigSection):
    """Settings every source has; each kind subclasses this with its own keys.

    ``name`` is the key in the ``sources:`` map. A kind sets its default ``interval`` and
    ``timeout``; ``jitter`` defaults to 10 % of the interval (at most 30 s) when read from
    YAML (0 when built in code). Every :class:`Secret` field is read from ``<key>`` or
    ``<key>_file``.
    """

    name: SkipJsonSchema[str]
    kind: str
    interval: Duration
    timeout: Duration
    jitter: DurationOrZero = 0.0
    # When the backend is expected to be off (a NAS powered down at night): failed polls
    # inside a window are reason ``offline`` and BackupSourceDown stays quiet.
    offline: tuple[OfflineWindowConfig, ...] = ()

    def discovered_job_prefixes(self) -> tuple[str, ...]:
        """Return the name prefixes of the jobs this source discovers (with ``vmid=""``).

        A ``jobs:`` entry fed by this source must not use them: its labels could equal a
        discovered job's (a config error, found at load time; see ``parse_config``).
        """
        return ()

    def offline_windows(self, default_timezone: str) -> tuple[Any, ...]:
        """Build the :class:`~exporter.schedule.windows.OfflineWindow` of each ``offline:``."""
        from exporter.schedule.expressions import parse_schedule  # noqa: PLC0415
        from exporter.schedule.windows import OfflineWindow  # noqa: PLC0415

        zone = str(getattr(self, "timezone", "") or default_timezone or "UTC")
        return tuple(
            OfflineWindow(parse_schedule(w.schedule, zone), w.duration) for w in self.offline
        )

    @classmethod
    def prepare(
        cls, raw: dict[str, Any], found: list[tuple[Loc, str]], context: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Read every secret field from its key or its ``_file`` key."""
        for key in _secret_fields(cls):
            # A placeholder keeps a reported secret from being reported "missing" again.
            raw[key] = _read_secret(raw, key, found, context) or Secret("")
        return raw

    def complete(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        """Default the jitter: it spreads polls of many exporters hitting one backend."""
        if "jitter" not in raw:
            self._set("jitter", min(self.interval * 0.1, 30.0))

    def problems(self, context: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """Check that the timeout ends before the next poll is due."""
        if self.timeout >= self.interval:
            yield "timeout", "must be shorter than interval"
        from exporter.schedule.expressions import ScheduleError, parse_schedule  # noqa: PLC0415

        zone = str(getattr(self, "timezone", "") or context.get("timezone") or "UTC")
        for i, window in enumerate(self.offline):
            try:
                parse_schedule(window.schedule, zone)
            except ScheduleError as exc:
                yield f"offline.{i}.schedule", str(exc)


@dataclass(frozen=True, kw_only=True, config=STRICT)
class EvidenceSelector(ConfigSection):
    """A job's ``evidence:`` mapping; each kind subclasses it with the keys it reads."""

    source: Text


@dataclass(frozen=True, kw_only=True, config=STRICT)
class JobConfig(ConfigSection):
    """A job declared in the ``jobs:`` map (``name`` is its key)."""

    name: SkipJsonSchema[str]
    timezone: InheritedText = ""
    schedule: Text
    grace: Duration
    start_grace: Duration | None = None
    # A run longer than this is backup_job_over_max_duration 1 (evidence that records runs).
    max_duration: Duration | None = None
    evidence: Mapping[str, str]

    @field_validator("schedule")
    @classmethod
    def _parses(cls, schedule: str, info: ValidationInfo) -> str:
        """Check the schedule in the job's zone (``timezone`` is validated first)."""
        from exporter.schedule.expressions import ScheduleError, parse_schedule  # noqa: PLC0415

        if schedule:
            try:
                parse_schedule(schedule, info.data.get("timezone") or "UTC")
            except ScheduleError as exc:
                raise problem(str(exc)) from None
        return schedule

    def problems(self, context: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """Check that ``start_grace`` fits in ``grace``."""
        if self.start_grace is not None and self.start_grace > self.grace:
            yield "start_grace", "must not be longer than grace"


@dataclass(frozen=True, kw_only=True, config=STRICT)
class Config:
    """The whole validated configuration."""

    timezone: str = "UTC"
    # The state database; ``None``: ``$STATE_DIRECTORY/state.db`` or ``./state.db`` (serve).
    state_path: Path | None = None
    sources: Mapping[str, SourceConfig] = field(default_factory=dict)
    jobs: Mapping[str, JobConfig] = field(default_factory=dict)
    assets: Mapping[str, AssetConfig] = field(default_factory=dict)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # Verification records: how often each activity is due, and the optional records API.
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    records_api: RecordsApiConfig | None = None


@dataclass(frozen=True)
class KindSpec:
    """How one ``kind:`` is configured and built.

    ``config`` is the kind's model (its field defaults hold the default ``interval`` and
    ``timeout``), ``evidence`` the keys its job selectors accept. ``source`` names the class
    (``module:Class``) imported only when a source of the kind is built; tests may pass a
    ``factory`` instead.
    """

    config: type[SourceConfig]
    evidence: type[EvidenceSelector] = EvidenceSelector
    source: str = ""
    factory: Callable[[Any], Any] | None = None

    def build(self, config: SourceConfig) -> Any:
        """Instantiate the source object for a validated config of this kind."""
        if self.factory is not None:
            return self.factory(config)
        module, _, name = self.source.partition(":")
        return getattr(importlib.import_module(module), name)(config)

    def _default(self, key: str) -> float:
        value = self.config.__pydantic_fields__[key].default  # type: ignore[attr-defined]
        return float(value)

    @property
    def default_interval(self) -> float:
        """The poll interval when ``interval:`` is absent."""
        return self._default("interval")

    @property
    def default_timeout(self) -> float:
        """The poll timeout when ``timeout:`` is absent."""
        return self._default("timeout")

    @property
    def evidence_keys(self) -> tuple[str, ...]:
        """The keys a job's ``evidence:`` may use for a source of this kind."""
        return tuple(self.evidence.__pydantic_fields__)  # type: ignore[attr-defined]


def _registered() -> Mapping[str, KindSpec]:
    sources = importlib.import_module("exporter.sources")
    registered: Mapping[str, KindSpec] = sources.kinds()
    return registered


@functools.cache
def _document(specs: tuple[tuple[str, KindSpec], ...]) -> type[BaseModel]:
    """Build the model of the whole file: ``sources`` is the union of the kinds' models."""
    configs = tuple(spec.config for _, spec in specs)
    source: Any = SourceConfig
    if configs:
        union = Union[configs] if len(configs) > 1 else configs[0]  # noqa: UP007
        source = Annotated[union, Field(discriminator="kind")] if len(configs) > 1 else union
    model: type[BaseModel] = create_model(
        "BackupExporterConfig",
        __config__=ConfigDict(extra="forbid", title="backup-exporter configuration"),
        timezone=(Zone, "UTC"),
        state_path=(ConfigPath | None, None),
        sources=(dict[str, source], {}),
        jobs=(dict[str, JobConfig], {}),
        assets=(dict[str, AssetConfig], {}),
        policy=(PolicyConfig, PolicyConfig()),
        verification=(VerificationConfig, VerificationConfig()),
        records_api=(RecordsApiConfig | None, None),
    )
    return model


def _specs(kinds: Mapping[str, KindSpec]) -> tuple[tuple[str, KindSpec], ...]:
    return tuple((name, kinds[name]) for name in kinds)


def load_config(path: str | Path, *, kinds: Mapping[str, KindSpec] | None = None) -> Config:
    """Read and validate the YAML file at ``path``; raise :class:`ConfigError` on problems."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    return parse_config(text, base_dir=path.parent, kinds=kinds)


def _where(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_ADAPTERS: dict[str, TypeAdapter[EvidenceSelector]] = {}


def _adapter(model: type[EvidenceSelector]) -> TypeAdapter[EvidenceSelector]:
    key = f"{model.__module__}.{model.__qualname__}"
    if key not in _ADAPTERS:
        _ADAPTERS[key] = TypeAdapter(model)
    return _ADAPTERS[key]


def _check_evidence(
    job: str,
    raw: Any,
    *,
    source_kinds: Mapping[str, str],
    kinds: Mapping[str, KindSpec],
    context: Mapping[str, Any],
    found: list[tuple[Loc, str]],
    where: Loc | None = None,
) -> dict[str, str]:
    """Validate ``jobs.<job>.evidence`` (or the selector at ``where``) against its source's kind."""
    where = where or ("jobs", job, "evidence")
    if not isinstance(raw, Mapping):
        found.append((where, "must be a mapping"))
        return {}
    evidence: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            found.append(((*where, str(key)), "must be a string"))
            continue
        evidence[str(key)] = str(value)
    if not raw:
        return evidence
    if "source" not in evidence:
        if "source" not in raw:
            found.append(((*where, "source"), "missing"))
        return evidence
    source = evidence["source"]
    if source not in source_kinds:
        found.append(((*where, "source"), f"no source named {source!r}"))
        return evidence
    kind = source_kinds[source]
    spec = kinds[kind]
    try:
        _adapter(spec.evidence).validate_python(evidence, context=dict(context))
    except ValidationError as exc:
        accepted = ", ".join(spec.evidence_keys)
        for error in exc.errors(include_url=False):
            message = phrase(error)
            if message == "unknown key":
                message = f"unknown key (kind {kind} accepts: {accepted})"
            found.append(((*where, *error["loc"]), message))
    return evidence


def _job_name_clashes(
    jobs: Mapping[str, JobConfig], sources: Mapping[str, SourceConfig]
) -> Iterator[tuple[Loc, str]]:
    """Yield each ``jobs:`` entry named in the scheme of the jobs its source discovers.

    A config job's labels are ``(name, evidence source, vmid="")``. Which names a source will
    discover is not known before it is read, but their scheme is (``hc-<check>``,
    ``cloudsync-<task>``, ``scrub-<pool>``; PVE jobs always carry a vmid): such a name is
    refused here rather than risk two jobs with one set of labels.
    """
    for name, job in jobs.items():
        source = sources.get(job.evidence.get("source", ""))
        if source is None:
            continue
        for prefix in source.discovered_job_prefixes():
            if name.startswith(prefix):
                yield (
                    ("jobs", name),
                    f"the name is in the scheme of the jobs source {source.name!r} discovers "
                    f"({prefix}...); a discovered job could have the same labels: rename it",
                )
                break


def parse_config(
    text: str, *, base_dir: Path | None = None, kinds: Mapping[str, KindSpec] | None = None
) -> Config:
    """Validate YAML text into a :class:`Config`."""
    if kinds is None:
        kinds = _registered()
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
    found: list[tuple[Loc, str]] = []
    doc: dict[str, Any] = {str(k): v for k, v in data.items() if v is not None}
    timezone = "UTC"
    if "timezone" in doc:
        name = str(doc["timezone"])
        if zone_or_none(name) is not None:
            timezone = name
    context: dict[str, Any] = {"base_dir": base_dir or Path.cwd(), "timezone": timezone}
    source_kinds: dict[str, str] = {}
    for section in ("sources", "jobs", "assets"):
        if section in doc and not isinstance(doc[section], dict):
            found.append(((section,), "must be a mapping"))
            doc[section] = {}
    sources: dict[str, Any] = {}
    for key, raw in doc.get("sources", {}).items():
        name = str(key)
        value = {} if raw is None else raw
        if not isinstance(value, dict):
            found.append((("sources", name), "must be a mapping"))
            continue
        if not _NAME_RE.match(name):
            found.append((("sources", name), "source names use letters, digits, '_', '.', '-'"))
            continue
        kind = value.get("kind")
        if kind is None:
            found.append((("sources", name, "kind"), "missing"))
            continue
        if str(kind) not in kinds:
            found.append(
                (
                    ("sources", name, "kind"),
                    f"unknown kind {str(kind)!r} (known: {', '.join(sorted(kinds))})",
                )
            )
            continue
        if "name" in value:
            found.append((("sources", name, "name"), "unknown key"))
        source_kinds[name] = str(kind)
        sources[name] = {**value, "name": name, "kind": str(kind)}
    jobs: dict[str, Any] = {}
    for key, raw in doc.get("jobs", {}).items():
        name = str(key)
        value = {} if raw is None else raw
        if not isinstance(value, dict):
            found.append((("jobs", name), "must be a mapping"))
            continue
        if "name" in value:
            found.append((("jobs", name, "name"), "unknown key"))
        job = {**value, "name": name}
        if value.get("evidence") is not None:
            job["evidence"] = _check_evidence(
                name,
                value["evidence"],
                source_kinds=source_kinds,
                kinds=kinds,
                context=context,
                found=found,
            )
        jobs[name] = job
    doc["sources"], doc["jobs"] = sources, jobs
    assets: dict[str, Any] = {}
    for key, raw in doc.get("assets", {}).items():
        name = str(key)
        value = {} if raw is None else raw
        if not isinstance(value, dict):
            found.append((("assets", name), "must be a mapping"))
            continue
        if "name" in value:
            found.append((("assets", name, "name"), "unknown key"))
        value = check_asset_evidence(
            name,
            value,
            check=functools.partial(
                _check_evidence,
                name,
                source_kinds=source_kinds,
                kinds=kinds,
                context=context,
                found=found,
            ),
            jobs=jobs,
            sources=source_kinds,
            found=found,
        )
        assets[name] = {**value, "name": name}
    doc["assets"] = assets
    # Where a ``{job: NAME}`` location's copies live: the source its evidence names.
    context["job_sources"] = {
        name: str(job["evidence"].get("source", ""))
        for name, job in jobs.items()
        if isinstance(job.get("evidence"), Mapping)
    }
    model = _document(_specs(kinds))
    parsed: BaseModel | None = None
    try:
        parsed = model.model_validate(doc, context=context)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            # The discriminated union adds the kind to the path: sources.pve1.proxmox.url.
            if len(loc) > 2 and loc[0] == "sources" and loc[2] == source_kinds.get(str(loc[1])):
                loc = (*loc[:2], *loc[3:])
            found.append((loc, phrase(error)))
    if parsed is not None:
        found.extend(_job_name_clashes(getattr(parsed, "jobs", {}), getattr(parsed, "sources", {})))
        found.extend(policy_problems(getattr(parsed, "policy", PolicyConfig()), source_kinds))
    if found:
        raise ConfigError([f"{_where(loc)}: {message}" for loc, message in dict.fromkeys(found)])
    assert parsed is not None
    return Config(
        timezone=getattr(parsed, "timezone", "UTC"),
        state_path=getattr(parsed, "state_path", None),
        sources=getattr(parsed, "sources", {}),
        jobs=getattr(parsed, "jobs", {}),
        assets=getattr(parsed, "assets", {}),
        policy=getattr(parsed, "policy", PolicyConfig()),
        verification=getattr(parsed, "verification", VerificationConfig()),
        records_api=getattr(parsed, "records_api", None),
    )


def _schema_defs(schema: dict[str, Any]) -> dict[str, Any]:
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    return defs


def config_schema(kinds: Mapping[str, KindSpec] | None = None) -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of the whole configuration file."""
    if kinds is None:
        kinds = _registered()
    specs = _specs(kinds)
    schema = _document(specs).model_json_schema()
    defs = _schema_defs(schema)
    for _, spec in specs:
        entry = defs.get(spec.config.__name__)
        if entry is None:
            continue
        props = entry.setdefault("properties", {})
        # ``kind`` has a default for code; in YAML it is what selects the model.
        entry["required"] = ["kind", *entry.get("required", [])]
        for key in _secret_fields(spec.config):
            props[f"{key}_file"] = {
                "type": "string",
                "description": f"a file holding {key} (relative to the config file)",
            }
            required = [r for r in entry.get("required", []) if r != key]
            entry["required"] = required
            entry.setdefault("allOf", []).append(
                {"oneOf": [{"required": [key]}, {"required": [f"{key}_file"]}]}
            )
            if not required:
                del entry["required"]
    evidence: list[dict[str, Any]] = []
    for _, spec in specs:
        ev = TypeAdapter(spec.evidence).json_schema(ref_template="#/$defs/{model}")
        for name, sub in ev.pop("$defs", {}).items():
            defs.setdefault(name, sub)
        ev["title"] = f"{spec.config.__name__.removesuffix('Config')} evidence"
        evidence.append(ev)
    job = defs.get("JobConfig")
    if job is not None:
        job["properties"]["evidence"] = {
            "anyOf": evidence,
            "description": "which source proves the job ran; the keys depend on its kind",
        }
    location = defs.get("LocationConfig")
    if location is not None:
        by_job = {
            "title": "job evidence",
            "type": "object",
            "properties": {key: {"type": "string"} for key in ("job", "source", "vmid")},
            "required": ["job"],
            "additionalProperties": False,
        }
        location["properties"]["evidence"] = {
            "anyOf": [*evidence, by_job],
            "description": "where the copies are seen: a job evidence selector, or {job: NAME}",
        }
    return {"$schema": SCHEMA_DIALECT, **schema}
