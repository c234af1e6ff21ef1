"""Numbers as the pages say them: durations in s / min, and every share in percent."""
from __future__ import annotations

import math


def duration(seconds: float | None) -> str:
    """'40 s', '3 min', '1 h 5 min'; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 90:
        return f"{max(1, round(seconds)):.0f} s"
    if seconds < 5400:
        return f"{round(seconds / 60):.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours:.0f} h {minutes:.0f} min"


def percent(share: float | None, digits: int = 1) -> str:
    """A share (0..1) in percent: 0.965 -> '96.5%'; '?' when unknown."""
    if share is None or not isinstance(share, (int, float)) or not math.isfinite(share):
        return "?"
    return f"{100 * share:.{digits}f}%"
