"""Lenient readers of decoded JSON values, shared by the ``zfs`` and ``smartctl`` parsers.

Each returns an empty or ``None`` value instead of raising when the value has another type.
"""

from __future__ import annotations


def as_dict(value: object) -> dict[str, object]:
    """Return ``value`` when it is a dict, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_int(value: object) -> int | None:
    """Return an int, an integral float or a decimal string as an int; ``None`` otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def as_num(value: object) -> float | None:
    """Return an int or float (not a bool) as a float; ``None`` otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def as_str(value: object) -> str:
    """Return a string stripped of surrounding white space; ``""`` for anything else."""
    return value.strip() if isinstance(value, str) else ""
