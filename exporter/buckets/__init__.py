"""The bucket engine shared by ``kind: b2`` and ``kind: s3``: listings and restore checks."""
