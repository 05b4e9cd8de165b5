from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from exporter.vzdump import parse_archive_name, parse_volid, split_volid

BERLIN = ZoneInfo("Europe/Berlin")


def local_ts(*fields: int, tz: ZoneInfo = BERLIN) -> float:
    return datetime(*fields, tzinfo=tz).timestamp()  # type: ignore[misc]


# Every archive extension of Storage.pm's $BACKUP_EXT_RE_2 (docs/backends.md §1.1).
@pytest.mark.parametrize(
    ("ext", "compression"),
    [
        ("vma", None),
        ("vma.zst", "zst"),
        ("vma.gz", "gz"),
        ("vma.lzo", "lzo"),
        ("vma.bz2", "bz2"),
        ("tar", None),
        ("tar.zst", "zst"),
        ("tar.gz", "gz"),
        ("tar.lzo", "lzo"),
        ("tar.bz2", "bz2"),
        ("tgz", "gz"),
    ],
)
def test_every_extension(ext: str, compression: str | None) -> None:
    name = parse_archive_name(f"vzdump-qemu-100-2026_01_29-21_00_03.{ext}", "UTC")
    assert name is not None
    assert name.format == ext
    assert name.compression == compression
    assert name.vmid == 100
    assert name.guest_type == "qemu"
    assert not name.pbs
    assert name.ctime == datetime(2026, 1, 29, 21, 0, 3, tzinfo=UTC).timestamp()


def test_docs_example_and_guest_types() -> None:
    # pve-docs vzdump.adoc "Backup File Names" example.
    lxc = parse_archive_name("vzdump-lxc-105-2009_10_09-11_04_43.tar")
    assert lxc is not None
    assert (lxc.guest_type, lxc.vmid) == ("lxc", 105)
    old = parse_archive_name("vzdump-openvz-999999999-2012_01_01-00_00_00.tgz")
    assert old is not None
    assert (old.guest_type, old.vmid) == ("openvz", 999999999)


def test_name_is_node_local_time() -> None:
    name = "vzdump-qemu-100-2026_01_29-21_00_03.vma.zst"
    winter = parse_archive_name(name, "Europe/Berlin")
    assert winter is not None
    assert winter.ctime == local_ts(2026, 1, 29, 21, 0, 3)
    # CET is UTC+1 in January: the same wall clock is one hour earlier than in UTC.
    utc = parse_archive_name(name, UTC)
    assert utc is not None
    assert utc.ctime - winter.ctime == 3600
    summer = parse_archive_name("vzdump-qemu-100-2026_07_29-21_00_03.vma.zst", BERLIN)
    assert summer is not None
    assert summer.ctime == datetime(2026, 7, 29, 19, 0, 3, tzinfo=UTC).timestamp()


def test_ambiguous_and_missing_local_times() -> None:
    # 2026-10-25 02:30 happens twice in Berlin: the first (CEST) occurrence is taken.
    twice = parse_archive_name("vzdump-qemu-100-2026_10_25-02_30_00.vma", BERLIN)
    assert twice is not None
    assert twice.ctime == datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp()
    # 2026-03-29 02:30 does not exist in Berlin: read with the offset before the gap (CET).
    gap = parse_archive_name("vzdump-qemu-100-2026_03_29-02_30_00.vma", BERLIN)
    assert gap is not None
    assert gap.ctime == datetime(2026, 3, 29, 1, 30, tzinfo=UTC).timestamp()


def test_paths_and_file_volids() -> None:
    by_path = parse_archive_name("/mnt/pve/nas/dump/vzdump-lxc-101-2026_01_29-21_04_11.tar.zst")
    assert by_path is not None
    assert by_path.vmid == 101
    volid = parse_volid("nas-backup:backup/vzdump-lxc-101-2026_01_29-21_04_11.tar.zst", BERLIN)
    assert volid == by_path.__class__(
        vmid=101,
        guest_type="lxc",
        ctime=local_ts(2026, 1, 29, 21, 4, 11),
        format="tar.zst",
        compression="zst",
    )


def test_pbs_volids_are_utc() -> None:
    vm = parse_volid("pbs:backup/vm/100/2026-01-29T21:00:03Z", BERLIN)
    assert vm is not None
    assert vm.pbs
    assert (vm.vmid, vm.guest_type, vm.format) == (100, "qemu", "pbs-vm")
    assert vm.ctime == datetime(2026, 1, 29, 21, 0, 3, tzinfo=UTC).timestamp()
    ct = parse_volid("pbs-offsite:backup/ct/101/2026-01-29T21:04:11Z")
    assert ct is not None
    assert (ct.vmid, ct.guest_type, ct.format, ct.compression) == (101, "lxc", "pbs-ct", None)


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "vzdump-qemu-100-2026_01_29-21_00_03.log",
        "vzdump-qemu-100-2026_01_29-21_00_03.vma.zst.notes",
        "vzdump-qemu-100-2026_01_29-21_00_03.vma.zst.protected",
        "vzdump-qemu-100-2026_01_29-21_00_03.vma.xz",
        "vzdump-qemu-100-2026_01_29-21_00_03.zip",
        "vzdump-qemu-099-2026_01_29-21_00_03.vma",  # leading zero
        "vzdump-qemu-99-2026_01_29-21_00_03.vma",  # two digits
        "vzdump-qemu-1000000000-2026_01_29-21_00_03.vma",  # ten digits
        "vzdump-kvm-100-2026_01_29-21_00_03.vma",
        "vzdump-qemu-100-2026_02_30-21_00_03.vma",  # no such day
        "vzdump-qemu-100-2026_01_29-25_00_03.vma",  # no such hour
        "vzdump-qemu-100-2026-01-29-21_00_03.vma",
        "vzdump-qemu-web-2026_01_29-21_00_03.vma",
        "my-backup.vma.zst",
        "vzdump-qemu-100-2026_01_29-21_00_03.vma.zst\nx",
        "vzdump-qemu-100-2026_01_29-21_00_03.vma.zst\n",  # `$` would match before "\n"
        "vzdump-qemu-１００-2026_01_29-21_00_03.vma",  # fullwidth digits
        "vzdump-qemu-100-２０２６_01_29-21_00_03.vma",  # int() would accept these
    ],
)
def test_junk_names(junk: str) -> None:
    assert parse_archive_name(junk, BERLIN) is None
    assert parse_volid(f"nas:backup/{junk}", BERLIN) is None


@pytest.mark.parametrize(
    "volid",
    [
        "no-storage-prefix",
        ":backup/vzdump-qemu-100-2026_01_29-21_00_03.vma",
        "nas:",
        "nas:iso/vzdump-qemu-100-2026_01_29-21_00_03.vma",
        "pbs:backup/host/pve1/2026-01-29T21:00:03Z",  # host backups belong to no guest
        "pbs:backup/vm/abc/2026-01-29T21:00:03Z",
        "pbs:backup/vm/100/2026-01-29T21:00:03",  # no Z
        "pbs:backup/vm/100/2026-13-29T21:00:03Z",
        "pbs:backup/vm/100/2026-01-29T21:00:03Z/extra",
    ],
)
def test_junk_volids(volid: str) -> None:
    assert parse_volid(volid, BERLIN) is None


def test_split_volid() -> None:
    assert split_volid("truenas-backups:backup/x.vma") == ("truenas-backups", "backup/x.vma")
    assert split_volid("pbs:backup/vm/100/2026-01-29T21:00:03Z") == (
        "pbs",
        "backup/vm/100/2026-01-29T21:00:03Z",
    )
    assert split_volid("nothing") is None
