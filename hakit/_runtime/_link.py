"""The master's side of one attached replica: a position in the outbox, a sender and a receiver.

Speed comes from the shape: a commit appends its already-packed entry once to the master's
`Outbox`; each link only keeps the txid it will send next. When a link sends, everything from
there on leaves as `Txns` frames (built once for every link at the same position) in one
`send_all`. Acknowledgements are cumulative, so one ack confirms a whole batch. No commit ever
awaits a per-link round trip of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ..protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    LinkState,
    MasterLinkMachine,
    RemoteProtocolError,
    StopReason,
)
from ..protocol import _messages as m
from ..storage import Snapshot
from ..transports import FramedStream
from ._outbox import Batch

if TYPE_CHECKING:
    from ._master_side import MasterSide

_FINAL_STATES = (LinkState.KILLED, LinkState.CLOSED)
#: What a peer can make a link's reads and writes raise: each ends that link only.
_PEER_FAILURES = (
    EOFError,
    RemoteProtocolError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
)
#: Pairs per snapshot chunk frame, and chunk frames per send.
SNAPSHOT_CHUNK_ITEMS = 2000
#: Room for a frame's own bytes (length prefix, message kind, generation, array headers).
FRAME_SLACK = 1024


def max_transaction_bytes(max_frame_size: int) -> int:
    """The largest packed transaction that fits in one frame of `max_frame_size` bytes."""
    return max_frame_size - FRAME_SLACK


SNAPSHOT_CHUNKS_PER_SEND = 8


class ReplicaLink:
    """One replica as the master sees it."""

    def __init__(
        self,
        master: MasterSide,
        name: str,
        stream: FramedStream,
        machine: MasterLinkMachine,
        sync: m.SyncKind,
        address: str | None,
    ) -> None:
        self.master = master
        self.name = name
        self.stream = stream
        self.machine = machine
        self.sync = sync
        self.address = address
        self.snapshot: Snapshot | None = None
        #: Sent before anything else (the Welcome), ahead of the snapshot.
        self.first_frame = b""
        #: Every frame of the initial sync has been handed to the transport: commits from
        #: now on wait for this replica's acknowledgement, so that a replica which reports
        #: itself synced (``nursery.start(node.attach_master, ...)``) is never left out.
        self.load_sent = False
        self._max_frame_size = DEFAULT_MAX_FRAME_SIZE
        self._txn_limit = max_transaction_bytes(DEFAULT_MAX_FRAME_SIZE)
        self.static_load = False
        # The outbox position: transactions from `_next` on are still to be framed for this
        # link. Lag counts from `_base`, the txid the replica held (or was loaded to) when
        # it attached, or the last one it acknowledged since, whichever is later.
        self._next = master.outbox.last + 1
        self._base = self._next - 1
        # False once the link is closing: what it was due is in `_frames` by then.
        self._reads_outbox = True
        # Closing after a flush: the outbox offsets of txids `_lag_from` on that it was due.
        self._lag_from = 0
        self._lag_ends: list[int] = []
        self._last_txid = machine.acked
        self._frames: list[bytes] = []
        self._waiting_commit = False  # its (non-direct) sender is woken by the next commit
        self._ack_event: trio.Event | None = None
        self._wake = trio.Event()
        self.closed = trio.Event()
        self.close_reason: StopReason | None = None
        self.close_detail = ""
        self._close_after_flush = False
        self.bytes_sent = 0
        self.frames_sent = 0
        # Pairs of a full load sent so far, and in all (None until a full load streams).
        self._load_pairs_sent = 0
        self._load_pairs: int | None = None
        self._scope = trio.CancelScope()
        # Direct mode: once the initial sync is sent over a stream whose sends never block
        # (a simulated link), commits leave through the master's single flusher task, which
        # sends to every such link in one run: a scheduler trip per commit for the whole
        # cluster instead of one per replica. Control frames still wake this link's sender.
        self._direct = False
        self.queued = False  # queued on the master's link reader
        #: How long a graceful close may wait for a peer that does not read.
        self.flush_timeout = 5.0

    # -- called by the node (synchronously) -----------------------------------------------
    @property
    def max_frame_size(self) -> int:
        """Frames are cut to fit this (the replica's limit, assumed equal to the master's)."""
        return self._max_frame_size

    @max_frame_size.setter
    def max_frame_size(self, size: int) -> None:
        self._max_frame_size = size
        # Kept, not derived per send: the flusher compares it for every link of every commit.
        self._txn_limit = max_transaction_bytes(size)

    @property
    def unsent_bytes(self) -> int:
        """Bytes queued but not yet handed to the transport."""
        queued = sum(map(len, self._frames))
        if self._reads_outbox:
            queued += self.master.outbox.bytes_after(self._next - 1)
        return queued

    @property
    def load_progress(self) -> float | None:
        """The share (0-1) of a full load's pairs sent so far; None when none streamed."""
        if self._load_pairs is None:
            return None
        return self._load_pairs_sent / self._load_pairs if self._load_pairs else 1.0

    @property
    def is_synced(self) -> bool:
        """Whether the replica finished its initial sync and acknowledges commits."""
        return self.machine.state is not LinkState.SYNCING

    def start_at(self, txid: int) -> None:
        """Send transactions from `txid` on (before `run`; the outbox holds them)."""
        self._next = txid
        self._base = txid - 1

    @property
    def needed_from(self) -> int:
        """The oldest txid of the outbox this link still needs (to send, or for its lag)."""
        # The machine's position, which only ever moves forward, is the link's own.
        return max(self.machine.acked, self._base) + 1

    def _has_queued(self) -> bool:
        return bool(self._frames) or (self._reads_outbox and self._next <= self.master.outbox.last)

    def flush_direct(self, now: float, shared: Batch | None = None) -> Batch | None:
        """Send what is queued now, from the master's flusher (see `MasterSide.flusher`).

        Only for a link in direct mode: its stream never blocks a send and its sender task
        is idle in its loop, so this cannot interleave with a send of its own.

        Args:
            now: the time of the flusher's pass.
            shared: what the link before this one in the same pass was sent from the outbox.
                A link at the same position sends the same bytes without asking the outbox:
                with a hundred links per commit, asking was most of a flush's calls. Only
                from the same pass: nothing is committed during one (it never yields), so
                the batch still ends at the outbox's last transaction.

        Returns:
            What the next link of the pass may share: what this one was sent from the
            outbox, else `shared`.
        """
        if not self._direct:
            return shared
        machine = self.machine
        batch = shared
        if self._frames:
            self._flush_entries_into_frames()
            frames = self._frames
            data = b"".join(frames)
            size, count = len(data), len(frames)
            # Emptied, not replaced: a fresh list per link per commit round would live for
            # a whole round, long enough to be promoted by the garbage collector.
            frames.clear()
        else:
            if (
                batch is None
                or batch.start != self._next
                or batch.generation != machine.generation
                or batch.limit != self._txn_limit
            ):
                outbox = self.master.outbox
                if self._next > outbox.last:
                    return shared
                # Only outbox transactions: the joined frames are the same bytes for every
                # link at this position.
                batch = outbox.batch(self._next, machine.generation, self._txn_limit)
            data, size, count = batch.data, batch.size, batch.count
            self._last_txid = batch.last
            self._next = batch.last + 1
        machine.sent(now, self._last_txid)
        self.load_sent = True
        try:
            self.stream.try_send_nowait(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.abort(StopReason.CONNECTION_ABORTED, f"link to {self.name} lost: {exc!r}")
            return batch
        self.bytes_sent += size
        self.frames_sent += count
        return batch

    @property
    def lag_bytes(self) -> int:
        """Bytes of transactions queued or sent but not yet acknowledged by the replica.

        This is the replica's real lag whatever the transport buffers, so it is what
        `MasterParams.async_buffer_bytes` bounds.
        """
        if self._reads_outbox:
            return self.master.outbox.bytes_after(self.needed_from - 1)
        ends = self._lag_ends
        if not ends:  # aborted: nothing more will be sent or acknowledged
            return 0
        # Closing after a flush: what it is due ended at the commits made before it began
        # to close, whose offsets it took along from the outbox.
        return ends[-1] - ends[min(self.needed_from - 1 - self._lag_from, len(ends) - 1)]

    def acked(self) -> None:
        """An acknowledgement was heard (its txid is the machine's): wake `wait_ack`."""
        # Made only when someone waits: an Event per ack would live a whole commit round on
        # each of hundreds of links, long enough to be promoted and collected in bulk.
        if self._ack_event is not None:
            self._ack_event.set()
            self._ack_event = None

    async def wait_ack(self) -> None:
        """Wait for the next acknowledgement (or the link closing)."""
        if not self.closed.is_set():
            if self._ack_event is None:
                self._ack_event = trio.Event()
            await self._ack_event.wait()

    def push_frame(self, frame: bytes) -> None:
        """Queue a control frame, after every entry queued so far."""
        self._flush_entries_into_frames()
        self._frames.append(frame)
        self._wake.set()

    def close_after_flush(self, reason: StopReason, detail: str) -> None:
        """Send what is queued, then close the link."""
        self._direct = False  # the sender flushes the rest and closes
        # What it is due is what was committed until now: later commits are not for it.
        self._flush_entries_into_frames()
        if self._reads_outbox:
            self._reads_outbox = False
            self._lag_from = self.needed_from - 1
            self._lag_ends = self.master.outbox.ends(self._lag_from)
        self._set_closed(reason, detail)
        self.master.drop_link(self)
        self._close_after_flush = True
        self._start_flush_deadline()
        self._wake.set()

    def abort(self, reason: StopReason, detail: str) -> None:
        """Close the link at once, dropping whatever is queued."""
        self._direct = False
        self._reads_outbox = False
        self._lag_ends = []
        self._set_closed(reason, detail)
        self.master.drop_link(self)
        self._scope.cancel()

    def _flush_entries_into_frames(self) -> None:
        """Frame the outbox's transactions due to this link into `_frames`, in order."""
        outbox = self.master.outbox
        if not self._reads_outbox or self._next > outbox.last:
            return
        frames, _data = outbox.frames(self._next, self.machine.generation, self._txn_limit)
        self._frames.extend(frames)
        self._last_txid = outbox.last
        self._next = outbox.last + 1

    # -- tasks -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve the link until it closes; never raises for a peer's misbehaviour."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._guarded, self._receiver)
                    nursery.start_soon(self._guarded, self._timer)
                    await self._guarded(self._sender)
                    nursery.cancel_scope.cancel()
        finally:
            if self.snapshot is not None:
                self.snapshot.close()
                self.snapshot = None
            self.master.unread_link(self)
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            self._set_closed(StopReason.CONNECTION_ABORTED, "link closed")
            if self._ack_event is not None:
                self._ack_event.set()
            self.closed.set()
            self.master.link_closed(self)

    async def _guarded(self, task: Callable[[], Awaitable[None]]) -> None:
        # Each task turns the peer's failures into a closed link, so that one bad replica
        # ends only its own link and never raises into the master's nursery.
        try:
            await task()
        except _PEER_FAILURES as exc:
            self._peer_failed(exc)

    def _peer_failed(self, exc: BaseException) -> None:
        if isinstance(exc, EOFError):
            self.abort(StopReason.CONNECTION_ABORTED, f"{self.name} closed the link")
        elif isinstance(exc, RemoteProtocolError):
            self.abort(StopReason.CONNECTION_ABORTED, f"bad frame from {self.name}: {exc}")
        else:
            self.abort(StopReason.CONNECTION_ABORTED, f"link to {self.name} lost: {exc!r}")

    def _set_closed(self, reason: StopReason, detail: str) -> None:
        if self.close_reason is None:
            self.close_reason, self.close_detail = reason, detail

    async def _sender(self) -> None:
        if self.first_frame:
            # Set before sending, like everything the replica's answer may depend on.
            self.load_sent = self.snapshot is None and not self._has_queued()
            await self.stream.send(self.first_frame)
        if self.snapshot is not None:
            await self._send_snapshot(self.snapshot)
        if self.stream.can_send_nowait:
            self._direct = True
        while True:
            if not self._has_queued():
                if not self._direct and self._reads_outbox and not self._waiting_commit:
                    # Woken by the next commit (a link in direct mode is the flusher's).
                    self._waiting_commit = True
                    self.master.wake_on_commit(self)
                await self._wake.wait()
                self._wake = trio.Event()
            self._flush_entries_into_frames()
            if self._frames:
                frames, self._frames = self._frames, []
                data = b"".join(frames)
                # Recorded before sending: the ack may be processed before send() returns.
                self.machine.sent(trio.current_time(), self._last_txid)
                self.load_sent = True  # what the sync replays was queued before the loop
                # The wait above is this loop's schedule point: a link that never blocks
                # (a simulated one) sends without a second one.
                if not self.stream.try_send_nowait(data):
                    await self.stream.send(data)
                self.bytes_sent += len(data)
                self.frames_sent += len(frames)
            if self._close_after_flush and not self._frames:
                return

    def _start_flush_deadline(self) -> None:
        self._scope.deadline = min(self._scope.deadline, trio.current_time() + self.flush_timeout)

    async def _send_snapshot(self, snapshot: Snapshot) -> None:
        generation = self.machine.generation
        self._load_pairs, self._load_pairs_sent = snapshot.count, 0
        await self._send_counted(
            m.SnapshotBegin(generation, snapshot.txid, snapshot.last_generation,
                            snapshot.count).encode()
        )  # fmt: skip
        batch: list[bytes] = []
        pairs = 0
        for items in snapshot.chunks(SNAPSHOT_CHUNK_ITEMS):
            batch.extend(self._chunk_frames(generation, items))
            pairs += len(items) // 2  # chunks are flat [k1, v1, k2, v2, ...]
            if len(batch) >= SNAPSHOT_CHUNKS_PER_SEND:
                await self._send_counted(b"".join(batch), pairs)
                batch, pairs = [], 0
        batch.append(m.SnapshotEnd(generation, snapshot.txid, snapshot.count).encode())
        # Entries queued meanwhile follow on from the snapshot, so they are all > its txid.
        self._last_txid = max(self._last_txid, snapshot.txid)
        self.machine.sent(trio.current_time(), snapshot.txid)
        self.load_sent = not self._has_queued()
        await self._send_counted(b"".join(batch), pairs)
        snapshot.close()
        self.snapshot = None

    async def _send_counted(self, data: bytes, pairs: int = 0) -> None:
        await self.stream.send(data)
        self.bytes_sent += len(data)
        self._load_pairs_sent += pairs

    def _chunk_frames(self, generation: int, items: list[Any]) -> list[bytes]:
        """Encode snapshot pairs as chunks that each fit in a frame (halving as needed)."""
        frame = m.SnapshotChunk(generation, items).encode()
        if len(frame) <= self.max_frame_size - FRAME_SLACK or len(items) <= 2:
            return [frame]  # one pair always fits: its transaction did
        half = len(items) // 4 * 2  # on a pair boundary
        return [
            *self._chunk_frames(generation, items[:half]),
            *self._chunk_frames(generation, items[half:]),
        ]

    async def _receiver(self) -> None:
        if self.stream.can_watch:
            # A simulated link: the master's one reader reads it with all the others.
            self.master.read_link(self)
            return
        while True:
            values = await self.stream.receive()
            if self._hear(values, trio.current_time()):
                return

    def read_ready(self, now: float) -> None:
        """Read and act on what has arrived by `now`, without waiting (the master's reader)."""
        stream = self.stream
        try:
            while True:
                values = stream.receive_nowait()
                if values is None:
                    return
                if self._hear(values, now):
                    self.master.unread_link(self)
                    return
                if stream.drained:
                    # That read took all there was: whatever arrives later wakes the reader
                    # again, so a second read (one per replica per commit) would find nothing.
                    return
        except _PEER_FAILURES as exc:
            self._peer_failed(exc)

    def _hear(self, values: list[Any], now: float) -> bool:
        """Act on the messages of one read; True when the link has nothing more to hear."""
        machine = self.machine
        master = self.master
        for value in values:
            if machine.state in _FINAL_STATES:
                # Closed by another task (a detach at synch_timeout, the timer's abort)
                # while this one waited for the read: what it read is not heard.
                return True
            event = machine.receive_value(value, now)
            if event is None:  # the usual Ack, taken by the machine's fast path
                master.ack(self, machine.acked)
            elif master.link_event(self, event):
                return True
            if machine.state in _FINAL_STATES:
                # After a KillMaster (or a close) the link has nothing more to hear: what
                # else came in the same read is ignored, not fed to a finished machine.
                return True
        return False

    async def _timer(self) -> None:
        while True:
            await trio.sleep_until(self.machine.next_deadline)
            result = self.machine.tick(trio.current_time())
            if isinstance(result, m.KeepAlive):
                self.push_frame(result.encode())
            elif result is not None:
                self.abort(result.reason, result.detail)
                return
