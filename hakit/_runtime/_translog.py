"""A node's log of recent transactions, for incremental resync: packed entries, nothing else.

Master and replica alike keep the last `maxlen` transactions as they travel (packed), so that
a replica that comes back can be sent what it missed, and a diverged replica can tell what it
discards. Txids are consecutive, so an entry's txid is its position; generations change
rarely (once per promotion), so they are kept as runs. A replica keeps each batch it applied
as one piece of bytes (its entries as the master packed them, back to back), cut into entries
only when someone asks (a resync, a divergence): no container per transaction. A tuple per
transaction, a hundred replicas each adding one per commit, was what drove the garbage
collector's young collections, each of which promoted whatever batch was being applied.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import msgpack


def split_packed(blob: bytes, count: int) -> list[bytes]:
    """Cut `count` msgpack values packed back to back into one bytes object each."""
    if count == 1:
        return [blob]
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(blob), 1))
    unpacker.feed(blob)
    out: list[bytes] = []
    pos = 0
    for _ in range(count):
        unpacker.skip()
        end = unpacker.tell()
        out.append(blob[pos:end])
        pos = end
    return out


class TransLog:
    """The packed entries of consecutive txids ``first`` .. ``last``, at most `maxlen`."""

    __slots__ = ("_chunks", "_maxlen", "_runs", "_size", "_skip", "last")

    def __init__(self, maxlen: int) -> None:
        # (first txid, count, the `count` entries packed back to back), oldest first.
        self._chunks: deque[tuple[int, int, bytes]] = deque()
        self._size = 0  # entries in `_chunks`, the `_skip` oldest ones (already gone) included
        self._skip = 0  # entries of the oldest chunk that are no longer kept
        self._maxlen = maxlen
        # (first txid, generation) of each run of one generation, oldest first.
        self._runs: deque[tuple[int, int]] = deque()
        #: The txid of the newest entry (meaningless while the log is empty).
        self.last = 0

    @property
    def maxlen(self) -> int:
        """How many entries the log keeps."""
        return self._maxlen

    @property
    def first(self) -> int:
        """The txid of the oldest entry (``last + 1`` when empty)."""
        return self.last - len(self) + 1

    def __len__(self) -> int:
        return self._size - self._skip

    def __bool__(self) -> bool:
        return self._size > self._skip

    def resize(self, maxlen: int) -> None:
        """Keep at most `maxlen` entries from now on (the newest, if there are more)."""
        self._maxlen = maxlen
        self._evict()

    def clear(self) -> None:
        """Forget every entry (a full load replaced the data they led to)."""
        self._chunks.clear()
        self._runs.clear()
        self._size = self._skip = 0

    def append(self, txid: int, generation: int, packed: bytes) -> None:
        """Add transaction `txid` (a gap, which nothing should make, restarts the log)."""
        self._add(txid, 1, packed)
        self._run(txid, generation)
        self._evict()

    def extend(
        self, first: int, generations: tuple[int, ...] | int, count: int, blob: bytes
    ) -> None:
        """Add `count` transactions from txid `first` on, packed back to back in `blob`.

        `generations` is their one generation, or each one's when they differ.
        """
        if not count:
            return
        runs = self._runs
        if (
            first == self.last + 1
            and self._size > self._skip
            and type(generations) is int
            and runs[-1][1] == generations
        ):
            # The usual batch (every replica, every commit): it follows on in the newest
            # run's generation. What _add, _run and _evict do then, without the calls.
            self._chunks.append((first, count, blob))
            self._size += count
            self.last = first + count - 1
            if self._size - self._skip > self._maxlen:
                self._evict()
            return
        self._add(first, count, blob)
        if isinstance(generations, int):
            self._run(first, generations)
        else:
            for txid, generation in enumerate(generations, first):
                self._run(txid, generation)
        self._evict()

    def _add(self, first: int, count: int, blob: bytes) -> None:
        if first != self.last + 1 or not self:
            self.clear()
        self._chunks.append((first, count, blob))
        self._size += count
        self.last = first + count - 1

    def _run(self, txid: int, generation: int) -> None:
        runs = self._runs
        if not runs or runs[-1][1] != generation:
            runs.append((txid, generation))
            # Runs wholly before the oldest entry kept are of no use any more.
            first = self.first
            while len(runs) > 1 and runs[1][0] <= first:
                runs.popleft()

    def _evict(self) -> None:
        excess = len(self) - self._maxlen
        chunks = self._chunks
        while excess > 0 and chunks:
            count = chunks[0][1]
            kept = count - self._skip
            if excess < kept:
                self._skip += excess
                return
            chunks.popleft()
            self._size -= count
            self._skip = 0
            excess -= kept

    def generation_of(self, txid: int) -> int | None:
        """The generation of transaction `txid`, if the log holds it."""
        if not self or not self.first <= txid <= self.last:
            return None
        generation = None
        for start, gen in self._runs:
            if start > txid:
                break
            generation = gen
        return generation

    def _entries(self, start: int) -> Iterator[tuple[int, bytes]]:
        """``(txid, packed)`` from txid `start` (at least `first`) on."""
        for first, count, blob in list(self._chunks):
            if first + count <= start:
                continue
            for txid, packed in enumerate(split_packed(blob, count), first):
                if txid >= start:
                    yield txid, packed

    def packed(self, start: int, stop: int) -> list[bytes]:
        """The entries of txids `start` up to, not including, `stop` (all held)."""
        if start < self.first or stop > self.last + 1:
            raise ValueError(f"txids {start}..{stop - 1} are not all in the log ({self.first}..)")
        out: list[bytes] = []
        for txid, packed in self._entries(start):
            if txid >= stop:
                break
            out.append(packed)
        return out

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        """Every entry as ``(txid, generation, packed)``, oldest first."""
        if not self:
            return
        runs = list(self._runs)
        index = 0
        for txid, packed in self._entries(self.first):
            while index + 1 < len(runs) and runs[index + 1][0] <= txid:
                index += 1
            yield txid, runs[index][1], packed
