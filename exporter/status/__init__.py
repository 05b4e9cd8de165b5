"""The status page, ``/api/status`` and the ``report`` command: one document, three views."""
