"""The helper catalogue: which names exist, in which form, and the compile-time ones' values."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

# Called as `sel.name(args)`. json()/xml() are decoders and become selector steps in the parser.
METHODS: Final = frozenset({"startsWith", "endsWith", "contains", "matches", "json", "xml"})

# Called as `name(args)`.
UNIT_MS: Final[dict[str, int]] = {
    "seconds": 1_000,
    "minutes": 60_000,
    "hours": 3_600_000,
    "days": 86_400_000,
    "weeks": 604_800_000,
    # Not in KFL.md; kept because Kubeshark has them (a month is 30 days, a year 365).
    "months": 30 * 86_400_000,
    "years": 365 * 86_400_000,
}
FUNCTIONS: Final = frozenset({"size", "datetime", "now", "limit", "redact", *UNIT_MS})

# Kubeshark's datetime() layout is Go's "1/2/2006, 3:04:05.000 PM": month/day/year, a 12-hour
# clock, milliseconds, AM/PM, read as UTC. We also take it without ".mmm" (older docs show that
# form), any amount of spacing, and am/pm in either case.
_DATETIME: Final = re.compile(
    r"\s*([0-9]{1,2})/([0-9]{1,2})/([0-9]{4}),\s*([0-9]{1,2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{3}))?\s*([AaPp][Mm])\s*\Z"
)
DATETIME_EXAMPLE: Final = "10/19/2021, 6:29:02.593 PM"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


def parse_datetime(text: str) -> int | None:
    """Milliseconds since the epoch (UTC) for a Kubeshark datetime text, or None if malformed."""
    m = _DATETIME.match(text)
    if m is None:
        return None
    month, day, year, hour, minute, second = (int(g) for g in m.groups()[:6])
    millis = int(m.group(7) or 0)
    if not 1 <= hour <= 12:
        return None
    hour = hour % 12 + (12 if m.group(8).lower() == "pm" else 0)
    try:
        when = datetime(year, month, day, hour, minute, second, millis * 1000, tzinfo=UTC)
    except ValueError:  # 2/30/2021, 61 seconds, …
        return None
    return (when - _EPOCH) // _MS
