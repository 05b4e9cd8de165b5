"""The runtime core: config loading, pollers, the collector, the web app, the CLI, the clock.

Nothing here knows a particular source kind; kinds plug in through :mod:`exporter.sources`.
"""
