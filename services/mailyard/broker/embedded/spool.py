"""A durable local spool: the queues of one process in one SQLite file.

SQLite (the standard library's ``sqlite3``) in WAL mode does the storing;
we only decide what goes into which row. One thread owns the connection and
runs every statement, so the event loop never waits on the disk:

- **writes** (new items, released inputs, finished-job records, log
  entries) that arrive while a transaction is being committed wait, and go
  into the next one together: a group commit, one fsync
  (``synchronous=FULL``) for all of them. A write's future resolves only
  after its commit, and only then do new items become visible to consumers;
- **takes** (a consumer picking items up) count the delivery in the row
  without an fsync (``synchronous=NORMAL`` in WAL mode survives a process
  crash, which is what the count is for: parking an item the process keeps
  dying on).

Which items are ready, waiting on the retry ladder, or being worked on is
kept in memory (ids only; bodies stay on disk until taken) and rebuilt from
the file at start-up: after a crash, everything not released is delivered
again.

The file is locked (``flock``) for as long as it is open: one process owns
a spool. Two things are done from outside it, through SQLite's own locking
(WAL lets another connection read and, one transaction at a time, write;
the owner's connection waits out a short write with its busy timeout):
``mailyard status`` reads queue depths, and ``mailyard suppression`` reads
and appends log entries, which the owner's followers find by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import heapq
import json
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

PARKING = "parking"
FILE_NAME = "mailyard.sqlite3"
OWNER_BUSY_TIMEOUT = 5.0  # seconds; sqlite3's default, said out loud

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    type TEXT,
    message_id TEXT,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    available_at REAL NOT NULL,
    rung TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS finished (key TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    at REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_by_name ON log (name, id);
CREATE INDEX IF NOT EXISTS finished_by_age ON finished (at);
"""


class SpoolError(Exception):
    """The spool cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class NewItem:
    queue: str
    type: str | None
    message_id: str | None
    headers: dict[str, Any]
    body: bytes
    available_at: float = 0.0  # unix time; 0 means at once
    rung: str | None = None  # the retry delay it waits for, for reporting


@dataclass(frozen=True, slots=True)
class TakenItem:
    id: int
    queue: str
    type: str | None
    message_id: str | None
    headers: dict[str, Any]
    body: bytes
    deliveries: int  # before this one


@dataclass
class Write:
    """What one caller needs stored, all or nothing."""

    inserts: Sequence[NewItem] = ()
    deletes: Collection[int] = ()
    finished: Collection[str] = ()
    log_entries: Sequence[tuple[str, bytes]] = ()


@dataclass
class _Queue:
    ready: deque[int] = field(default_factory=deque)
    waiting: list[tuple[float, int, str | None]] = field(default_factory=list)  # heap
    taken: set[int] = field(default_factory=set)
    consumers: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailyard-spool")
        self._db: sqlite3.Connection | None = None
        self._lock_file: IO[bytes] | None = None
        self._queues: dict[str, _Queue] = {}
        self._pending: list[tuple[Write, asyncio.Future[list[int]]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._clock: asyncio.Task[None] | None = None
        self._log_appended: dict[str, asyncio.Event] = {}
        self._taken: dict[int, str] = {}  # item id → its queue, while a consumer has it
        self._clock_wake = asyncio.Event()
        self._committing = False
        self._idle = asyncio.Event()  # set whenever the writer has nothing to do
        self._users = 0
        self._opening: asyncio.Future[None] | None = None
        self.healthy = False

    # --- life -------------------------------------------------------------

    async def open(self) -> None:
        """Open (first user) or join (the others, once it is open)."""
        self._users += 1
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        try:
            await asyncio.shield(self._opening)
        except BaseException:
            self._users -= 1
            if self._opening.done():
                self._opening = None  # the next user tries again
            raise

    async def _open(self) -> None:
        rows = await self._run(self._open_file)
        now = time.time()
        for item_id, queue, available_at, rung in rows:
            self._add(queue, item_id, available_at, rung, now)
        self._writer = asyncio.create_task(self._write_forever(), name="spool-writer")
        self._clock = asyncio.create_task(self._release_waiting_forever(), name="spool-clock")
        self.healthy = True
        log.info("embedded spool open", extra={"path": str(self.path), "items": len(rows)})

    async def close(self) -> None:
        """Leave; the last user flushes what is pending and closes the file."""
        self._users -= 1
        if self._users > 0:
            return
        self.healthy = False
        while self._pending or self._committing:
            self._idle.clear()
            await self._idle.wait()
        for task in (self._writer, self._clock):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._run(self._close_file)
        self._queues.clear()
        self._taken.clear()
        self._opening = None

    def _open_file(self) -> list[tuple[int, str, float, str | None]]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock = (self.directory / "lock").open("wb")
        except OSError as exc:
            raise SpoolError(
                f"cannot use broker.spool_dir {self.directory}: {exc.strerror}"
            ) from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise SpoolError(
                f"the spool in {self.directory} is in use by another process "
                "(one process owns a spool: run one `mailyard all`)"
            ) from None
        self._lock_file = lock
        # The busy timeout makes a commit wait out another process's short
        # write (the command line appending to a log) instead of failing.
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=OWNER_BUSY_TIMEOUT
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._db = db
        return db.execute("SELECT id, queue, available_at, rung FROM items ORDER BY id").fetchall()

    def _close_file(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    # --- writing: group commit ---------------------------------------------

    async def write(self, write: Write) -> list[int]:
        """Store ``write`` durably; the ids of its new items, once committed."""
        if not self.healthy:
            raise SpoolError("the spool is closed")
        done: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._pending.append((write, done))
        self._wake.set()
        return await done

    async def _write_forever(self) -> None:
        while True:
            self._idle.set()
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                self._committing = True
                try:
                    ids = await self._run(self._commit, [write for write, _ in batch])
                except Exception as exc:
                    self._committing = False
                    self.healthy = False
                    log.error("spool write failed", exc_info=exc)
                    error = SpoolError(f"spool write failed: {exc}")
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(error)
                    continue
                self._committing = False
                now = time.time()
                for (write, done), new_ids in zip(batch, ids, strict=True):
                    self._apply(write, new_ids, now)
                    if not done.done():
                        done.set_result(new_ids)

    def _commit(self, writes: list[Write]) -> list[list[int]]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            ids = [self._execute(db, write) for write in writes]
            db.execute("COMMIT")  # synchronous=FULL: fsync'd before this returns
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return ids

    def _execute(self, db: sqlite3.Connection, write: Write) -> list[int]:
        ids = []
        for item in write.inserts:
            cursor = db.execute(
                "INSERT INTO items (queue, type, message_id, headers, body, available_at, rung)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    item.queue,
                    item.type,
                    item.message_id,
                    json.dumps(item.headers, default=str),
                    item.body,
                    item.available_at,
                    item.rung,
                ),
            )
            ids.append(int(cursor.lastrowid or 0))
        if write.deletes:
            db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in write.deletes])
        if write.finished:
            now = time.time()
            db.executemany(
                "INSERT OR IGNORE INTO finished (key, at) VALUES (?, ?)",
                [(key, now) for key in write.finished],
            )
        if write.log_entries:
            now = time.time()
            db.executemany(
                "INSERT INTO log (name, at, data) VALUES (?, ?, ?)",
                [(name, now, data) for name, data in write.log_entries],
            )
        return ids

    def _apply(self, write: Write, new_ids: list[int], now: float) -> None:
        """After the commit: new items become visible, released ones go."""
        for item_id in write.deletes:
            name = self._taken.pop(item_id, None)
            if name is not None:
                self._queue(name).taken.discard(item_id)
        for item, item_id in zip(write.inserts, new_ids, strict=True):
            self._add(item.queue, item_id, item.available_at, item.rung, now)
        for name, _ in write.log_entries:
            event = self._log_appended.get(name)
            if event is not None:
                event.set()

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise SpoolError("the spool is closed")
        return self._db

    # --- the in-memory index ------------------------------------------------

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue()
        return queue

    def _add(
        self, name: str, item_id: int, available_at: float, rung: str | None, now: float
    ) -> None:
        queue = self._queue(name)
        if name == PARKING:
            queue.ready.append(item_id)  # counted, never consumed
        elif available_at > now:
            heapq.heappush(queue.waiting, (available_at, item_id, rung))
            self._clock_wake.set()
        else:
            queue.ready.append(item_id)
            queue.changed.set()

    async def _release_waiting_forever(self) -> None:
        """Move items whose retry delay is over to their queue's ready line."""
        while True:
            now = time.time()
            soonest = 1.0
            for queue in self._queues.values():
                released = False
                while queue.waiting and queue.waiting[0][0] <= now:
                    _, item_id, _ = heapq.heappop(queue.waiting)
                    queue.ready.append(item_id)
                    released = True
                if released:
                    queue.changed.set()
                if queue.waiting:
                    soonest = min(soonest, queue.waiting[0][0] - now)
            self._clock_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._clock_wake.wait(), timeout=max(0.005, soonest))

    # --- consuming ---------------------------------------------------------

    def attach(self, name: str) -> asyncio.Event:
        """A consumer of ``name`` arrives; the event is set when items are ready."""
        queue = self._queue(name)
        queue.consumers += 1
        return queue.changed

    def detach(self, name: str) -> None:
        self._queue(name).consumers -= 1

    def ready_count(self, name: str) -> int:
        return len(self._queue(name).ready)

    async def take(self, name: str, limit: int) -> list[TakenItem]:
        """Up to ``limit`` ready items of ``name``, counted as delivered once more."""
        queue = self._queue(name)
        ids: list[int] = []
        while queue.ready and len(ids) < limit:
            ids.append(queue.ready.popleft())
        if not queue.ready:
            queue.changed.clear()
        if not ids:
            return []
        queue.taken.update(ids)
        self._taken.update(dict.fromkeys(ids, name))
        try:
            return list(await self._run(self._take, ids))
        except BaseException:
            queue.taken.difference_update(ids)
            for item_id in ids:
                self._taken.pop(item_id, None)
            queue.ready.extendleft(reversed(ids))
            queue.changed.set()
            raise

    def _take(self, ids: list[int]) -> list[TakenItem]:
        db = self._connection()
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            marks = ",".join("?" * len(ids))
            columns = "id, queue, type, message_id, headers, body, deliveries"
            query = f"SELECT {columns} FROM items WHERE id IN ({marks}) ORDER BY id"  # noqa: S608
            rows = db.execute(query, ids).fetchall()
            db.execute(
                f"UPDATE items SET deliveries = deliveries + 1 WHERE id IN ({marks})",  # noqa: S608
                ids,
            )
        finally:
            db.execute("PRAGMA synchronous=FULL")
        return [
            TakenItem(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6])
            for row in rows
        ]

    def give_back(self, name: str, item_id: int) -> None:
        """A taken item goes back to the front of its queue (the handler will try again)."""
        queue = self._queue(name)
        if item_id in queue.taken:
            queue.taken.discard(item_id)
            self._taken.pop(item_id, None)
            queue.ready.appendleft(item_id)
            queue.changed.set()

    # --- reading -------------------------------------------------------------

    async def finished(self, keys: Collection[str]) -> set[str]:
        return set(await self._run(self._finished, list(keys)))

    def _finished(self, keys: list[str]) -> list[str]:
        found: list[str] = []
        db = self._connection()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.extend(
                row[0]
                for row in db.execute(
                    f"SELECT key FROM finished WHERE key IN ({marks})",  # noqa: S608
                    chunk,
                )
            )
        return found

    async def forget_finished(self, older_than: float) -> None:
        await self._run(self._forget_finished, older_than)

    def _forget_finished(self, older_than: float) -> None:
        self._connection().execute("DELETE FROM finished WHERE at < ?", (older_than,))

    async def read_log(
        self, name: str, after_id: int, since: float, limit: int
    ) -> list[tuple[int, float, bytes]]:
        return list(await self._run(self._read_log, name, after_id, since, limit))

    def _read_log(
        self, name: str, after_id: int, since: float, limit: int
    ) -> list[tuple[int, float, bytes]]:
        return (
            self._connection()
            .execute(
                "SELECT id, at, data FROM log WHERE name = ? AND id > ? AND at >= ?"
                " ORDER BY id LIMIT ?",
                (name, after_id, since, limit),
            )
            .fetchall()
        )

    def log_appended(self, name: str) -> asyncio.Event:
        event = self._log_appended.get(name)
        if event is None:
            event = self._log_appended[name] = asyncio.Event()
        return event

    def depths(self) -> dict[str, tuple[int, int]]:
        """(ready items, consumers) per queue; waiting items by their retry rung."""
        depths: dict[str, tuple[int, int]] = {}
        for name, queue in self._queues.items():
            depths[name] = (len(queue.ready), queue.consumers)
            for _, _, rung in queue.waiting:
                key = f"retry.{rung}" if rung else name
                messages, consumers = depths.get(key, (0, 0))
                depths[key] = (messages + 1, consumers)
        return depths


def read_depths(directory: Path) -> dict[str, int]:
    """Items per queue in a spool another process owns (``mailyard status``): read-only."""
    path = directory / FILE_NAME
    if not path.exists():
        raise SpoolError(f"no spool at {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        now = time.time()
        depths: dict[str, int] = {}
        for queue, rung, available_at, count in db.execute(
            "SELECT queue, rung, available_at > ?, COUNT(*) FROM items GROUP BY 1, 2, 3", (now,)
        ):
            key = f"retry.{rung}" if available_at and rung else queue
            depths[key] = depths.get(key, 0) + count
        return depths
    finally:
        db.close()


# How long a writer from outside waits for the owner's commit to finish.
OUTSIDE_BUSY_TIMEOUT = 10.0


def append_log_outside(directory: Path, name: str, records: Sequence[bytes]) -> float:
    """Append to a log of a spool another process may own; returns the entries' time.

    One short transaction, fsync'd like the owner's. The spool (and its
    tables) is made when there is none yet, so a list can be filled before
    ``mailyard all`` first starts.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            directory / FILE_NAME, timeout=OUTSIDE_BUSY_TIMEOUT, isolation_level=None
        )
    except (OSError, sqlite3.Error) as exc:
        raise SpoolError(f"cannot open the spool in {directory}: {exc}") from exc
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)  # IF NOT EXISTS: nothing is written when they are there
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO log (name, at, data) VALUES (?, ?, ?)",
            [(name, now, record) for record in records],
        )
        db.execute("COMMIT")
        return now
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot append to the spool in {directory}: {exc}") from exc
    finally:
        db.close()


def read_log_outside(directory: Path, name: str, since: float) -> list[tuple[float, bytes]]:
    """(time, data) of a log's entries from ``since`` on, from a spool another
    process may own: read-only."""
    path = directory / FILE_NAME
    if not path.exists():
        raise SpoolError(f"no spool at {path}")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=OUTSIDE_BUSY_TIMEOUT)
        try:
            return db.execute(
                "SELECT at, data FROM log WHERE name = ? AND at >= ? ORDER BY id", (name, since)
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot read the spool at {path}: {exc}") from exc


def is_locked(directory: Path) -> bool:
    """Whether a process owns the spool in ``directory`` now."""
    try:
        with (directory / "lock").open("rb") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(lock, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False


def spool_size(directory: Path) -> int:
    """Bytes on disk (the file and its write-ahead log)."""
    return sum(
        os.path.getsize(directory / name)
        for name in (FILE_NAME, FILE_NAME + "-wal")
        if (directory / name).exists()
    )
