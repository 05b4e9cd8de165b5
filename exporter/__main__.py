"""Run the exporter as ``python -m exporter``."""

from exporter.core.cli import main

raise SystemExit(main())
