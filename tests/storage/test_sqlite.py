"""SqliteStorage specifics: durability, failed loads, file handling."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import hakit.storage
from hakit.storage import DELETE, PUT, SqliteStorage


def read_all(db: SqliteStorage) -> tuple[int, int, int, dict[Any, Any]]:
    return db.txid, db.last_generation, db.generation, dict(db.items())


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "node.sqlite"


def test_data_and_counters_survive_a_restart(path: Path) -> None:
    with SqliteStorage(path) as db:
        db.set_generation(4)
        db.apply(
            [
                [1, 3, [[PUT, "a", 1], [PUT, b"a", [1, {"x": None}]], [PUT, "gone", 0]]],
                [2, 4, [[DELETE, "gone"], [PUT, "f", 1.5]]],
            ]
        )
        expected = read_all(db)
    assert expected == (2, 4, 4, {"a": 1, b"a": [1, {"x": None}], "f": 1.5})
    with SqliteStorage(path) as db:
        assert read_all(db) == expected
        assert len(db) == 3
        # The txid chain continues after the restart.
        db.apply([[3, 4, [[PUT, "b", 2]]]])
    with SqliteStorage(str(path)) as db:
        assert db.txid == 3
        assert db.get("b") == 2


def test_a_committed_load_survives_a_restart(path: Path) -> None:
    with SqliteStorage(path) as db:
        db.apply([[1, 0, [[PUT, "old", 1]]]])
        loader = db.begin_load()
        loader.add(["new", 1, b"new", 2])
        loader.commit(100, 5, 6)
    with SqliteStorage(path) as db:
        assert read_all(db) == (100, 5, 6, {"new": 1, b"new": 2})


def test_an_aborted_load_leaves_the_file_as_before(path: Path) -> None:
    with SqliteStorage(path) as db:
        db.apply([[1, 1, [[PUT, "a", 1]]]])
        db.set_generation(1)
        before = read_all(db)
        loader = db.begin_load()
        loader.add(["x", 1])
        loader.abort()
    with SqliteStorage(path) as db:
        assert read_all(db) == before


def test_closing_during_a_load_leaves_the_file_as_before(path: Path) -> None:
    with SqliteStorage(path) as db:
        db.apply([[1, 0, [[PUT, "a", 1]]]])
        before = read_all(db)
        loader = db.begin_load()
        loader.add(["x", 1, "y", 2])
    # Leaving the block closed the storage, which aborted the load.
    with pytest.raises(RuntimeError):
        loader.commit(9, 0, 0)
    with SqliteStorage(path) as db:
        assert read_all(db) == before


def test_an_unfinished_load_is_invisible_to_other_openers(path: Path) -> None:
    with SqliteStorage(path) as db:
        db.apply([[1, 0, [[PUT, "a", 1]]]])
        loader = db.begin_load()
        loader.add(["x", 1, "y", 2])
        # Another process (here: another storage on the file) sees only committed data.
        with SqliteStorage(path) as other:
            assert read_all(other) == (1, 0, 0, {"a": 1})
        loader.commit(5, 0, 0)
        with SqliteStorage(path) as other:
            assert read_all(other) == (5, 0, 0, {"x": 1, "y": 2})


def test_a_crash_in_the_middle_of_a_load_leaves_the_old_data(path: Path) -> None:
    with SqliteStorage(path) as db:
        db.apply([[1, 2, [[PUT, "a", 1], [PUT, b"b", 2]]]])
        db.set_generation(2)
        before = read_all(db)
    script = textwrap.dedent(
        """
        import os, sys
        from hakit.storage import SqliteStorage
        db = SqliteStorage(sys.argv[1])
        loader = db.begin_load()
        for i in range(50):
            loader.add([f"k{i}-{j}" for j in range(200) for _ in (0, 1)])
        os._exit(3)  # die with the write transaction open, as a killed process would
        """
    )
    # Import hakit in the child from wherever this process found it.
    root = Path(hakit.storage.__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], env=env, capture_output=True, check=False
    )
    assert result.returncode == 3, result.stderr.decode()
    with SqliteStorage(path) as db:
        assert read_all(db) == before
        # The file is usable: a new load goes through.
        loader = db.begin_load()
        loader.add(["fresh", 1])
        loader.commit(10, 2, 2)
        assert read_all(db) == (10, 2, 2, {"fresh": 1})


def test_an_unencodable_value_changes_nothing(path: Path) -> None:
    with SqliteStorage(path) as db:
        db.apply([[1, 0, [[PUT, "a", 1]]]])
        before = read_all(db)
        for bad in ({1, 2}, 2**64, object()):
            with pytest.raises(ValueError, match="malformed"):
                db.apply([[2, 0, [[PUT, "b", 2]]], [3, 0, [[PUT, "c", bad]]]])
            assert read_all(db) == before
        loader = db.begin_load()
        with pytest.raises(ValueError, match="encode"):
            loader.add(["k", {1, 2}])
        loader.abort()
        assert read_all(db) == before


def test_the_file_is_in_wal_mode(path: Path) -> None:
    SqliteStorage(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


@pytest.mark.parametrize("name", [":memory:", ""])
def test_an_in_memory_database_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="file path"):
        SqliteStorage(name)


def test_a_foreign_sqlite_database_is_refused(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE people (name TEXT)")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(ValueError, match="not a hakit storage"):
        SqliteStorage(path)


def test_an_unknown_schema_version_is_refused(path: Path) -> None:
    SqliteStorage(path).close()
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA user_version = 99")
    finally:
        conn.close()
    with pytest.raises(ValueError, match="schema version 99"):
        SqliteStorage(path)


def test_a_file_that_is_not_a_database_is_refused(path: Path) -> None:
    path.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        SqliteStorage(path)


def test_a_closed_storage_refuses_use_and_closes_its_snapshots(path: Path) -> None:
    db = SqliteStorage(path)
    db.apply([[1, 0, [[PUT, "a", 1]]]])
    snap = db.snapshot()
    db.close()
    db.close()  # idempotent
    assert "closed" in repr(db)
    with pytest.raises(ValueError, match="closed"):
        db.get("a")
    with pytest.raises(ValueError, match="closed"):
        db.apply([[2, 0, []]])
    with pytest.raises(ValueError, match="closed"):
        db.snapshot()
    with pytest.raises(ValueError, match="closed"):
        len(db)
    with pytest.raises(ValueError, match="closed"):
        snap.chunks(10)


def test_a_snapshot_stays_consistent_across_many_commits(path: Path) -> None:
    with SqliteStorage(path) as db:
        db.apply([[1, 0, [[PUT, f"k{i:05}", i] for i in range(5000)]]])
        with db.snapshot() as snap:
            chunks = snap.chunks(500)
            first = next(chunks)
            # Writes that land between two chunks, including ones to keys not read yet.
            for txid in range(2, 52):
                db.apply([[txid, 0, [[DELETE, f"k{txid * 90:05}"], [PUT, f"z{txid}", txid]]]])
            flat = first + [x for chunk in chunks for x in chunk]
        assert snap.count == 5000
        assert dict(zip(flat[::2], flat[1::2], strict=True)) == {f"k{i:05}": i for i in range(5000)}
        assert len(db) == 5000
        assert db.txid == 51


def test_history_and_discarded_records_survive_a_restart(path: Path) -> None:
    with SqliteStorage(path) as db:
        db.set_history((("aa", 1), ("bb", 4)))
        loader = db.begin_load()
        loader.add(["k", b"v"])
        loader.commit(9, 2, 3, (("cc", 1),), {"replaced": [["k", "old"]], "last_txid": 9})
    with SqliteStorage(path) as db:
        assert db.history == (("cc", 1),)
        assert db.discarded() == [{"replaced": [["k", "old"]], "last_txid": 9}]
        assert (db.txid, db.generation, db.get("k")) == (9, 3, b"v")


def test_a_version_1_file_is_upgraded_in_place(path: Path) -> None:
    # The schema before history ids: same kv and meta tables, no history, no discarded.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE kv (k BLOB PRIMARY KEY NOT NULL, v BLOB NOT NULL) WITHOUT ROWID")
    conn.execute(
        "CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 0), txid INTEGER NOT NULL,"
        " last_generation INTEGER NOT NULL, generation INTEGER NOT NULL)"
    )
    conn.execute("INSERT INTO meta VALUES (0, 5, 1, 2)")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with SqliteStorage(path) as db:
        assert (db.txid, db.last_generation, db.generation, db.history) == (5, 1, 2, ())
        assert db.discarded() == []
        db.set_history((("aa", 6),))
    with SqliteStorage(path) as db:
        assert db.history == (("aa", 6),)


@pytest.mark.parametrize(("setting", "pragma"), [("normal", 1), ("full", 2)])
def test_synchronous_setting_applies_to_commits_and_loads(
    path: Path, setting: str, pragma: int
) -> None:
    # The writer's connection and a full load's connection both use the chosen setting.
    default = SqliteStorage(path)
    assert default.synchronous == "normal"
    default.close()
    with SqliteStorage(path, synchronous=setting) as db:
        assert db.synchronous == setting
        assert db._conn.execute("PRAGMA synchronous").fetchone()[0] == pragma
        loader = db.begin_load()
        assert loader._conn is not None
        assert loader._conn.execute("PRAGMA synchronous").fetchone()[0] == pragma
        loader.add(["k", 1])
        loader.commit(1, 0, 0)
        assert dict(db.items()) == {"k": 1}


def test_unknown_synchronous_setting_is_refused(path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous must be one of 'normal', 'full', not 'off'"):
        SqliteStorage(path, synchronous="off")
    assert not path.exists()
