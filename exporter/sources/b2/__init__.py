"""Backblaze B2 buckets (``kind: b2``) through b2sdk's ``b2sdk.v3`` API."""

KIND = "b2"
