"""The node's database: the `Storage` contract and its two backends.

`MemoryStorage` (the default) keeps everything in a dict; `SqliteStorage` keeps it in a
SQLite file that survives a restart. Both hold the key/value data and three counters
(``txid``, ``last_generation``, ``generation``), apply committed transactions as
``[txid, generation, ops]`` entries, stream consistent snapshots in chunks for a replica's
initial sync, and take a full load atomically. This package imports neither trio nor the
runtime: everything here is synchronous.
"""

from __future__ import annotations

from ._base import DELETE, PUT, Entry, Key, Loader, Op, Snapshot, Storage
from ._memory import MemoryStorage
from ._sqlite import SqliteStorage

__all__ = [
    "DELETE",
    "PUT",
    "Entry",
    "Key",
    "Loader",
    "MemoryStorage",
    "Op",
    "Snapshot",
    "SqliteStorage",
    "Storage",
]
