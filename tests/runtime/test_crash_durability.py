"""Crash durability, shown with real processes over TCP on 127.0.0.1 (issue 8 point 4).

A `SqliteStorage` master is killed with SIGKILL in the middle of a stream of synchronous
commits, and so is its replica; a replica is killed in the middle of its initial load. After
each kill the database files open, hold every write a commit reported as acknowledged, and a
half-loaded replica holds exactly its state from before the load; restarted, the processes
sync again. (SqliteStorage's promise, synchronous=NORMAL in WAL mode: a committed transaction
survives the death of the process; see "Durability" in the README.)
"""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hakit
from hakit.storage import PUT

ROOT = Path(__file__).resolve().parent.parent.parent
#: Wall-clock bound for each wait on a child (generous: the machine may be busy).
PATIENCE = 60.0

#: A master that commits k0, k1, ... synchronously and prints each acknowledged one.
WRITER = """
import sys, trio, hakit

async def main(path):
    storage = hakit.SqliteStorage(path)
    async with hakit.open_node("m", address="127.0.0.1:0", storage=storage) as node:
        node.set_master_params(hakit.MasterParams(synch_timeout=30.0))
        print("listening at", node.address, flush=True)
        await node.attach_replica(timeout=60)
        i = storage.txid
        while True:
            async with node.transaction() as tx:
                tx.put(f"k{i}", i)
            if tx.result.acked:
                print("acked", i, tx.result.txid, flush=True)
            i += 1

trio.run(main, sys.argv[1])
"""


class Child:
    """A child process whose stdout lines are read by a thread (so waits can time out)."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self) -> str:
        """The next line of output; fails the test if the child exits or stays silent."""
        try:
            line = self.lines.get(timeout=PATIENCE)
        except queue.Empty:
            raise AssertionError(f"child silent for {PATIENCE:g} s; said {self.seen}") from None
        if line is None:
            raise AssertionError(f"child exited ({self.popen.wait()}); said {self.seen}")
        self.seen.append(line)
        return line

    def address(self) -> str:
        line = self.line()
        assert " listening at 127.0.0.1:" in f" {line}", line
        return line.rsplit(" ", 1)[1]

    def kill(self) -> None:
        """SIGKILL by PID: no cleanup of any kind runs in the child."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        self._reader.join(PATIENCE)  # it reads on to the end of the dead child's output
        assert self.popen.stdout is not None
        self.popen.stdout.close()


@contextmanager
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    try:
        yield made
    finally:
        for child in made:
            child.kill()


def node_process(made: list[Child], name: str, db: Path, master: str | None = None) -> Child:
    args = ["-m", "hakit", "node", name, "--listen", "127.0.0.1:0", "--sqlite", str(db)]
    if master is not None:
        args += ["--master", master, "--timeout", str(PATIENCE)]
    child = Child(*args)
    made.append(child)
    return child


def meta(db: Path) -> tuple[int, int, int]:
    """(txid, last_generation, generation) as committed in the file, read by a second reader."""
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT txid, last_generation, generation FROM meta").fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def wait_for(predicate: object, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {PATIENCE:g} s: {what}")
        time.sleep(0.02)


def contents(db: Path) -> dict[object, object]:
    with hakit.SqliteStorage(db) as storage:
        return dict(storage.items())


def test_master_and_replica_killed_during_writes_lose_no_acknowledged_write(
    tmp_path: Path,
) -> None:
    m_db, r_db = tmp_path / "m.db", tmp_path / "r.db"
    with children() as made:
        writer = Child("-c", WRITER, str(m_db))
        made.append(writer)
        address = writer.address()
        replica = node_process(made, "r", r_db, address)
        replica.address()
        acked: dict[str, int] = {}
        while len(acked) < 300:
            line = writer.line()
            if line.startswith("acked "):
                _, i, _txid = line.split()
                acked[f"k{i}"] = int(i)
        writer.kill()  # in the middle of the stream: commits are in flight
        replica.kill()
        # The files open, and hold every acknowledged write: on the master, which commits
        # locally before it waits, and on the replica, which acknowledges only what it has
        # applied (and SQLite has committed).
        for db in (m_db, r_db):
            data = contents(db)
            missing = [k for k, v in acked.items() if data.get(k) != v]
            assert not missing, f"{db.name} lost acknowledged writes {missing[:5]}"
        assert meta(r_db)[0] <= meta(m_db)[0]
        # Restarted, both open their files and the replica catches up with the master.
        master = node_process(made, "m", m_db)
        address = master.address()
        replica = node_process(made, "r", r_db, address)
        replica.address()
        wait_for(lambda: meta(r_db)[0] == meta(m_db)[0], "the restarted replica syncs")
        master.kill()
        replica.kill()
    assert contents(r_db) == contents(m_db)
    assert acked.items() <= contents(m_db).items()


def test_replica_killed_during_its_initial_load_never_shows_as_synced(tmp_path: Path) -> None:
    m_db, r_db = tmp_path / "m.db", tmp_path / "r.db"
    # The master's database is big enough that its snapshot takes a while to load.
    value = "v" * 1000
    with hakit.SqliteStorage(m_db) as storage:
        storage.apply([[1, 0, [[PUT, f"key{i}", value] for i in range(40_000)]]])
        storage.apply([[2, 0, [[PUT, "last", 2]]]])
    # The replica holds an older database of its own, which a full load must replace whole.
    with hakit.SqliteStorage(r_db) as storage:
        storage.apply([[1, 0, [[PUT, "old", 1]]]])
    wal = Path(f"{r_db}-wal")
    with children() as made:
        master = node_process(made, "m", m_db)
        address = master.address()
        replica = node_process(made, "r", r_db, address)
        replica.address()
        # The load writes into the WAL as it goes, in one transaction not yet committed.
        wait_for(lambda: wal.exists() and wal.stat().st_size > 4 << 20, "the load is under way")
        replica.kill()
        # Killed mid-load: the file opens and holds exactly what it held before the load,
        # at its old txid; nothing of the half-loaded snapshot shows.
        txid, last_generation, _generation = meta(r_db)
        assert (txid, last_generation) == (1, 0), "the killed load completed: make it bigger"
        assert contents(r_db) == {"old": 1}
        # Restarted, the replica loads the whole snapshot.
        replica = node_process(made, "r", r_db, address)
        replica.address()
        wait_for(lambda: meta(r_db)[0] == 2, "the restarted replica completes its load")
        master.kill()
        replica.kill()
    data = contents(r_db)
    assert len(data) == 40_001 and data["last"] == 2 and "old" not in data
