"""The master's outbox: each committed transaction kept once, for every replica link at once.

A commit appends its packed entry here, once; a link keeps only its position (the next txid
it will send) and reads the range from there when it sends. Frames for a range are built
once and shared by every link that sends the same range (usually all of them), down to the
joined bytes handed to the transport.

Lag in bytes, which `MasterParams.async_buffer_bytes` bounds, comes from offsets: the outbox
counts the bytes of everything appended, so a link's lag is the count at the newest entry
less the count at the last one its replica acknowledged. Nothing is kept per link and per
transaction: with a hundred links, per-link copies and per-transaction ack records made
hundreds of objects per commit, which lived until the acks came back, long enough for the
garbage collector to promote them and sweep them only in full collections.

The outbox keeps an entry until no attached link needs it: not sent yet, or sent but not
acknowledged (its offset is still needed for the lag). `trim` drops the rest.
"""

from __future__ import annotations

from ..protocol import _messages as m

#: Trimmed entries are deleted from the front of the lists in bulk, once at least this many
#: have accumulated (and half the lists), so that a trim costs amortized constant time.
_COMPACT = 1024


def txns_frames(generation: int, entries: list[bytes], limit: int) -> list[bytes]:
    """Frame packed `entries` as `Txns` messages, as many per frame as fit in `limit` bytes.

    A replica far behind (incremental resync, an asynchronous master) gets its backlog in
    frames it can receive.
    """
    frames: list[bytes] = []
    group: list[bytes] = []
    size = 0
    for entry in entries:
        if group and size + len(entry) > limit:
            frames.append(m.encode_txns(generation, group))
            group, size = [], 0
        group.append(entry)
        size += len(entry)
    frames.append(m.encode_txns(generation, group))
    return frames


class Batch:
    """The `Txns` frames of the outbox's txids `start` .. `last`, built once for every link.

    Shared and read-only: every link sent the same range gets this same object, so a link
    at the position of the one before it in a flush needs no look into the outbox at all.
    """

    __slots__ = ("count", "data", "frames", "generation", "last", "limit", "size", "start")

    def __init__(
        self, start: int, last: int, generation: int, limit: int, frames: list[bytes]
    ) -> None:
        self.start = start
        self.last = last
        self.generation = generation
        self.limit = limit  #: the most bytes of packed entries per frame
        self.frames = frames
        #: The frames joined: what one send hands to the transport.
        self.data = frames[0] if len(frames) == 1 else b"".join(frames)
        self.count = len(frames)
        self.size = len(self.data)


class Outbox:
    """Packed committed entries with consecutive txids, and their running byte count.

    Txids `first` .. `last` are held; `end_of(txid)` is the number of bytes appended up to
    and including `txid`, for any txid from ``first - 1`` to `last`. Offsets are only ever
    compared with each other, so their origin is arbitrary (it may be negative after
    `prepend`).
    """

    __slots__ = ("_base_end", "_ends", "_entries", "_head", "_memo", "first", "total")

    def __init__(self, next_txid: int = 1) -> None:
        self._entries: list[bytes] = []
        self._ends: list[int] = []
        self._head = 0  # entries before this index are trimmed, not yet deleted
        self.first = next_txid
        self._base_end = 0  # end_of(first - 1)
        #: `end_of(last)`: the bytes appended so far (from the arbitrary origin).
        self.total = 0
        self._memo: Batch | None = None  # the frames last built

    @property
    def last(self) -> int:
        """The txid of the newest entry (``first - 1`` when empty)."""
        return self.first + len(self._entries) - self._head - 1

    def __len__(self) -> int:
        return len(self._entries) - self._head

    def reset(self, next_txid: int) -> None:
        """Forget everything; the next entry appended will be `next_txid`."""
        self._entries.clear()
        self._ends.clear()
        self._head = 0
        self.first = next_txid
        self._base_end = self.total
        self._memo = None

    def append(self, txid: int, packed: bytes) -> None:
        """Add the entry of transaction `txid`, which must follow `last`."""
        if txid != self.first + len(self._entries) - self._head:
            raise ValueError(f"txid {txid} does not follow {self.last} in the outbox")
        self._entries.append(packed)
        self.total += len(packed)
        self._ends.append(self.total)

    def prepend(self, entries: list[bytes]) -> None:
        """Add the entries of the txids just before `first` (``first - len(entries)`` on).

        For a link that resyncs from the transaction log: the outbox then holds its backlog
        too. The offsets of the entries already held do not change.
        """
        if not entries:
            return
        ends: list[int] = []
        end = self._base_end
        for entry in reversed(entries):
            ends.append(end)
            end -= len(entry)
        ends.reverse()
        self._entries[: self._head] = entries
        self._ends[: self._head] = ends
        self._head = 0
        self.first -= len(entries)
        self._base_end = end

    def end_of(self, txid: int) -> int:
        """Bytes appended up to and including `txid` (``first - 1 <= txid <= last``)."""
        if txid < self.first:
            if txid != self.first - 1:
                raise ValueError(f"txid {txid} was trimmed from the outbox (first {self.first})")
            return self._base_end
        return self._ends[self._head + txid - self.first]

    def ends(self, txid: int) -> list[int]:
        """`end_of` every txid from `txid` to `last`, as a list of their own."""
        return [self.end_of(txid), *self._ends[self._head + txid + 1 - self.first :]]

    def bytes_after(self, txid: int) -> int:
        """Bytes of the entries after `txid` (for ``first - 1 <= txid <= last``)."""
        if txid >= self.last:
            return 0
        return self.total - self.end_of(txid)

    def frames(self, start: int, generation: int, limit: int) -> tuple[list[bytes], bytes]:
        """The `Txns` frames of txids `start` .. `last`, and those frames joined.

        The result is shared (see `batch`). Callers must not modify them.
        """
        batch = self.batch(start, generation, limit)
        return batch.frames, batch.data

    def batch(self, start: int, generation: int, limit: int) -> Batch:
        """The `Batch` of txids `start` .. `last` (`Txns` frames of at most `limit` bytes).

        The last one built is kept: every link sent the same range gets the same object.
        """
        last = self.last
        memo = self._memo
        if (
            memo is not None
            and memo.start == start
            and memo.last == last
            and memo.generation == generation
            and memo.limit == limit
        ):
            return memo
        index = self._head + start - self.first
        if start < self.first or start > last:
            raise ValueError(f"txids {start}..{last} are not in the outbox (from {self.first})")
        frames = txns_frames(generation, self._entries[index:], limit)
        memo = self._memo = Batch(start, last, generation, limit, frames)
        return memo

    def trim(self, needed: int) -> None:
        """Forget the entries before txid `needed` (the oldest any link still needs)."""
        drop = min(needed, self.last + 1) - self.first
        if drop <= 0:
            return
        self._head += drop
        self.first += drop
        self._base_end = self._ends[self._head - 1]
        if self._head >= _COMPACT and 2 * self._head >= len(self._entries):
            del self._entries[: self._head]
            del self._ends[: self._head]
            self._head = 0
