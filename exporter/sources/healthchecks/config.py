"""The ``kind: healthchecks`` configuration keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from exporter.core.config import Secret, Section, SourceConfig, SourceConfigBase

DEFAULT_URL = "https://healthchecks.io"


#: Healthchecks' API keys (read-write and read-only) are 32 characters (``hc/api/decorators``).
KEY_LENGTH = 32


# ------------------------------------------------------------------------------ config


@dataclass(frozen=True, kw_only=True)
class HealthchecksConfig(SourceConfig):
    """The ``kind: healthchecks`` keys."""

    url: str = DEFAULT_URL
    api_key: Secret = field(default_factory=lambda: Secret(""))
    tags: tuple[str, ...] = ()
    jobs: bool = True
    pings: bool = False
    verify_tls: bool = True
    ca_file: Path | None = None


def _base_url(text: str) -> URL:
    """Validate ``url`` (http(s), a host, no query or fragment) and return it parsed."""
    url = URL(text.strip())
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"must be an http(s) URL such as {DEFAULT_URL}, got {text!r}")
    if url.query_string or url.fragment:
        raise ValueError("must not have a query or fragment")
    return url


def parse(sec: Section, base: SourceConfigBase) -> HealthchecksConfig:
    """Read the ``kind: healthchecks`` keys."""
    url = sec.str("url", DEFAULT_URL)
    try:
        _base_url(url)
    except ValueError as exc:
        sec.problem("url", str(exc))
    api_key = sec.secret("api_key") or Secret("")
    if api_key.reveal() and len(api_key.reveal()) != KEY_LENGTH:
        where = "api_key_file" if sec.has("api_key_file") else "api_key"
        sec.problem(
            where,
            f"a Healthchecks API key has {KEY_LENGTH} characters, this one has "
            f"{len(api_key.reveal())} (Settings → API Access; the read-only key is enough)",
        )
    tags = sec.str_list("tags")
    for tag in tags:
        if not tag or any(ch.isspace() for ch in tag):
            sec.problem("tags", f"a tag is one word without spaces, got {tag!r}")
    tls = sec.tls()
    return HealthchecksConfig(
        name=base.name,
        kind=base.kind,
        interval=base.interval,
        timeout=base.timeout,
        jitter=base.jitter,
        url=url,
        api_key=api_key,
        tags=tags,
        jobs=sec.bool("jobs", True),
        pings=sec.bool("pings", False),
        verify_tls=tls.verify,
        ca_file=tls.ca_file,
    )
