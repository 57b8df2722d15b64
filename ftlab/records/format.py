"""How recorded values read in a table: times, durations, numbers and hashes, the same in `ftlab runs` and on the
dashboard. `missing` is what an absent value shows: the page uses an en dash, the terminal an ASCII '-'."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

DASH = "–"
HEX = frozenset("0123456789abcdef")


def when(ts: int | None, missing: str = DASH) -> str:
    """A Unix time as `YYYY-MM-DD HH:MM:SS` (UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else missing


def duration(start: int | None, end: int | None, missing: str = DASH) -> str:
    """From start to end (or to now, while running) as `1h02m` or `3m05s`."""
    if not start:
        return missing
    seconds = (end or int(datetime.now(UTC).timestamp())) - start
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def value(v: Any, missing: str = DASH) -> str:
    """A table cell: floats to 4 significant digits, a sha256 to its first 12 hex digits (enough to tell files
    apart in a table; pages that must show it whole print it as it is), anything else as `str`."""
    if v is None:
        return missing
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, str) and len(v) == 64 and set(v) <= HEX:
        return v[:12]
    return str(v)
