"""A node's log of recent transactions, for incremental resync: packed entries, nothing else.

Master and replica alike keep the last `maxlen` transactions as they travel (packed), so that
a replica that comes back can be sent what it missed, and a diverged replica can tell what it
discards. Txids are consecutive, so an entry's txid is its position; generations change
rarely (once per promotion), so they are kept as runs. The log thus holds one bytes object
per transaction and no container of its own: a tuple per transaction (a hundred replicas
each adding one per commit) was what drove the garbage collector's young collections, each
of which promoted whatever batch was being applied at that moment.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from itertools import islice


class TransLog:
    """The packed entries of consecutive txids ``first`` .. ``last``, at most `maxlen`."""

    __slots__ = ("_entries", "_runs", "last")

    def __init__(self, maxlen: int) -> None:
        self._entries: deque[bytes] = deque(maxlen=maxlen)
        # (first txid, generation) of each run of one generation, oldest first.
        self._runs: deque[tuple[int, int]] = deque()
        #: The txid of the newest entry (meaningless while the log is empty).
        self.last = 0

    @property
    def maxlen(self) -> int:
        """How many entries the log keeps."""
        maxlen = self._entries.maxlen
        assert maxlen is not None
        return maxlen

    @property
    def first(self) -> int:
        """The txid of the oldest entry (``last + 1`` when empty)."""
        return self.last - len(self._entries) + 1

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def resize(self, maxlen: int) -> None:
        """Keep at most `maxlen` entries from now on (the newest, if there are more)."""
        if self._entries.maxlen != maxlen:
            self._entries = deque(self._entries, maxlen=maxlen)

    def clear(self) -> None:
        """Forget every entry (a full load replaced the data they led to)."""
        self._entries.clear()
        self._runs.clear()

    def append(self, txid: int, generation: int, packed: bytes) -> None:
        """Add transaction `txid` (a gap, which nothing should make, restarts the log)."""
        entries = self._entries
        if txid != self.last + 1 or not entries:
            self._restart(txid)
        self._run(txid, generation)
        entries.append(packed)
        self.last = txid

    def extend(self, first: int, generation: int, packed: list[bytes]) -> None:
        """Add transactions `first`, `first + 1`, ... all of `generation`."""
        if not packed:
            return
        if first != self.last + 1 or not self._entries:
            self._restart(first)
        self._run(first, generation)
        self._entries.extend(packed)
        self.last = first + len(packed) - 1

    def _restart(self, txid: int) -> None:
        self.clear()
        self.last = txid - 1

    def _run(self, txid: int, generation: int) -> None:
        runs = self._runs
        if not runs or runs[-1][1] != generation:
            runs.append((txid, generation))
            # Runs wholly before the oldest entry kept are of no use any more.
            first = self.first
            while len(runs) > 1 and runs[1][0] <= first:
                runs.popleft()

    def generation_of(self, txid: int) -> int | None:
        """The generation of transaction `txid`, if the log holds it."""
        if not self.first <= txid <= self.last or not self._entries:
            return None
        generation = None
        for start, gen in self._runs:
            if start > txid:
                break
            generation = gen
        return generation

    def packed(self, start: int, stop: int) -> list[bytes]:
        """The entries of txids `start` up to, not including, `stop` (all held)."""
        first = self.first
        if start < first or stop > self.last + 1:
            raise ValueError(f"txids {start}..{stop - 1} are not all in the log ({first}..)")
        return list(islice(self._entries, start - first, stop - first))

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        """Every entry as ``(txid, generation, packed)``, oldest first."""
        runs = list(self._runs)
        index = 0
        for txid, packed in enumerate(list(self._entries), self.first):
            while index + 1 < len(runs) and runs[index + 1][0] <= txid:
                index += 1
            yield txid, runs[index][1], packed
