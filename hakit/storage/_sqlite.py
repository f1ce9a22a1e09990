"""`SqliteStorage`: a durable database in one SQLite file (stdlib `sqlite3`).

Layout: table ``kv`` maps the msgpack encoding of each key to the msgpack encoding of its
value (encoding the key keeps ``"a"`` and ``b"a"`` distinct, since msgpack tags str and bin
differently), the one-row table ``meta`` holds ``txid``, ``last_generation``, ``generation``
and the msgpack-encoded ``history``, and table ``discarded`` keeps, one msgpack record per
row, the transactions a load discarded when this node's history diverged from its master's
(read them with `SqliteStorage.discarded` or any SQLite client). ``PRAGMA user_version``
records the schema version (version 1 files, without history, are upgraded on open).

The file runs in WAL mode so that readers never block the writer: a snapshot is a second
connection holding a read transaction, and a full load is a third connection holding one
write transaction until it commits, while the main connection keeps serving reads of the
committed state.
"""

from __future__ import annotations

import os
import sqlite3
import weakref
from collections.abc import Iterator
from contextlib import suppress
from functools import partial
from itertools import chain
from types import TracebackType
from typing import Any

import msgpack

from ._base import (
    DELETE,
    PUT,
    Entry,
    History,
    Key,
    LoaderBase,
    SnapshotBase,
    check_generation,
    check_history,
    check_load,
)

_SCHEMA_VERSION = 2
_KEY_TYPES = frozenset((str, bytes))
# Pairs fetched per step by `items()`: large enough to amortize the calls into sqlite3,
# small enough that the first pair comes quickly.
_ITEMS_CHUNK = 1024

_PUT_SQL = "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
_DELETE_SQL = "DELETE FROM kv WHERE k = ?"

# strict_map_key=False: values may be maps with int (or other non-str) keys.
_unpack = partial(msgpack.unpackb, raw=False, strict_map_key=False)


#: The accepted `SqliteStorage` synchronous settings and their SQLite pragma values.
_SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}


def _connect(path: str, synchronous: str = "normal") -> sqlite3.Connection:
    # isolation_level=None: the sqlite3 module opens no transaction behind our back; every
    # transaction here is an explicit BEGIN ... COMMIT, and single statements autocommit.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # synchronous is per connection. NORMAL in WAL mode survives a process crash (the
        # commit is in the WAL file, in the OS's cache); an OS crash or power loss may roll
        # back the last commits. FULL also fsyncs the WAL at every commit.
        conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[synchronous]}")
    except BaseException:
        conn.close()
        raise
    return conn


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open, without masking the error being handled."""
    try:
        if conn.in_transaction:
            conn.rollback()
    except sqlite3.Error:
        # SQLite may already have rolled back (e.g. on SQLITE_FULL); the original error
        # is the one worth reporting.
        pass


class SqliteStorage:
    """A node's database in a SQLite file; data and counters survive a restart.

    Every `apply`, and every completed full load, is one SQLite transaction in WAL mode.
    `len` counts the rows, which SQLite does by walking the key index: a few milliseconds
    per million keys.

    Durability: with ``synchronous="normal"`` (the default) a committed transaction survives
    the death of the process (``kill -9``), but an OS crash or a power loss may roll back the
    last ones (the file stays consistent). ``synchronous="full"`` fsyncs at every commit, so
    commits survive a power loss too, at the price of one fsync per commit (and per batch a
    replica applies).

    Args:
        path: The database file; created with the schema if missing.
        synchronous: ``"normal"`` or ``"full"`` (SQLite's ``PRAGMA synchronous``).

    Raises:
        ValueError: `path` names an in-memory database, the file is a SQLite database
            that is not a hakit storage (or has an unknown schema version), or
            `synchronous` is not one of the accepted values.
        sqlite3.DatabaseError: The file is not a SQLite database.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "normal") -> None:
        self._path = os.fspath(path)
        if self._path in ("", ":memory:"):
            # Snapshots and loads use extra connections, which must open the same database.
            raise ValueError("SqliteStorage needs a file path, not an in-memory database")
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(
                f"synchronous must be one of {', '.join(map(repr, _SYNCHRONOUS))}, "
                f"not {synchronous!r}"
            )
        self._synchronous = synchronous
        self._closed = True  # until fully opened, so close() and __del__-time use are safe
        self._conn = _connect(self._path, synchronous)
        try:
            self._open_schema()
            row = self._conn.execute(
                "SELECT txid, last_generation, generation, history FROM meta WHERE id = 0"
            ).fetchone()
            history = check_history(_unpack(row[3]))
        except (TypeError, ValueError, msgpack.UnpackException) as exc:
            self._conn.close()
            raise ValueError(f"{self._path}: corrupt history in table meta: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise
        self._txid: int = row[0]
        self._last_generation: int = row[1]
        self._generation: int = row[2]
        self._history: History = history
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._loader: _SqliteLoader | None = None
        self._snapshots: weakref.WeakSet[_SqliteSnapshot] = weakref.WeakSet()
        self._closed = False

    def _open_schema(self) -> None:
        conn = self._conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == _SCHEMA_VERSION:
            # The file is ours and already in WAL mode (the mode is stored in the file).
            return
        if version == 1:
            self._upgrade_from_1()
            return
        if version != 0:
            raise ValueError(f"{self._path}: unsupported hakit storage schema version {version}")
        if conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None:
            raise ValueError(f"{self._path}: an existing SQLite database, not a hakit storage")
        # WAL must be set outside a transaction; it is persistent, so only creation does it.
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode != "wal":
            raise ValueError(f"{self._path}: cannot use WAL journal mode (got {mode!r})")
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Check again under the write lock: another opener may have created it meanwhile.
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                conn.execute(
                    "CREATE TABLE kv (k BLOB PRIMARY KEY NOT NULL, v BLOB NOT NULL) WITHOUT ROWID"
                )
                conn.execute(
                    "CREATE TABLE meta ("
                    " id INTEGER PRIMARY KEY CHECK (id = 0),"
                    " txid INTEGER NOT NULL,"
                    " last_generation INTEGER NOT NULL,"
                    " generation INTEGER NOT NULL)"
                )
                conn.execute("INSERT INTO meta VALUES (0, 0, 0, 0)")
                self._add_history_tables()
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback_quietly(conn)
            raise

    def _add_history_tables(self) -> None:
        # x'90' is msgpack's empty array: a database from before history ids has none.
        self._conn.execute("ALTER TABLE meta ADD COLUMN history BLOB NOT NULL DEFAULT x'90'")
        self._conn.execute(
            "CREATE TABLE discarded (id INTEGER PRIMARY KEY AUTOINCREMENT, record BLOB NOT NULL)"
        )

    def _upgrade_from_1(self) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 1:
                self._add_history_tables()
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback_quietly(conn)
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"txid={self._txid}"
        return f"<SqliteStorage {self._path!r} {state}>"

    def __enter__(self) -> SqliteStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def synchronous(self) -> str:
        """The durability setting: ``"normal"`` or ``"full"`` (see the class docs)."""
        return self._synchronous

    @property
    def txid(self) -> int:
        """The txid of the last committed transaction (0: empty)."""
        return self._txid

    @property
    def last_generation(self) -> int:
        """The generation of the last committed transaction."""
        return self._last_generation

    @property
    def generation(self) -> int:
        """The node's persisted generation (fencing counter)."""
        return self._generation

    def set_generation(self, generation: int) -> None:
        """Persist a new generation; it never goes down.

        Args:
            generation: The new generation, at least the current one.

        Raises:
            ValueError: `generation` is lower than the current one, or the storage is closed.
            TypeError: `generation` is not an int.
            RuntimeError: A load is in progress.
        """
        check_generation(generation, self._generation)
        conn = self._writable()
        conn.execute("UPDATE meta SET generation = ? WHERE id = 0", (generation,))
        self._generation = generation

    @property
    def history(self) -> History:
        """The history boundaries ``((history_id, first_txid), ...)``."""
        return self._history

    def set_history(self, history: History) -> None:
        """Persist a new history.

        Raises:
            TypeError: `history` is not a sequence of ``(str, int)`` pairs.
            ValueError: A first txid is out of range or goes back, or the storage is closed.
            RuntimeError: A load is in progress.
        """
        checked = check_history(history)
        conn = self._writable()
        conn.execute("UPDATE meta SET history = ? WHERE id = 0", (self._pack(checked),))
        self._history = checked

    def discarded(self) -> list[dict[str, Any]]:
        """Every record a load kept of what it discarded (table ``discarded``), oldest first.

        Raises:
            ValueError: The storage is closed.
        """
        conn = self._open_conn()
        rows = conn.execute("SELECT record FROM discarded ORDER BY id").fetchall()
        return [_unpack(row[0]) for row in rows]

    def get(self, key: Key, default: Any = None) -> Any:
        """Return the value of `key`, or `default`.

        Args:
            key: The key to look up.
            default: Returned when `key` is absent.

        Returns:
            The stored value, or `default`.

        Raises:
            ValueError: The storage is closed.
        """
        conn = self._open_conn()
        row = conn.execute("SELECT v FROM kv WHERE k = ?", (self._pack(key),)).fetchone()
        return default if row is None else _unpack(row[0])

    def items(self) -> Iterator[tuple[Key, Any]]:
        """Iterate over all pairs (order unspecified), streaming from the file.

        The pairs come from a snapshot taken at the first step of the iteration, so writes
        made meanwhile do not disturb it. Exhaust or close the iterator to release it.

        Returns:
            An iterator over ``(key, value)`` pairs.

        Raises:
            ValueError: The storage is closed.
        """
        self._open_conn()
        return self._items()

    def _items(self) -> Iterator[tuple[Key, Any]]:
        with self.snapshot() as snap:
            for chunk in snap.chunks(_ITEMS_CHUNK):
                it = iter(chunk)
                yield from zip(it, it, strict=False)

    def __len__(self) -> int:
        """Return the number of keys."""
        conn = self._open_conn()
        count: int = conn.execute("SELECT count(*) FROM kv").fetchone()[0]
        return count

    def apply(self, entries: list[Entry]) -> None:
        """Apply committed transactions in order, atomically as a batch (one SQLite transaction).

        Args:
            entries: ``[txid, generation, ops]`` lists; the first txid is ``self.txid + 1``
                and each next one is one more.

        Raises:
            ValueError: The txids are not consecutive from ``self.txid + 1``, an entry or op
                is malformed, or a value cannot be encoded with msgpack; nothing has changed.
                Also raised when the storage is closed.
            RuntimeError: A load is in progress.
        """
        if not entries:
            return
        conn = self._writable()
        # Encode and validate everything before the transaction starts, grouping consecutive
        # ops of one kind so each group is one executemany; order across groups is kept.
        pack = self._pack
        groups: list[tuple[int, list[tuple[bytes, ...]]]] = []
        kind_of_group = -1
        rows: list[tuple[bytes, ...]] = []
        expected = self._txid + 1
        generation: Any = None
        try:
            for txid, generation, ops in entries:
                if txid != expected or type(txid) is not int:
                    raise ValueError(
                        f"txid {txid!r} does not follow {expected - 1} (expected {expected})"
                    )
                if type(generation) is not int:
                    raise ValueError(f"txid {txid}: generation must be an int: {generation!r}")
                for op in ops:
                    if type(op[1]) not in _KEY_TYPES:
                        raise ValueError(f"txid {txid}: malformed op {op!r}")
                    row: tuple[bytes, ...]
                    if op[0] == PUT and len(op) == 3:
                        kind, row = PUT, (pack(op[1]), pack(op[2]))
                    elif op[0] == DELETE and len(op) == 2:
                        kind, row = DELETE, (pack(op[1]),)
                    else:
                        raise ValueError(f"txid {txid}: malformed op {op!r}")
                    if kind != kind_of_group:
                        kind_of_group = kind
                        rows = []
                        groups.append((kind, rows))
                    rows.append(row)
                expected += 1
        except (TypeError, LookupError, OverflowError) as exc:
            # Wrong shapes and unencodable values surface as these; report them as the bad
            # value they are, like a txid gap.
            raise ValueError(f"malformed entry near txid {expected}: {exc}") from exc
        conn.execute("BEGIN IMMEDIATE")
        try:
            for kind, group_rows in groups:
                conn.executemany(_PUT_SQL if kind == PUT else _DELETE_SQL, group_rows)
            conn.execute(
                "UPDATE meta SET txid = ?, last_generation = ? WHERE id = 0",
                (expected - 1, generation),
            )
            conn.execute("COMMIT")
        except BaseException:
            _rollback_quietly(conn)
            raise
        self._txid = expected - 1
        self._last_generation = generation

    def snapshot(self) -> _SqliteSnapshot:
        """Open a consistent view of the current state; later writes do not show in it.

        The view is a read transaction on its own connection; close it promptly, since
        SQLite cannot recycle its WAL file past the oldest open view.

        Returns:
            The snapshot; also a context manager that closes it.

        Raises:
            ValueError: The storage is closed.
        """
        self._open_conn()
        snap = _SqliteSnapshot(self._path)
        self._snapshots.add(snap)
        return snap

    def begin_load(self) -> _SqliteLoader:
        """Start a full load that will replace the whole database.

        The load is one write transaction on its own connection: until it commits, reads,
        `items` and `snapshot` see the old data, and if it aborts or the process dies, the
        file keeps the old data. Meanwhile `apply` and `set_generation` raise `RuntimeError`.

        Returns:
            The loader that stages the new data; also a context manager that aborts it
            unless committed.

        Raises:
            RuntimeError: Another load is in progress.
            ValueError: The storage is closed.
        """
        self._writable()
        self._loader = _SqliteLoader(self)
        return self._loader

    def close(self) -> None:
        """Abort a load in progress, close open snapshots and the file; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._loader is not None:
                self._loader.abort()
            for snap in list(self._snapshots):
                snap.close()
        finally:
            self._conn.close()

    def _open_conn(self) -> sqlite3.Connection:
        if self._closed:
            raise ValueError("storage is closed")
        return self._conn

    def _writable(self) -> sqlite3.Connection:
        conn = self._open_conn()
        if self._loader is not None:
            raise RuntimeError("a load is in progress; commit or abort it first")
        return conn


class _SqliteSnapshot(SnapshotBase):
    """A read transaction on its own connection: a consistent view while writes continue.

    Attributes:
        txid: The txid the view reflects.
        last_generation: The generation of that transaction.
        count: The number of keys in the view.
    """

    txid: int
    last_generation: int
    count: int

    def __init__(self, path: str) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA query_only = ON")
            # In WAL mode the read snapshot is fixed by the first SELECT after BEGIN, so the
            # counters, the count and every later chunk all see the same committed state.
            conn.execute("BEGIN")
            self.txid, self.last_generation = conn.execute(
                "SELECT txid, last_generation FROM meta WHERE id = 0"
            ).fetchone()
            self.count = conn.execute("SELECT count(*) FROM kv").fetchone()[0]
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else f"count={self.count}"
        return f"<SqliteSnapshot txid={self.txid} {state}>"

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._conn is None

    def _open_chunks(self, max_items: int) -> Iterator[list[Any]]:
        assert self._conn is not None
        return self._chunks(self._conn, max_items)

    @staticmethod
    def _chunks(conn: sqlite3.Connection, max_items: int) -> Iterator[list[Any]]:
        cursor = conn.execute("SELECT k, v FROM kv")
        try:
            while rows := cursor.fetchmany(max_items):
                yield list(map(_unpack, chain.from_iterable(rows)))
        finally:
            # Release the statement early when the walk is abandoned; if the snapshot was
            # closed first, the connection already released it and close() would raise.
            with suppress(sqlite3.ProgrammingError):
                cursor.close()

    def close(self) -> None:
        """End the read transaction and close the connection; idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # closing discards the read transaction


class _SqliteLoader(LoaderBase):
    """A full load: one write transaction on its own connection, committed by `commit`."""

    def __init__(self, storage: SqliteStorage) -> None:
        conn = _connect(storage.path, storage.synchronous)
        try:
            # IMMEDIATE takes the write lock now, so a conflict shows at begin_load rather
            # than halfway through the chunks.
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM kv")
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn
        self._storage = storage
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def add(self, items: list[Any]) -> None:
        """Stage a flat ``[k1, v1, ...]`` chunk; a repeated key keeps its last value.

        Args:
            items: Keys and values, alternating.

        Raises:
            ValueError: The list has an odd length, a key that is not str or bytes, or a
                value msgpack cannot encode; nothing from this chunk is staged.
            RuntimeError: The load is already committed or aborted.
        """
        conn = self._live()
        if len(items) % 2:
            raise ValueError(f"a chunk must hold key/value pairs, got {len(items)} items")
        if not set(map(type, items[::2])) <= _KEY_TYPES:
            bad = next(k for k in items[::2] if type(k) not in _KEY_TYPES)
            raise ValueError(f"keys must be str or bytes, got {type(bad).__name__}: {bad!r}")
        try:
            packed = list(map(self._pack, items))
        except (TypeError, OverflowError) as exc:
            raise ValueError(f"cannot encode a value: {exc}") from exc
        it = iter(packed)
        conn.executemany(_PUT_SQL, zip(it, it, strict=False))

    def commit(
        self,
        txid: int,
        last_generation: int,
        generation: int,
        history: History = (),
        discarded: dict[str, Any] | None = None,
        *,
        forced: bool = False,
    ) -> None:
        """Atomically replace the database with the staged data at `txid`.

        Args:
            txid: The txid the loaded data reflects.
            last_generation: The generation of that transaction.
            generation: The node's generation from now on; not lower than the current one
                unless `forced`.
            history: The loaded data's history (the master's), replacing the node's.
            discarded: The record of what the load replaces, kept in table ``discarded`` in
                the same SQLite transaction.
            forced: The replica asked for this load to give up a branch of its own
                (`FORCE_SYNC`): its generation may go down to the master's.

        Raises:
            ValueError: A counter is negative, or `generation` is lower than the storage's
                and not `forced`.
            TypeError: A counter is not an int.
            sqlite3.Error: The commit itself failed.
            RuntimeError: The load is already committed or aborted.

        On any error the load is aborted and the database is unchanged.
        """
        conn = self._live()
        storage = self._storage
        try:
            checked = check_load(
                storage.generation, txid, last_generation, generation, history, forced=forced
            )
            conn.execute(
                "UPDATE meta SET txid = ?, last_generation = ?, generation = ?, history = ?"
                " WHERE id = 0",
                (txid, last_generation, generation, self._pack(checked)),
            )
            if discarded is not None:
                try:
                    blob = self._pack(discarded)
                except (TypeError, OverflowError) as exc:
                    raise ValueError(f"cannot encode the discarded record: {exc}") from exc
                conn.execute("INSERT INTO discarded (record) VALUES (?)", (blob,))
            conn.execute("COMMIT")
        except BaseException:
            # A failed commit must not leave a load hanging that blocks every later write.
            self.abort()
            raise
        storage._txid = txid
        storage._last_generation = last_generation
        storage._generation = generation
        storage._history = checked
        self._finish(conn)

    def abort(self) -> None:
        """Discard the staged data; the database is as before `begin_load`. Idempotent."""
        conn = self._conn
        if conn is not None:
            try:
                _rollback_quietly(conn)
            finally:
                self._finish(conn)

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("this load is already committed or aborted")
        return self._conn

    def _finish(self, conn: sqlite3.Connection) -> None:
        self._conn = None
        self._storage._loader = None
        conn.close()
