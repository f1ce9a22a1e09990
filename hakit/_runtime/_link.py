"""The master's side of one attached replica: an out-buffer, a sender and a receiver task.

Speed comes from the shape: a commit appends an already-packed entry to every link's buffer
and wakes the link's sender, which frames everything buffered into one `Txns` message and
sends it with one `send_all`. Acknowledgements are cumulative, so one ack confirms a whole
batch. No commit ever awaits a per-link round trip of its own.
"""

from __future__ import annotations

from collections import deque
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

if TYPE_CHECKING:
    from ._master_side import MasterSide

_FINAL_STATES = (LinkState.KILLED, LinkState.CLOSED)
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
        #: Frames are cut to fit this (the replica's limit, assumed equal to the master's).
        self.max_frame_size = DEFAULT_MAX_FRAME_SIZE
        self.static_load = False
        self._entries: list[bytes] = []
        self._entries_bytes = 0
        self._last_txid = machine.acked
        self._frames: list[bytes] = []
        self._pushed_bytes = 0
        self._acked_bytes = 0
        self._unacked: deque[tuple[int, int]] = deque()  # (txid, pushed bytes up to it)
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
        self._dirty = False  # queued on the master's flusher
        #: How long a graceful close may wait for a peer that does not read.
        self.flush_timeout = 5.0

    # -- called by the node (synchronously) -----------------------------------------------
    @property
    def unsent_bytes(self) -> int:
        """Bytes queued but not yet handed to the transport."""
        return self._entries_bytes + sum(map(len, self._frames))

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

    def push_entry(self, txid: int, packed: bytes) -> None:
        """Queue one committed transaction."""
        self._entries.append(packed)
        self._entries_bytes += len(packed)
        self._last_txid = txid
        self._pushed_bytes += len(packed)
        self._unacked.append((txid, self._pushed_bytes))
        if self._direct:
            if not self._dirty:
                self._dirty = True
                self.master.link_dirty(self)
        else:
            self._wake.set()

    def flush_direct(self) -> None:
        """Send what is queued now, from the master's flusher (see `MasterSide.flusher`).

        Only for a link in direct mode: its stream never blocks a send and its sender task
        is idle in its loop, so this cannot interleave with a send of its own.
        """
        self._dirty = False
        if not self._direct:
            self._wake.set()
            return
        self._flush_entries_into_frames()
        if not self._frames:
            return
        # The lists are emptied, not replaced: a fresh pair per link per commit would live
        # for a whole commit round on every link, long enough to be promoted by the
        # garbage collector and swept only by a full collection.
        frames = self._frames
        data = b"".join(frames)
        count = len(frames)
        frames.clear()
        self.machine.sent(trio.current_time(), self._last_txid)
        self.load_sent = True
        try:
            self.stream.try_send_nowait(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.abort(StopReason.CONNECTION_ABORTED, f"link to {self.name} lost: {exc!r}")
            return
        self.bytes_sent += len(data)
        self.frames_sent += count

    @property
    def lag_bytes(self) -> int:
        """Bytes of transactions queued or sent but not yet acknowledged by the replica.

        This is the replica's real lag whatever the transport buffers, so it is what
        `MasterParams.async_buffer_bytes` bounds.
        """
        return self._pushed_bytes - self._acked_bytes

    def acked(self, txid: int) -> None:
        """Record a cumulative acknowledgement up to `txid`."""
        unacked = self._unacked
        while unacked and unacked[0][0] <= txid:
            self._acked_bytes = unacked.popleft()[1]
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
        self._set_closed(reason, detail)
        self.master.drop_link(self)
        self._close_after_flush = True
        self._start_flush_deadline()
        self._wake.set()

    def abort(self, reason: StopReason, detail: str) -> None:
        """Close the link at once, dropping whatever is queued."""
        self._direct = False
        self._set_closed(reason, detail)
        self.master.drop_link(self)
        self._scope.cancel()

    def _flush_entries_into_frames(self) -> None:
        entries = self._entries
        if not entries:
            return
        generation = self.machine.generation
        # Every link of a master is usually sent the same transactions: the frames made for
        # the last link are reused while they are for the same entries (the same objects,
        # pushed by the same commits) of the same generation and frame size.
        memo = self.master.txns_memo
        if (
            memo is not None
            and memo[0] is entries[0]
            and memo[1] is entries[-1]
            and memo[2] == len(entries)
            and memo[3] == generation
            and memo[4] == self.max_frame_size
        ):
            self._frames.extend(memo[5])
        else:
            # As many transactions per frame as fit: a replica far behind (incremental
            # resync, an asynchronous master) gets its backlog in frames it can receive.
            limit = max_transaction_bytes(self.max_frame_size)
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
            self.master.txns_memo = (
                entries[0], entries[-1], len(entries), generation, self.max_frame_size, frames
            )  # fmt: skip
            self._frames.extend(frames)
        entries.clear()
        self._entries_bytes = 0

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
        except EOFError:
            self.abort(StopReason.CONNECTION_ABORTED, f"{self.name} closed the link")
        except RemoteProtocolError as exc:
            self.abort(StopReason.CONNECTION_ABORTED, f"bad frame from {self.name}: {exc}")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.abort(StopReason.CONNECTION_ABORTED, f"link to {self.name} lost: {exc!r}")

    def _set_closed(self, reason: StopReason, detail: str) -> None:
        if self.close_reason is None:
            self.close_reason, self.close_detail = reason, detail

    async def _sender(self) -> None:
        if self.first_frame:
            # Set before sending, like everything the replica's answer may depend on.
            self.load_sent = self.snapshot is None and not self._entries and not self._frames
            await self.stream.send(self.first_frame)
        if self.snapshot is not None:
            await self._send_snapshot(self.snapshot)
        if self.stream.can_send_nowait:
            self._direct = True
        while True:
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
            if self._close_after_flush and not self._entries and not self._frames:
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
        self.load_sent = not self._entries and not self._frames
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
        machine = self.machine
        while True:
            for value in await self.stream.receive():
                if machine.state in _FINAL_STATES:
                    # Closed by another task (a detach at synch_timeout, the timer's abort)
                    # while this one waited for the read: what it read is not heard.
                    return
                event = machine.receive(m.parse_message(value), trio.current_time())
                if event is not None and self.master.link_event(self, event):
                    return
                if machine.state in _FINAL_STATES:
                    # After a KillMaster (or a close) the link has nothing more to hear: what
                    # else came in the same read is ignored, not fed to a finished machine.
                    return

    async def _timer(self) -> None:
        while True:
            await trio.sleep_until(self.machine.next_deadline)
            result = self.machine.tick(trio.current_time())
            if isinstance(result, m.KeepAlive):
                self.push_frame(result.encode())
            elif result is not None:
                self.abort(result.reason, result.detail)
                return
