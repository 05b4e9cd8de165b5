"""The ZFS/SMART storage model shared by ``kind: truenas``, ``kind: zfs`` and ``kind: smartctl``."""
