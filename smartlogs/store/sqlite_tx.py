"""One SQLite write transaction, taken at once: ``with immediate(conn): ...``.

``BEGIN IMMEDIATE`` takes the file's write lock at the start (not at the first write, where a
reader turned writer can fail with "database is locked" half-way); the block commits when it
ends and rolls back on any exception (``BaseException``: a KeyboardInterrupt or a cancelled
task must not leave the transaction open either). The connection must be in autocommit mode
(``isolation_level=None``), as every connection of the embedded store is.

>>> import sqlite3
>>> conn = sqlite3.connect(":memory:", isolation_level=None)
>>> _ = conn.execute("CREATE TABLE t (x)")
>>> with immediate(conn):
...     _ = conn.execute("INSERT INTO t VALUES (1)")
>>> try:
...     with immediate(conn):
...         _ = conn.execute("INSERT INTO t VALUES (2)")
...         raise ValueError("undo")
... except ValueError:
...     pass
>>> conn.execute("SELECT x FROM t").fetchall(), conn.in_transaction
([(1,)], False)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["immediate"]


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
