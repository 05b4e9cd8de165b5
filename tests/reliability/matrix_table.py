"""The fault matrix's cells, filled by test_fault_matrix and printed at the end of the run."""

from __future__ import annotations

#: (kind, fault) -> "ok <reason>", "n/a: why" or "FAIL: what"
CELLS: dict[tuple[str, str], str] = {}


def render() -> str:
    """The matrix as a text table: one row per fault, one column per kind."""
    if not CELLS:
        return ""
    kinds = sorted({k for k, _ in CELLS})
    faults = list(dict.fromkeys(f for _, f in CELLS))
    width = max(len(k) for k in kinds) + 2
    rows = [f"{'fault':14}" + "".join(f"{k:>{max(width, 16)}}" for k in kinds)]
    notes: dict[str, int] = {}
    for fault in faults:
        cells = []
        for kind in kinds:
            text = CELLS.get((kind, fault), "")
            if text.startswith("n/a"):
                number = notes.setdefault(text[5:], len(notes) + 1)
                text = f"n/a[{number}]"
            elif text.startswith("FAIL"):
                text = "FAIL"
            cells.append(f"{text:>{max(width, 16)}}")
        rows.append(f"{fault:14}" + "".join(cells))
    rows += [f"  [{n}] {why}" for why, n in notes.items()]
    failures = [f"  {k}/{f}: {t}" for (k, f), t in CELLS.items() if t.startswith("FAIL")]
    return "\n".join(rows + failures)
