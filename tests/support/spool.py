"""Looking into (and writing into) an embedded spool file from a test."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

FILE = "mailyard.sqlite3"


def parked(directory: Path) -> list[tuple[str | None, str | None, dict[str, Any], bytes]]:
    """(type, message_id, headers, body) of every parked item, oldest first."""
    db = sqlite3.connect(directory / FILE)
    try:
        return [
            (row[0], row[1], json.loads(row[2]), row[3])
            for row in db.execute(
                "SELECT type, message_id, headers, body FROM items WHERE queue = 'parking'"
                " ORDER BY id"
            )
        ]
    finally:
        db.close()


def insert(directory: Path, queue: str, body: bytes, type_name: str | None) -> None:
    """A raw row on ``queue``, for a stopped process to find when it starts."""
    db = sqlite3.connect(directory / FILE)
    try:
        with db:
            db.execute(
                "INSERT INTO items (queue, type, message_id, headers, body, available_at)"
                " VALUES (?, ?, NULL, '{}', ?, 0)",
                (queue, type_name, body),
            )
    finally:
        db.close()


def rows(directory: Path) -> dict[str, int]:
    db = sqlite3.connect(directory / FILE)
    try:
        return dict(db.execute("SELECT queue, COUNT(*) FROM items GROUP BY queue").fetchall())
    finally:
        db.close()
