"""The Storage contract: what a node's database must do.

A storage holds the key/value data plus three persisted counters: ``txid`` (the last
committed transaction, 0 for an empty database), ``last_generation`` (the generation of that
transaction) and ``generation`` (the node's fencing counter, see DESIGN 4.5); the ``history``
(the ``(history_id, first_txid)`` boundaries naming which lineage each transaction belongs to,
see `hakit.protocol._history`); and the records of transactions discarded when the node's
history diverged from its master's (MongoDB keeps rollback data the same way). Every method is
synchronous and must not block for long; the runtime calls it from its event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any, Protocol, Self

#: A key: ``str`` or ``bytes`` (distinct: ``"a"`` and ``b"a"`` are two keys).
Key = str | bytes
#: One write: ``[0, key, value]`` (put) or ``[1, key]`` (delete).
Op = list[Any]
#: One committed transaction: ``[txid, generation, ops]``.
Entry = list[Any]
#: ``((history_id, first_txid), ...)``: which history each transaction belongs to.
History = tuple[tuple[str, int], ...]
#: The largest counter a storage holds (SQLite's largest integer).
MAX_COUNTER = 2**63 - 1

PUT = 0
DELETE = 1


class Snapshot(Protocol):
    """A consistent, read-only view of the database at one txid, read in chunks."""

    txid: int
    last_generation: int
    count: int

    def chunks(self, max_items: int) -> Iterator[list[Any]]:
        """Yield the data as flat ``[k1, v1, k2, v2, ...]`` lists of at most `max_items` pairs."""
        ...

    def close(self) -> None:
        """Release the view."""
        ...


class Loader(Protocol):
    """A full load in progress; nothing is visible until `commit`."""

    def add(self, items: list[Any]) -> None:
        """Stage a flat ``[k1, v1, ...]`` chunk."""
        ...

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
        """Atomically replace the database, and its history, with the staged data at `txid`.

        `discarded`, if given, is the msgpack-serializable record of what the load replaces
        (see `Storage.discarded`), kept in the same atomic step. `generation` never goes down,
        except in a `forced` load: a replica that asked for it (`FORCE_SYNC`) gives up a branch
        of its own, and the generation it had reached there, for the master's.
        """
        ...

    def abort(self) -> None:
        """Discard the staged data; the database is as before `begin_load`."""
        ...


class Storage(Protocol):
    """A node's database."""

    @property
    def txid(self) -> int:
        """The txid of the last committed transaction (0: empty)."""
        ...

    @property
    def last_generation(self) -> int:
        """The generation of the last committed transaction."""
        ...

    @property
    def generation(self) -> int:
        """The node's persisted generation (fencing counter)."""
        ...

    def set_generation(self, generation: int) -> None:
        """Persist a new generation; it never goes down."""
        ...

    @property
    def history(self) -> History:
        """The persisted history boundaries (empty for a database that never had one)."""
        ...

    def set_history(self, history: History) -> None:
        """Persist a new history."""
        ...

    def discarded(self) -> list[dict[str, Any]]:
        """Every record a load kept of what it discarded (`Loader.commit`), oldest first."""
        ...

    def get(self, key: Key, default: Any = None) -> Any:
        """Return the value of `key`, or `default`."""
        ...

    def items(self) -> Iterator[tuple[Key, Any]]:
        """Iterate over all pairs (order unspecified)."""
        ...

    def __len__(self) -> int:
        """Return the number of keys."""
        ...

    def apply(self, entries: list[Entry]) -> None:
        """Apply committed transactions in order, atomically as a batch.

        Each entry's txid must be exactly one more than the previous one (the first, one more
        than `txid`); otherwise `ValueError` is raised and nothing changes.
        """
        ...

    def snapshot(self) -> Snapshot:
        """Open a consistent view of the current state; later writes do not show in it."""
        ...

    def begin_load(self) -> Loader:
        """Start a full load that will replace the whole database."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


def check_counter(name: str, value: object) -> int:
    """Return `value` if it is an int in ``[0, MAX_COUNTER]`` (bool excluded), else raise."""
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_COUNTER:
        raise ValueError(f"{name} must be in [0, {MAX_COUNTER}], got {value}")
    return value


def check_generation(generation: object, current: int, *, forced: bool = False) -> int:
    """Return `generation` if it may follow `current` (it never goes down unless `forced`).

    Raises:
        TypeError: not an int.
        ValueError: out of range, or lower than `current` and not `forced`.
    """
    checked = check_counter("generation", generation)
    if checked < current and not forced:
        raise ValueError(f"generation cannot go down: {checked} < current {current}")
    return checked


def check_load(
    current_generation: int,
    txid: int,
    last_generation: int,
    generation: int,
    history: History,
    *,
    forced: bool,
) -> History:
    """Check what `Loader.commit` was given; return the history, checked.

    Raises:
        TypeError: a counter is not an int, or the history is malformed.
        ValueError: a counter out of range, or the generation going down unless `forced`.
    """
    check_counter("txid", txid)
    check_counter("last_generation", last_generation)
    check_generation(generation, current_generation, forced=forced)
    return check_history(history)


def check_history(history: object) -> History:
    """Return `history` as a tuple of ``(str, int)`` pairs if well-formed, else raise.

    Raises:
        TypeError: not a sequence of ``(str, int)`` pairs.
        ValueError: a first txid out of range or going back.
    """
    if not isinstance(history, tuple | list):
        raise TypeError(f"history must be a tuple of (id, first_txid), not {type(history)}")
    result: list[tuple[str, int]] = []
    previous = 0
    for entry in history:
        if not (isinstance(entry, tuple | list) and len(entry) == 2 and type(entry[0]) is str):
            raise TypeError(f"history entries are (id, first_txid) pairs, got {entry!r}")
        first = check_counter("first_txid", entry[1])
        if first < previous:
            raise ValueError(f"history first txids must not go back: {first} < {previous}")
        previous = first
        result.append((entry[0], first))
    return tuple(result)


class SnapshotBase:
    """What every backend's snapshot shares: argument checks and ``with`` support.

    A subclass sets `txid`, `last_generation` and `count`, and implements `_open_chunks`
    (the walk itself), `closed` and `close`.
    """

    __slots__ = ()

    txid: int
    last_generation: int
    count: int

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the view; idempotent."""
        raise NotImplementedError

    def _open_chunks(self, max_items: int) -> Iterator[list[Any]]:
        raise NotImplementedError

    def chunks(self, max_items: int) -> Iterator[list[Any]]:
        """Yield the data as flat ``[k1, v1, k2, v2, ...]`` lists of at most `max_items` pairs.

        Each call walks the whole view again from the start.

        Args:
            max_items: The most pairs per chunk (at least 1).

        Yields:
            Non-empty flat lists; together they hold every pair exactly once.

        Raises:
            ValueError: `max_items` is below 1, or the snapshot is closed.
        """
        # Checked here, outside the generator, so that errors raise at the call.
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        if self.closed:
            raise ValueError("snapshot is closed")
        return self._open_chunks(max_items)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LoaderBase:
    """What every backend's loader shares: leaving a ``with`` block uncommitted discards."""

    __slots__ = ()

    def abort(self) -> None:
        """Discard the staged data; idempotent."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Leaving the block without a commit (an exception, a forgotten commit) discards.
        self.abort()
