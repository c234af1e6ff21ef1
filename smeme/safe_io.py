"""Reading files a user controls: a data file, a run's JSON, a bundle's members.

Every read here checks what the path is before reading a byte: `stat` must show a regular
file before it is opened; it is then opened without blocking (a FIFO swapped in meanwhile
would otherwise hang the reader) and without following a final symbolic link where the
caller says so, and `fstat` must again show a regular file (not a device such as /dev/zero, a
FIFO, a socket or a folder) no larger than the caller's cap, and no more than the cap is ever
read (a file that grows meanwhile is refused too). Failures raise the caller's own error type
with one sentence naming the file, so each layer keeps its error (DataError, StoreError, ...).

JSON is parsed only after that, and a document nested deeper than MAX_JSON_DEPTH (which the
parser would meet with RecursionError, and recursive code after it too) is refused.
"""
from __future__ import annotations

import errno
import json
import os
import stat

MAX_JSON_BYTES = 64 << 20  # a run's config.json / metrics.json
MAX_JSON_DEPTH = 64  # a run's config nests 4 levels, its metrics about 6


def size_text(n: int) -> str:
    """A byte count as people read it: '256 MiB', '2 GiB', '900 bytes'."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):g} GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):g} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):g} KiB"
    return f"{n} bytes"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def read_capped_bytes(path, limit: int, error: type[Exception], what: str | None = None,
                      follow_links: bool = True) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them; else `error` naming
    the file (`what`, default the path). With follow_links=False a final symbolic link is
    refused, so a link inside a run never makes a reader leave the run."""
    name = what or f"'{os.fspath(path)}'"
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:  # what the path is, before it is opened at all (a device is never opened)
        mode = (os.stat if follow_links else os.lstat)(path).st_mode
    except OSError as exc:
        raise error(f"{name} cannot be read: {exc.strerror or exc}.") from None
    if stat.S_ISLNK(mode):
        raise error(f"{name} is a symbolic link; it is not followed.")
    if not stat.S_ISREG(mode):
        raise error(f"{name} is {_kind(mode)}, not a regular file; it is not read.")
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise error(f"{name} is a symbolic link; it is not followed.") from None
        raise error(f"{name} cannot be read: {exc.strerror or exc}.") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{name} is {_kind(info.st_mode)}, not a regular file; it is not read.")
        if info.st_size > limit:
            raise error(f"{name} is {size_text(info.st_size)}, more than the {size_text(limit)} that may be read.")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise error(f"{name} grew past the {size_text(limit)} that may be read.")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{name} cannot be read: {exc.strerror or exc}.") from None
    finally:
        os.close(fd)


def json_depth_exceeds(obj, max_depth: int) -> bool:
    """Whether `obj` (parsed JSON) nests containers deeper than `max_depth` (no recursion)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > max_depth:
                return True
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return False


def parse_json(blob: bytes, error: type[Exception], name: str, max_depth: int = MAX_JSON_DEPTH):
    """Parse JSON bytes; `error` (one sentence naming `name`) when it is not UTF-8 JSON or
    nests deeper than `max_depth`."""
    try:
        obj = json.loads(blob.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{name} is damaged: it is not valid JSON (not UTF-8 text at byte {exc.start}).") from None
    except RecursionError:
        raise error(f"{name} is damaged: it nests deeper than {max_depth} levels.") from None
    except ValueError as exc:  # json.JSONDecodeError, and out-of-range numbers
        raise error(f"{name} is damaged: it is not valid JSON ({exc}).") from None
    if json_depth_exceeds(obj, max_depth):
        raise error(f"{name} is damaged: it nests deeper than {max_depth} levels.")
    return obj


def read_json(path, error: type[Exception], what: str | None = None, limit: int | None = None,
              follow_links: bool = False, max_depth: int = MAX_JSON_DEPTH):
    """A JSON file a user controls (a run's config.json or metrics.json): regular, at most
    `limit` bytes (default MAX_JSON_BYTES), by default not a symbolic link, depth-guarded;
    else `error` naming the file."""
    name = what or f"'{os.fspath(path)}'"
    limit = MAX_JSON_BYTES if limit is None else limit
    blob = read_capped_bytes(path, limit, error, name, follow_links=follow_links)
    return parse_json(blob, error, name, max_depth)
