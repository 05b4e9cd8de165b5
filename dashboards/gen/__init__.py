"""The dashboards' generator: shared panel helpers (``common``) and one module per dashboard."""
