"""``kind: truenas``: storage, scrub and cloud-sync tasks from the TrueNAS JSON-RPC 2.0 API."""

KIND = "truenas"
