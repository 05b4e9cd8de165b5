"""Backup files on disk (``kind: files``): newest mtime, count and total size of a glob."""

KIND = "files"
