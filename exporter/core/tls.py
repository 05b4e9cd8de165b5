"""Build the client TLS context of the aiohttp-based kinds from ``verify_tls`` and ``ca_file``."""

from __future__ import annotations

import ssl

from exporter.core.config import TLSConfig
from exporter.sources.base import FetchError


def client_ssl_context(tls: TLSConfig) -> ssl.SSLContext | bool:
    """Return aiohttp's ``ssl=``: ``False`` without verification, else a verifying context.

    The context trusts ``ca_file`` when given, the system CAs otherwise. An unusable
    ``ca_file`` (removed or not PEM since the config was read) is a ``tls`` FetchError.
    """
    if not tls.verify:
        return False
    try:
        return ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise FetchError("tls", f"cannot load ca_file {tls.ca_file}: {exc}") from None


class ClientSSL:
    """One source's client context, built on first use and then reused.

    Building reads ``ca_file``; a failure is raised again on the next use, not cached.
    """

    def __init__(self, tls: TLSConfig) -> None:
        self.tls = tls
        self._ssl: ssl.SSLContext | bool | None = None

    def get(self) -> ssl.SSLContext | bool:
        """Return aiohttp's ``ssl=`` (see :func:`client_ssl_context`)."""
        if self._ssl is None:
            self._ssl = client_ssl_context(self.tls)
        return self._ssl
