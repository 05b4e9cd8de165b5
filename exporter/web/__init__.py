"""Web security of the exporter's HTTP listener: the Prometheus exporter-toolkit web config.

``--web.config.file`` points at a YAML file in the format every Prometheus exporter shares
(prometheus/exporter-toolkit, docs/web-configuration.md): ``tls_server_config``,
``http_server_config``, ``basic_auth_users`` and ``rate_limit``. :mod:`.config` reads and
validates it, :mod:`.tls` builds the server TLS context, :mod:`.auth` checks basic auth
(bcrypt off the event loop, with a cache) and limits failed attempts per client, and
:mod:`.security` puts them together as an aiohttp middleware and a listener that SIGHUP
re-arms with the re-read file.
"""
