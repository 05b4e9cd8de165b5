"""The ``kind: proxmox`` configuration keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from exporter.core.config import Secret, Section, SourceConfig, SourceConfigBase

DEFAULT_GRACE = 6 * 3600.0
DEFAULT_START_GRACE = 3600.0
DEFAULT_TASKS_LIMIT = 200


_TOKEN_ID_RE = re.compile(
    r"(?P<user>[^\s:/@!]+@[A-Za-z][A-Za-z0-9._-]*)!(?P<name>[A-Za-z][A-Za-z0-9._-]*)"
)


# --------------------------------------------------------------------------------- config


@dataclass(frozen=True, kw_only=True)
class ProxmoxConfig(SourceConfig):
    """Settings of one ``kind: proxmox`` source.

    ``timezone`` is the nodes' local zone for schedules and vzdump file names; an empty string
    means "the configuration's top-level ``timezone:``", which the config loader fills in
    (``dataclasses.replace``); if it stays empty, UTC is used.
    """

    url: str
    host: str
    port: int
    token_id: str
    token_secret: Secret
    verify: bool | str  # True, False or the path of a CA bundle
    timezone: str = ""
    tasks_limit: int = DEFAULT_TASKS_LIMIT
    job_grace: float = DEFAULT_GRACE
    job_start_grace: float = DEFAULT_START_GRACE

    @property
    def zone(self) -> str:
        """The effective time zone name."""
        return self.timezone or "UTC"


def parse_url(url: str) -> tuple[str, int]:
    """Return ``(host, port)`` of ``https://host[:port]``; raise ValueError otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme != "https":
        raise ValueError(f"must be https://host[:port] (proxmoxer speaks HTTPS only), got {url!r}")
    try:
        port = parts.port or 8006
    except ValueError:
        raise ValueError(f"invalid port in {url!r}") from None
    host = parts.hostname
    if not host or parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"must be https://host[:port], got {url!r}")
    if parts.path not in ("", "/"):
        raise ValueError(f"must be https://host[:port] without a path, got {url!r}")
    return (f"[{host}]" if ":" in host else host), port


def parse(sec: Section, base: SourceConfigBase) -> ProxmoxConfig:
    """Read the keys of a ``kind: proxmox`` source."""
    url = sec.str("url", required=True)
    host, port = "", 8006
    if url:
        try:
            host, port = parse_url(url)
        except ValueError as exc:
            sec.problem("url", str(exc))
    token_id = sec.str("token_id", required=True)
    if token_id and not _TOKEN_ID_RE.fullmatch(token_id):
        sec.problem("token_id", f"must look like user@realm!tokenname, got {token_id!r}")
    secret = sec.secret("token_secret") or Secret("")
    verify = sec.tls().requests_verify
    timezone = sec.timezone("timezone", "")
    tasks_limit = sec.int("tasks_limit", DEFAULT_TASKS_LIMIT, minimum=1)
    grace = sec.duration("job_grace", DEFAULT_GRACE)
    start_grace = sec.duration("job_start_grace", DEFAULT_START_GRACE)
    if start_grace > grace:
        sec.problem("job_start_grace", "must not be longer than job_grace")
    return ProxmoxConfig(
        name=base.name,
        kind=base.kind,
        interval=base.interval,
        timeout=base.timeout,
        jitter=base.jitter,
        url=url,
        host=host,
        port=port,
        token_id=token_id,
        token_secret=secret,
        verify=verify,
        timezone=timezone,
        tasks_limit=tasks_limit,
        job_grace=grace,
        job_start_grace=start_grace,
    )
