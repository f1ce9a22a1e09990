"""`MemoryStorage`: the default, in-process database (a dict plus three counters)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain, islice
from typing import Any

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

# Exact types, not isinstance: the check sits on the hot path, and ops decoded from the wire
# are always plain str/bytes, so a subclass here is a caller bug worth reporting.
_KEY_TYPES = frozenset((str, bytes))


class MemoryStorage:
    """A node's database held in a Python dict; nothing survives the process.

    `close` keeps the data, so the same object can be handed to a new node to simulate a
    restart. Values are stored as given, not copied or checked: treat them as immutable, and
    keep them msgpack-serializable since replication encodes them on the wire.
    """

    __slots__ = (
        "_data", "_discarded", "_generation", "_history", "_last_generation", "_loader", "_txid",
    )  # fmt: skip

    def __init__(self) -> None:
        self._data: dict[Key, Any] = {}
        self._txid = 0
        self._last_generation = 0
        self._generation = 0
        self._history: History = ()
        self._discarded: list[dict[str, Any]] = []
        self._loader: _MemoryLoader | None = None

    def __repr__(self) -> str:
        return (
            f"<MemoryStorage keys={len(self._data)} txid={self._txid} "
            f"last_generation={self._last_generation} generation={self._generation}>"
        )

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
            ValueError: `generation` is lower than the current generation.
            TypeError: `generation` is not an int.
            RuntimeError: A load is in progress.
        """
        check_generation(generation, self._generation)
        self._require_no_load()
        self._generation = generation

    @property
    def history(self) -> History:
        """The history boundaries ``((history_id, first_txid), ...)``."""
        return self._history

    def set_history(self, history: History) -> None:
        """Replace the history.

        Raises:
            TypeError: `history` is not a sequence of ``(str, int)`` pairs.
            ValueError: a first txid is out of range or goes back.
            RuntimeError: A load is in progress.
        """
        checked = check_history(history)
        self._require_no_load()
        self._history = checked

    def discarded(self) -> list[dict[str, Any]]:
        """Every record a load kept of what it discarded, oldest first (kept across `close`)."""
        return list(self._discarded)

    def get(self, key: Key, default: Any = None) -> Any:
        """Return the value of `key`, or `default`.

        Args:
            key: The key to look up.
            default: Returned when `key` is absent.

        Returns:
            The stored value, or `default`.
        """
        return self._data.get(key, default)

    def items(self) -> Iterator[tuple[Key, Any]]:
        """Iterate over all pairs (order unspecified).

        The pairs are those at the time of the call: writes made while iterating (for
        example by replication between two steps of an async loop) do not disturb it.

        Returns:
            An iterator over ``(key, value)`` pairs.
        """
        # A dict copy is the cheapest consistent view (faster than list(items())), and it
        # keeps iteration from failing with "dictionary changed size" on concurrent writes.
        return iter(self._data.copy().items())

    def __len__(self) -> int:
        """Return the number of keys."""
        return len(self._data)

    def apply(self, entries: list[Entry]) -> None:
        """Apply committed transactions in order, atomically as a batch.

        Args:
            entries: ``[txid, generation, ops]`` lists; the first txid is ``self.txid + 1``
                and each next one is one more.

        Raises:
            ValueError: The txids are not consecutive from ``self.txid + 1``, or an entry or
                op is malformed; nothing has changed.
            RuntimeError: A load is in progress.
        """
        if not entries:
            return
        if self._loader is not None:  # _require_no_load, inline: every replica, every commit
            self._require_no_load()
        # Validate everything first so an error leaves the data untouched; mutating while
        # validating would need an undo log, which costs more than this extra pass.
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
                    if type(op[1]) not in _KEY_TYPES or not (
                        len(op) == 3 if op[0] == PUT else op[0] == DELETE and len(op) == 2
                    ):
                        raise ValueError(f"txid {txid}: malformed op {op!r}")
                expected += 1
        except (TypeError, LookupError) as exc:
            # Wrong shapes (an entry that is not a 3-item sequence, an empty op...) surface
            # as these; report them as the bad value they are.
            raise ValueError(f"malformed entry near txid {expected}: {exc}") from exc
        data = self._data
        for entry in entries:
            for op in entry[2]:
                if op[0] == PUT:
                    data[op[1]] = op[2]
                else:
                    data.pop(op[1], None)
        self._txid = expected - 1
        self._last_generation = generation

    def snapshot(self) -> _MemorySnapshot:
        """Open a consistent view of the current state; later writes do not show in it.

        Returns:
            A snapshot holding a shallow copy of the data.
        """
        return _MemorySnapshot(self._data.copy(), self._txid, self._last_generation)

    def begin_load(self) -> _MemoryLoader:
        """Start a full load that will replace the whole database.

        Until the loader commits, reads, `items` and `snapshot` see the old data, and
        `apply` and `set_generation` raise `RuntimeError`.

        Returns:
            The loader that stages the new data.

        Raises:
            RuntimeError: Another load is in progress.
        """
        self._require_no_load()
        self._loader = _MemoryLoader(self)
        return self._loader

    def close(self) -> None:
        """Abort a load in progress; the data stays, so the object can be reused."""
        if self._loader is not None:
            self._loader.abort()

    def _require_no_load(self) -> None:
        if self._loader is not None:
            raise RuntimeError("a load is in progress; commit or abort it first")


class _MemorySnapshot(SnapshotBase):
    """A point-in-time copy of a `MemoryStorage`, read in chunks.

    Attributes:
        txid: The txid the view reflects.
        last_generation: The generation of that transaction.
        count: The number of keys in the view.
    """

    __slots__ = ("_data", "count", "last_generation", "txid")

    def __init__(self, data: dict[Key, Any], txid: int, last_generation: int) -> None:
        self._data: dict[Key, Any] | None = data
        self.txid = txid
        self.last_generation = last_generation
        self.count = len(data)

    def __repr__(self) -> str:
        state = "closed" if self._data is None else f"count={self.count}"
        return f"<MemorySnapshot txid={self.txid} {state}>"

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._data is None

    def _open_chunks(self, max_items: int) -> Iterator[list[Any]]:
        assert self._data is not None
        return self._chunks(self._data, max_items)

    @staticmethod
    def _chunks(data: dict[Key, Any], max_items: int) -> Iterator[list[Any]]:
        pairs = iter(data.items())
        while chunk := list(chain.from_iterable(islice(pairs, max_items))):
            yield chunk

    def close(self) -> None:
        """Release the view (drop the copy); idempotent."""
        self._data = None


class _MemoryLoader(LoaderBase):
    """Stages a full load into a new dict; `commit` swaps it in."""

    __slots__ = ("_staging", "_storage")

    def __init__(self, storage: MemoryStorage) -> None:
        self._storage: MemoryStorage | None = storage
        self._staging: dict[Key, Any] = {}

    def add(self, items: list[Any]) -> None:
        """Stage a flat ``[k1, v1, ...]`` chunk; a repeated key keeps its last value.

        Args:
            items: Keys and values, alternating.

        Raises:
            ValueError: The list has an odd length or a key that is not str or bytes.
            RuntimeError: The load is already committed or aborted.
        """
        self._live()
        if len(items) % 2:
            raise ValueError(f"a chunk must hold key/value pairs, got {len(items)} items")
        # map(type) runs in C: about 20 ms per million keys, cheap next to the update.
        if not set(map(type, items[::2])) <= _KEY_TYPES:
            bad = next(k for k in items[::2] if type(k) not in _KEY_TYPES)
            raise ValueError(f"keys must be str or bytes, got {type(bad).__name__}: {bad!r}")
        it = iter(items)
        self._staging.update(zip(it, it, strict=False))

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
            discarded: The record of what the load replaces, kept (see `discarded`).
            forced: The replica asked for this load to give up a branch of its own
                (`FORCE_SYNC`): its generation may go down to the master's.

        Raises:
            ValueError: A counter is negative, or `generation` is lower than the storage's
                and not `forced`;
                the load is aborted and the database is unchanged.
            TypeError: A counter is not an int; the load is aborted.
            RuntimeError: The load is already committed or aborted.
        """
        storage = self._live()
        try:
            checked = check_load(
                storage.generation, txid, last_generation, generation, history, forced=forced
            )
        except BaseException:
            # A failed commit must not leave a load hanging that blocks every later write.
            self.abort()
            raise
        storage._data = self._staging
        storage._history = checked
        if discarded is not None:
            storage._discarded.append(discarded)
        storage._txid = txid
        storage._last_generation = last_generation
        storage._generation = generation
        self._finish(storage)

    def abort(self) -> None:
        """Discard the staged data; the database is as before `begin_load`. Idempotent."""
        if self._storage is not None:
            self._finish(self._storage)

    def _live(self) -> MemoryStorage:
        if self._storage is None:
            raise RuntimeError("this load is already committed or aborted")
        return self._storage

    def _finish(self, storage: MemoryStorage) -> None:
        storage._loader = None
        self._storage = None
        self._staging = {}
