"""``mailyard suppression list|add|remove|check``: the list from the command line.

Every command reads the list the way a service does (folding the log, from
the latest snapshot); ``add`` and ``remove`` append a record to the log, so
every replica has the change within seconds. On the embedded spool the
command reads and writes the SQLite file directly, whether or not
``mailyard all`` runs (``broker.tool_log``).

Exit status: 0 done (``check``: the address is suppressed), 1 ``check`` or
``remove`` of an address that is not on the list, 2 the broker or spool
could not be used. The tables and the JSON are pure functions of the
entries, tested without a broker.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

from mailyard.broker import Log, tool_log
from mailyard.config import Settings
from mailyard.suppression import LOG_NAME
from mailyard.suppression.entries import Entry, Source, rfc3339
from mailyard.suppression.records import Added, Removed, encode
from mailyard.suppression.replica import SuppressionReplica

COLUMNS = ("ADDRESS", "SCOPE", "SOURCE", "CLASS", "SINCE", "EXPIRES", "REASON")
EVERY_SENDER = "*"


@dataclass(frozen=True)
class Request:
    """What was asked on the command line, already checked and normalized."""

    action: str  # list | add | remove | check
    address: str = ""
    scope: str | None = None
    source: Source | None = None  # list --source
    reason: str = ""
    expires: timedelta | None = None  # add --expires
    json: bool = False


def render_table(entries: Sequence[Entry]) -> str:
    """Like ``postqueue -p``: one line per entry, a count at the end."""
    if not entries:
        return "Suppression list is empty"
    rows = [COLUMNS] + [
        (
            entry.address,
            entry.scope or EVERY_SENDER,
            entry.source.value,
            entry.bounce_class or "-",
            rfc3339(entry.since),
            rfc3339(entry.expires) if entry.expires else "never",
            entry.reason or "-",
        )
        for entry in entries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]
    lines.append(f"-- {len(entries)} {'entry' if len(entries) == 1 else 'entries'}")
    return "\n".join(lines)


def render_json(entries: Sequence[Entry]) -> str:
    """One JSON array; each entry has exactly the fields of ``Entry.as_json``."""
    return json.dumps([entry.as_json() for entry in entries], indent=2)


def render(entries: Sequence[Entry], *, as_json: bool) -> str:
    return render_json(entries) if as_json else render_table(entries)


async def run(settings: Settings, request: Request, *, out: TextIO | None = None) -> int:
    """Do ``request``; what it prints goes to ``out``, problems to standard error."""
    try:
        async with tool_log(settings, LOG_NAME) as log:
            return await _run(settings, request, log, out or sys.stdout)
    except Exception as exc:  # the broker or the spool: say which, and what it said
        print(f"mailyard: suppression {request.action}: {exc}", file=sys.stderr)
        return 2


async def _run(settings: Settings, request: Request, log: Log, out: TextIO) -> int:
    replica = SuppressionReplica(
        log,
        service="cli",
        strike_window=settings.suppression.expired_strikes_window,
        snapshot_interval=settings.suppression.snapshot_interval,
    )
    now = datetime.now(UTC)
    if request.action == "add":
        entry = Entry(
            address=request.address,
            scope=request.scope,
            reason=request.reason,
            bounce_class=None,
            source=Source.MANUAL,
            since=now,
            expires=now + request.expires if request.expires else None,
        )
        await log.append([encode(Added(entry))])  # nothing to read first: it replaces any
        print(render([entry], as_json=request.json), file=out)
        return 0
    await replica.load()
    state = replica.state
    if request.action == "list":
        entries = [
            e for e in state.active(now) if request.source is None or e.source is request.source
        ]
        print(render(entries, as_json=request.json), file=out)
        return 0
    found = [
        entry
        for entry in state.entries_of(request.address, now)
        if request.scope is None or entry.scope == request.scope
    ]
    if request.action == "check":
        if request.scope is not None:  # would mail from this domain be held back?
            applying = state.lookup(request.address, request.scope, now)
            found = [applying] if applying is not None else []
        if found or request.json:
            print(render(found, as_json=request.json), file=out)
        if not found and not request.json:
            print(f"{request.address}: not suppressed", file=out)
        return 0 if found else 1
    # remove
    if not found:
        if request.json:
            print(render_json([]), file=out)
        else:
            print(f"{request.address}: not suppressed; nothing removed", file=out)
        return 1
    await log.append(
        [encode(Removed(request.address, request.scope, every_scope=request.scope is None))]
    )
    if request.json:
        print(render_json(found), file=out)
    else:
        print(f"removed {len(found)} {'entry' if len(found) == 1 else 'entries'}:", file=out)
        print(render_table(found), file=out)
    return 0
