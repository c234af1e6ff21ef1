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


def support_parts(flat: dict) -> dict | None:
    """A triangles round's off-support share split so that the shown numbers add up:
    {'off_support', 'not_triangle', 'too_large'} in percent, one decimal, with
    off_support = not_triangle + too_large exactly as displayed. On support means a valid
    triangle (the triangle inequality holds) whose longest side is below 1 (the data's range;
    smeme.data.triangles.TriangleDomain.on_support); None without both shares."""
    on, valid = flat.get("on_support"), flat.get("validity")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (on, valid)):
        return None
    off = round(100 * (1 - on), 1)
    not_triangle = min(round(100 * (1 - valid), 1), off)
    return {"off_support": off, "not_triangle": not_triangle, "too_large": round(off - not_triangle, 1)}


def support_sentence(flat: dict) -> str:
    """'Off support 7.2% = 3.5% not a triangle + 3.7% valid but too large (longest side >= 1).'"""
    parts = support_parts(flat)
    if parts is None:
        return ""
    return (f"Off support {parts['off_support']:.1f}% = {parts['not_triangle']:.1f}% not a triangle + "
            f"{parts['too_large']:.1f}% valid but too large (longest side ≥ 1, outside the data's range).")


def dataset_content(name: str, dataset: str) -> list[tuple[str, str]]:
    """content/<name>-<dataset>.md as content blocks (services.settings.content_blocks), or []
    when that data set has no text of its own for this page."""
    from .settings import CONTENT_DIR, content_blocks

    plain = "".join(c for c in str(dataset) if c.isalnum())  # a config's name never makes a path
    return content_blocks(f"{name}-{plain}") if (CONTENT_DIR / f"{name}-{plain}.md").is_file() else []
