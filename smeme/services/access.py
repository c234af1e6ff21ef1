"""Who may act in the app: viewer mode and who may stop a job.

Environment:
- SMEME_VIEWER=1: read-only viewer mode for serving a class. Visitors open runs, step
  through rounds and compare (read-only work such as heatmaps still runs); training,
  S-MEME rounds, stopping jobs and uploads are refused here, in the services, and the
  pages hide those widgets.
- SMEME_SINGLE_USER=1 / 0: whether any session may stop any job. Default: on when the
  server listens on localhost only (one person at one machine), off otherwise and in
  viewer mode; when off, a job is stopped only by the session that started it.
"""
from __future__ import annotations

import os

_TRUE = ("1", "true", "yes", "on")
_LOCAL = ("localhost", "127.0.0.1", "::1")

VIEWER_MESSAGE = ("This app is in viewer mode (SMEME_VIEWER=1): you can open runs, step through rounds and "
                  "compare; training, S-MEME rounds, stopping jobs and uploads are turned off.")


class ReadOnlyError(PermissionError):
    """The app is in viewer mode, or the job belongs to another session; the message says which."""


def viewer_mode() -> bool:
    return os.environ.get("SMEME_VIEWER", "").strip().lower() in _TRUE


def single_user(server_address: str | None = None) -> bool:
    """True when every session may stop every job (see the module docstring)."""
    env = os.environ.get("SMEME_SINGLE_USER", "").strip().lower()
    if env:
        return env in _TRUE
    if viewer_mode():
        return False
    return (server_address or "localhost").strip().lower() in _LOCAL


def require_writer() -> None:
    """Raise ReadOnlyError in viewer mode (call before anything is written)."""
    if viewer_mode():
        raise ReadOnlyError(VIEWER_MESSAGE)


def may_stop(job, who: str | None, server_address: str | None = None) -> bool:
    if viewer_mode():
        return False
    return single_user(server_address) or (job.owner is not None and job.owner == who)


def require_may_stop(job, who: str | None, server_address: str | None = None) -> None:
    require_writer()
    if not may_stop(job, who, server_address):
        raise ReadOnlyError(f"'{job.label or job.kind}' was started by another visitor; only that session "
                            "can stop it.")
