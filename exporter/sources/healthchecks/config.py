"""The ``kind: healthchecks`` configuration keys and job evidence selector."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import field_validator
from pydantic.dataclasses import dataclass
from yarl import URL

from exporter.core.config import EvidenceSelector, KindSpec, Secret, SourceConfig, tls_problems
from exporter.core.fields import STRICT, Bool, ConfigPath, Duration, Loc, StrList, Text, problem

DEFAULT_URL = "https://healthchecks.io"
#: Healthchecks' API keys (read-write and read-only) are 32 characters (``hc/api/decorators``).
KEY_LENGTH = 32


def _base_url(text: str) -> URL:
    """Validate ``url`` (http(s), a host, no query or fragment) and return it parsed."""
    url = URL(text.strip())
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"must be an http(s) URL such as {DEFAULT_URL}, got {text!r}")
    if url.query_string or url.fragment:
        raise ValueError("must not have a query or fragment")
    return url


@dataclass(frozen=True, kw_only=True, config=STRICT)
class HealthchecksConfig(SourceConfig):
    """The ``kind: healthchecks`` keys."""

    kind: Literal["healthchecks"] = "healthchecks"
    interval: Duration = 300.0
    timeout: Duration = 30.0
    url: Text = DEFAULT_URL
    api_key: Secret = Secret("")
    tags: StrList = ()
    jobs: Bool = True
    pings: Bool = False
    verify_tls: Bool = True
    ca_file: ConfigPath | None = None

    def discovered_job_prefixes(self) -> tuple[str, ...]:
        """Return ``hc-<check>`` while ``jobs: true``."""
        return ("hc-",) if self.jobs else ()

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        try:
            _base_url(url)
        except ValueError as exc:
            raise problem(str(exc)) from None
        return url

    @field_validator("tags")
    @classmethod
    def _words(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        for tag in tags:
            if not tag or any(ch.isspace() for ch in tag):
                raise problem(f"a tag is one word without spaces, got {tag!r}")
        return tags

    @classmethod
    def prepare(
        cls, raw: dict[str, Any], found: list[tuple[Loc, str]], context: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Read the API key and check its length."""
        from_file = "api_key_file" in raw
        raw = super().prepare(raw, found, context)
        key = raw["api_key"].reveal()
        if key and len(key) != KEY_LENGTH:
            where = "api_key_file" if from_file else "api_key"
            found.append(
                (
                    (where,),
                    f"a Healthchecks API key has {KEY_LENGTH} characters, this one has "
                    f"{len(key)} (Settings → API Access; the read-only key is enough)",
                )
            )
        return raw

    def problems(self, context: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """Run the common checks and check ``ca_file``."""
        yield from super().problems(context)
        yield from tls_problems(self.verify_tls, self.ca_file)


@dataclass(frozen=True, kw_only=True, config=STRICT)
class HealthchecksEvidence(EvidenceSelector):
    """``{source, check}``: a check's label, slug or name."""

    check: Text


SPEC = KindSpec(
    config=HealthchecksConfig,
    evidence=HealthchecksEvidence,
    source="exporter.sources.healthchecks.source:HealthchecksSource",
)
