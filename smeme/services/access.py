"""Who may act in the app: viewer mode and who may stop a job.

Environment:
- SMEME_VIEWER=1: read-only viewer mode for serving a class. Visitors open runs, step
  through rounds and compare (read-only work such as heatmaps still runs); training,
  S-MEME rounds, stopping jobs and uploads are refused here, in the services, and the
  pages hide those widgets.
- SMEME_SINGLE_USER=1: the explicit single-user switch (one person at one machine): any
  session may stop any job. Off by default, whatever the server's address (behind a
  reverse proxy on localhost every visitor arrives from localhost): a job is stopped only
  by the session that started it. Viewers never stop a job, whatever this says.
"""
from __future__ import annotations

import os

_TRUE = ("1", "true", "yes", "on")

VIEWER_MESSAGE = ("This app is in viewer mode (SMEME_VIEWER=1): you can open runs, step through rounds and "
                  "compare; training, S-MEME rounds, stopping jobs and uploads are turned off.")


class ReadOnlyError(PermissionError):
    """The app is in viewer mode, or the job belongs to another session; the message says which."""


def viewer_mode() -> bool:
    return os.environ.get("SMEME_VIEWER", "").strip().lower() in _TRUE


def single_user(server_address: str | None = None) -> bool:
    """True when every session may stop every job: only with SMEME_SINGLE_USER=1 and never in
    viewer mode. `server_address` is accepted for the callers' sake and not used: the address
    a server listens on says nothing about who reaches it (a reverse proxy)."""
    if viewer_mode():
        return False
    return os.environ.get("SMEME_SINGLE_USER", "").strip().lower() in _TRUE


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
