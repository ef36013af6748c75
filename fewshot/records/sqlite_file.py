"""One SQLite file shared by every process of the embedded mode (gateway, trainer): the job records
and the example sets are tables in it. Each thread has its own connection; the file is in WAL mode
(readers never wait on a writer); a write is a `BEGIN IMMEDIATE` transaction, which serialises
writers across processes and rolls back whole on any error."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SqliteFile:
    def __init__(self, path: Path, *schema: str) -> None:
        """Open `path` (made if missing) and run each statement of `schema` (CREATE … IF NOT EXISTS)."""
        self._path = path
        self._local = threading.local()
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            for statement in schema:
                db.execute(statement)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self._path, timeout=30, isolation_level=None)
        yield db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
