"""Files that are read again when they change: certificates, users, keys.

Kubernetes updates a mounted Secret by swapping a symlink (``..data``), so
the file's inode, size or modification time change while its path stays the
same. :class:`Watched` keeps what was loaded from a file and loads it again
when any of those changed — checked at most once per ``interval`` seconds,
on use, so nothing runs in the background and a file that is used rarely
costs nothing. A new version that cannot be loaded is logged and the last
good one kept: a bad Secret update never takes a running service down.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from prometheus_client import Counter

log = logging.getLogger(__name__)

RELOADS = Counter(
    "mailyard_file_reloads_total",
    "Watched files (certificates, users, keys) loaded again after a change, by result",
    ["key", "result"],  # the configuration key; ok | failed
)

T = TypeVar("T")

Stamp = tuple[int, int, int, int]  # device, inode, size, mtime in ns


class FileProblem(Exception):
    """A file named in the configuration cannot be used; the message names its key."""


def stamp(path: Path) -> Stamp:
    info = os.stat(path)  # follows symlinks: the Secret's current version
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


class Watched(Generic[T]):
    """``load(paths)`` once now (raising :class:`FileProblem` naming ``key``), then on change."""

    def __init__(
        self,
        key: str,
        paths: tuple[Path, ...],
        load: Callable[[tuple[Path, ...]], T],
        *,
        interval: float = 1.0,
        on_reload: Callable[[T], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.paths = paths
        self._load = load
        self.interval = interval
        self._on_reload = on_reload
        self._clock = clock
        try:
            self._stamps = self._read_stamps()
            self._value = load(paths)
        except FileProblem:
            raise
        except (OSError, ValueError) as exc:
            raise FileProblem(f"{key}: {describe(exc)}") from exc
        self._checked = clock()
        self.reloads = 0
        for result in ("ok", "failed"):
            RELOADS.labels(key, result)  # zero series from the start

    @property
    def value(self) -> T:
        """The current version (loaded again first if a file changed)."""
        now = self._clock()
        if now - self._checked >= self.interval:
            self._checked = now
            self._refresh()
        return self._value

    def _read_stamps(self) -> tuple[Stamp, ...]:
        return tuple(stamp(path) for path in self.paths)

    def _refresh(self) -> None:
        try:
            stamps = self._read_stamps()
        except OSError as exc:
            log.warning(
                "a watched file is gone; keeping what was loaded",
                extra={"key": self.key, "error": describe(exc)},
            )
            return
        if stamps == self._stamps:
            return
        try:
            value = self._load(self.paths)
        except (OSError, ValueError, FileProblem) as exc:
            log.error(
                "a watched file changed but cannot be loaded; keeping the last good version",
                extra={"key": self.key, "error": describe(exc)},
            )
            self._stamps = stamps  # do not retry every second; wait for the next change
            RELOADS.labels(self.key, "failed").inc()
            return
        self._stamps = stamps
        self._value = value
        self.reloads += 1
        RELOADS.labels(self.key, "ok").inc()
        log.info("reloaded", extra={"key": self.key, "files": [str(p) for p in self.paths]})
        if self._on_reload is not None:
            self._on_reload(value)


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        name = f" {exc.filename}" if exc.filename else ""
        return f"cannot read{name}: {exc.strerror}"
    return str(exc) or type(exc).__name__
