"""A one-line text progress bar on stderr (the command line's)."""
from __future__ import annotations

import sys
import time


class Bar:
    """A one-line text progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, enabled: bool | None = None):
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = 0.0

    def __call__(self, done: int, total: int, loss: float | None = None) -> None:
        now = time.monotonic()
        if not self.enabled or (done < total and now - self._last < 0.1):
            return
        self._last = now
        width = 30
        filled = int(width * done / max(total, 1))
        tail = f" loss {loss:.4f}" if loss is not None else ""
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}{tail}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
