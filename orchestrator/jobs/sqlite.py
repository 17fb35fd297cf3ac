"""A SQLite file shared by threads (one connection per thread) and processes (WAL mode; every write one
`BEGIN IMMEDIATE` transaction), with a condition that wakes this process's waiters on every write.
The plumbing under orchestrator/jobs/store.py."""

from __future__ import annotations

import sqlite3
import threading
import weakref
from pathlib import Path


class _Holder:
    """One thread's connection (sqlite3.Connection cannot be weakly referenced itself). It closes the
    connection when its thread ends (threading.local drops it then): a connection and its statement cache
    refer to each other, so left to itself it would stay open, with its file handles, until a full garbage
    collection, and a job server starts a thread per job."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __del__(self):
        try:
            self.conn.close()
        except sqlite3.Error:
            pass


class SqliteDatabase:
    """The database at `path` (":memory:" or a file, created with `schema` on first open)."""

    def __init__(self, path: str | Path, schema: str, *, busy_timeout_s: float = 30.0):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._conns: weakref.WeakSet[_Holder] = weakref.WeakSet()   # a dead thread's connection is collected
        self._conns_lock = threading.Lock()
        self._changed = threading.Condition()
        self._generation = 0      # bumped on every write from this process
        self._conn().execute("PRAGMA journal_mode=WAL")
        with self._write() as c:
            for statement in filter(None, (s.strip() for s in schema.split(";"))):
                c.execute(statement)

    def _conn(self) -> sqlite3.Connection:
        holder = getattr(self._local, "holder", None)
        if holder is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA synchronous=NORMAL")   # durable across process crashes in WAL mode
            holder = self._local.holder = _Holder(conn)
            with self._conns_lock:
                self._conns.add(holder)
        return holder.conn

    class _Tx:
        def __init__(self, store: "SqliteDatabase", mode: str):
            self.store, self.mode = store, mode

        def __enter__(self) -> sqlite3.Connection:
            self.conn = self.store._conn()
            self.conn.execute(f"BEGIN {self.mode}")
            return self.conn

        def __exit__(self, exc_type, exc, tb):
            if exc_type is None:
                try:
                    self.conn.execute("COMMIT")
                    return False
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            return False

    def _write(self) -> "_Tx":
        """A write transaction: takes the database's write lock at once (no upgrade deadlocks)."""
        return SqliteDatabase._Tx(self, "IMMEDIATE")

    def _read(self) -> "_Tx":
        """A read transaction: one consistent snapshot of the database."""
        return SqliteDatabase._Tx(self, "DEFERRED")

    def _notify(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def close(self) -> None:
        with self._conns_lock:
            for holder in list(self._conns):
                try:
                    holder.conn.close()
                except sqlite3.Error:
                    pass
            self._conns = weakref.WeakSet()
        self._local = threading.local()
