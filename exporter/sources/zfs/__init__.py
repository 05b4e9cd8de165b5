"""``kind: zfs``: datasets, snapshot ages and scrubs from the ``zfs``/``zpool`` commands."""

KIND = "zfs"
