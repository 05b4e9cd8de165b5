"""``kind: healthchecks``: Healthchecks.io checks as metrics and job evidence."""

KIND = "healthchecks"
