"""The master side of a node: links, commits and acks, force-master pause, step-down.

`MasterSide` holds every piece of state that only matters while the node is (or was) a
master. It reaches the node through a narrow surface: its name, cluster name, storage and
shared transaction log, the clock, the event log, role changes, its nursery and its listeners.
The public methods live on `Node`, which delegates here.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

import trio
import trio.lowlevel

from ..protocol import (
    CommitFailedError,
    InvalidArgumentError,
    KilledByReplicaError,
    LocalProtocolError,
    MasterLinkMachine,
    MasterView,
    NetworkTimeoutError,
    NodeClosedError,
    NoQuorumError,
    NotMasterError,
    StopReason,
    SyncKind,
    TransactionTooLargeError,
    decide_handshake,
)
from ..protocol import _history as h
from ..protocol import _master as mm
from ..protocol import _messages as m
from ..transports import FramedStream
from ._events import CommitFailed, Connected, ReplicaDetached, ReplicaSynced
from ._link import ReplicaLink, max_transaction_bytes
from ._link_reader import LinkReader
from ._outbox import Outbox
from ._params import (
    AckPolicy,
    CommitResult,
    MasterMode,
    MasterParams,
    ReplicaInfo,
    ReplicaParams,
    Role,
)

if TYPE_CHECKING:
    from ._node import Node

#: An asynchronous writer yields to the link senders after this many queued bytes, so that
#: frames leave in large batches instead of one send per transaction.
_ASYNC_YIELD_BYTES = 256 * 1024
_ASYNC_YIELD_COUNT = 512
#: The flusher forgets what no link needs once the outbox holds this many transactions.
_TRIM_EVERY = 64


class _PendingCommit:
    """A synchronous commit waiting for acknowledgements."""

    __slots__ = (
        "acked", "deadline", "detached", "done", "error", "needed", "required", "timed_out", "txid",
    )  # fmt: skip

    def __init__(self, txid: int, required: set[str], needed: int, deadline: float) -> None:
        self.txid = txid
        self.required = required
        self.needed = needed
        self.deadline = deadline
        self.acked: list[str] = []
        self.detached: list[str] = []
        self.done = trio.Event()
        self.error: Exception | None = None
        self.timed_out = False  # replicas were detached for not acknowledging in time

    def check(self) -> bool:
        """Set `done` if the commit is decided; return whether it is.

        It is when `needed` replicas acknowledged it, or when no replica it waits for is
        left (fewer acknowledged: the caller judges).
        """
        if len(self.acked) >= self.needed or not self.required:
            self.done.set()
            return True
        return False

    def ack(self, name: str) -> bool:
        """Count the acknowledgement of `name`, one of `required`; return whether decided."""
        required, acked = self.required, self.acked
        required.remove(name)
        acked.append(name)
        # `check`, inline: this runs for every replica of every synchronous commit.
        if len(acked) >= self.needed or not required:
            self.done.set()
            return True
        return False


class MasterSide:
    """The master role of one `Node` (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self.params: MasterParams | None = None
        self.links: dict[str, ReplicaLink] = {}
        self._pending: deque[_PendingCommit] = deque()
        self._pending_added = trio.Event()
        self._pause_link: ReplicaLink | None = None
        self._static_loads = 0
        self._unpaused = trio.Event()
        self._unpaused.set()
        self._arrivals: list[trio.MemorySendChannel[ReplicaInfo]] = []
        self._unclaimed: deque[ReplicaInfo] = deque(maxlen=64)
        self.killed: KilledByReplicaError | None = None
        self.writes_disabled = False
        #: The history id this node minted (the one it may write in), if any since it started,
        #: and the generation it writes in there (a deposed master that keeps writing stays
        #: in its own generation, whatever newer one it has seen and persisted).
        self._own_history: str | None = None
        self._own_generation = 0
        #: Where the master is, when this node knows it is not (told so when deposed).
        self.master_hint: str | None = None
        self._async_unflushed = 0
        self._async_unyielded = 0
        #: Every committed transaction an attached link still needs, kept once for all.
        self.outbox = Outbox()
        # Set by a commit for the flusher, which sends to every link in direct mode.
        self._committed = trio.Event()
        self._flusher_started = False
        # Links (not in direct mode) whose sender waits for the next commit.
        self._commit_waiters: list[ReplicaLink] = []
        self._reader = LinkReader()
        self._watchdog_started = False
        # statistics
        self.commits = 0
        self.commit_failures = 0

    # -- becoming and stopping a master --------------------------------------------------------
    def set_params(self, params: MasterParams, *, force: bool = False) -> None:
        node = self._node
        if node._role is not Role.MASTER and self.killed is not None and not force:
            # It handed over (or saw proof of a newer history): a newer master may hold
            # acknowledged transactions this node lacks, and promoting it would lose them.
            raise LocalProtocolError(
                f"node {node.name!r} stepped down for {self.killed.new_master} "
                f"(generation {self.killed.generation}), which may hold transactions it lacks: "
                "attach it to the current master first (it resyncs), then promote it, or pass "
                "force=True to accept losing them"
            )
        self.params = params
        node._resize_log(params.trans_log_length)
        if node._role is not Role.MASTER:
            if node.generation >= m.MAX_COUNTER:
                raise InvalidArgumentError(f"generation {node.generation} cannot be raised")
            node.storage.set_generation(node.generation + 1)
            self._start_history()
            self.killed = None
            self.writes_disabled = False
            self.master_hint = None
            node._set_role(Role.MASTER)

    def become_master_after_force(self, params: ReplicaParams) -> None:
        node = self._node
        master_params = params.master_params or self.params or MasterParams()
        self.params = master_params
        node._resize_log(master_params.trans_log_length)
        self.writes_disabled = False
        self.killed = None
        self._start_history()
        node._set_role(Role.MASTER)

    def _start_history(self) -> None:
        """Mint a history id and write in it from the next txid on (protocol._history)."""
        node = self._node
        history_id = node._new_history_id()
        node.storage.set_history(h.extend(node.storage.history, history_id, node.txid))
        self._own_history = history_id
        self._own_generation = node.generation

    def resynced(self) -> None:
        """This node synced as a replica: it holds the current history, so it may be promoted."""
        self.killed = None
        self.writes_disabled = False

    def require_master(self) -> None:
        if self._node._role is not Role.MASTER or self.params is None:
            if self.killed is not None:
                raise self.killed
            raise LocalProtocolError(
                f"node {self._node.name!r} is not a master: call set_master_params() first"
            )

    def close(self) -> None:
        """The node is closing: end every link.

        No `Detach` is sent (the node goes away as a process exits), so each replica reads
        the end of its connection: CONNECTION_ABORTED, on both sides' records.
        """
        for link in list(self.links.values()):
            link.abort(StopReason.CONNECTION_ABORTED, "the master node is closing")

    # -- handshake -----------------------------------------------------------------------------
    def _generation_of(self, txid: int) -> int | None:
        return self._node._log.generation_of(txid)

    def _master_view(self) -> MasterView:
        node = self._node
        params = self.params
        assert params is not None
        return MasterView(
            cluster=node.cluster_name,
            node=node.name,
            generation=node.generation,
            txid=node.txid,
            last_generation=node.storage.last_generation,
            generation_of=self._generation_of,
            stateful=MasterMode.STATEFUL in params.mode,
            accepting=len(self.links) < params.max_replicas,
            names_in_use=frozenset(self.links),
            keepalive_interval=params.keepalive_interval,
            history=node.storage.history,
        )

    async def serve_replica(self, framed: FramedStream, hello: m.Hello) -> None:
        """Serve one replica that sent `hello`, from the handshake until its link closes."""
        node = self._node
        params = self.params
        if node._role is not Role.MASTER or params is None:
            hint = f"; the master is at {self.master_hint}" if self.master_hint else ""
            detail = f"node {node.name!r} is not a master{hint}"
            node._refuse(hello.node, detail)
            # Not HANDSHAKE_FAILED: nothing is incompatible, this node may become a master
            # (or the replica may find the real one), so the replica waits and tries again.
            reject = m.Reject(node.generation, int(StopReason.CONNECTION_ABORTED), detail)
            await node._send_and_close(framed, reject.encode())
            return
        view = self._master_view()
        reply, sync = decide_handshake(hello, view)
        if isinstance(reply, m.Reject):
            node._refuse(hello.node, reply.detail)
            if mm.proves_newer_history(hello, view):
                self._step_down(hello.generation, None, None, stale=True)
            await node._send_and_close(framed, reply.encode())
            return
        now = node._now()
        machine = MasterLinkMachine(
            replica=hello.node,
            generation=node.generation,
            sync_target=node.txid,
            txid=0 if sync is SyncKind.FULL else hello.txid,
            keepalive_interval=params.keepalive_interval,
            detach_timeout=params.detach_timeout,
            initial_timeout=params.initial_timeout,
            now=now,
        )
        link = ReplicaLink(self, hello.node, framed, machine, sync, hello.address)
        link.max_frame_size = node.max_frame_size
        link.flush_timeout = params.commit_timeout or 5.0
        link.first_frame = reply.encode()
        if sync is SyncKind.FULL:
            link.snapshot = node.storage.snapshot()
            if MasterMode.HOTSYNC not in params.mode:
                link.static_load = True
                self._static_loads += 1
                self._unpaused = trio.Event()
        outbox = self.outbox
        if not self.links:
            outbox.reset(node.txid + 1)  # nobody needs what it held
        if sync is SyncKind.INCREMENTAL and hello.txid < outbox.first - 1:
            # Its backlog comes from the transaction log, into the outbox.
            outbox.prepend(node._log.packed(hello.txid + 1, outbox.first))
        link.start_at(hello.txid + 1 if sync is SyncKind.INCREMENTAL else node.txid + 1)
        # From here on every commit reaches this link: no await since the snapshot was taken.
        self.links[hello.node] = link
        node._record(Connected(now, node.name, hello.node, hello.address))
        await link.run()

    # -- link events (called by ReplicaLink) ---------------------------------------------------
    def _static_load_done(self) -> None:
        self._static_loads -= 1
        self._maybe_unpause()

    def _maybe_unpause(self) -> None:
        if self._static_loads == 0 and self._pause_link is None:
            self._unpaused.set()

    def link_event(self, link: ReplicaLink, event: mm.LinkEvent) -> bool:
        """React to one event of a link; return True when the link must close."""
        node = self._node
        if isinstance(event, mm.Acked):
            self.ack(link, event.txid)
        elif isinstance(event, mm.LinkSynced):
            if link.static_load:  # a static sync holds writes until the replica is synced
                link.static_load = False
                self._static_load_done()
            info = ReplicaInfo(link.name, link.sync.name.lower(), event.txid)
            node._record(ReplicaSynced(node._now(), node.name, link.name, info.sync, event.txid))
            self.ack(link, event.txid)
            while self._arrivals:
                channel = self._arrivals.pop(0)
                try:
                    channel.send_nowait(info)
                    break
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    continue
            else:
                # Nobody waits right now: keep it for the next attach_replica call, so two
                # replicas that sync at once are both reported.
                self._unclaimed.append(info)
        elif isinstance(event, mm.ReplicaLeft):
            link.abort(event.reason, event.detail)
            return True
        elif isinstance(event, mm.PromoteRequested):
            self._begin_pause(link)
        elif isinstance(event, mm.KillRequested):
            self._step_down(event.generation, event.node, event.address, promoter=link)
        return False

    def ack(self, link: ReplicaLink, txid: int) -> None:
        """`link`'s replica applied every transaction up to `txid` (the machine checked it)."""
        link.acked()
        name = link.name
        decided = False
        for pending in self._pending:
            if pending.txid > txid:
                break
            if name in pending.required and pending.ack(name):
                decided = True
        # Whatever decides a commit pops the decided ones at the front (here, drop_link, the
        # watchdog), so the front is undecided until an acknowledgement decides something.
        if decided:
            self._pop_decided()

    def _pop_decided(self) -> None:
        pending = self._pending
        while pending and pending[0].done.is_set():
            pending.popleft()

    def link_closed(self, link: ReplicaLink) -> None:
        self.drop_link(link)
        if link.static_load:
            link.static_load = False
            self._static_load_done()
        if self._pause_link is link:
            self._pause_link = None
            self._maybe_unpause()

    def drop_link(self, link: ReplicaLink) -> None:
        """Stop counting `link` as attached: it no longer takes part in commits."""
        node = self._node
        if self.links.get(link.name) is link:
            del self.links[link.name]
            reason = link.close_reason or StopReason.CONNECTION_ABORTED
            node._record(
                ReplicaDetached(node._now(), node.name, link.name, reason, link.close_detail)
            )
        for pending in self._pending:
            if link.name in pending.required:
                pending.required.discard(link.name)
                pending.detached.append(link.name)
                pending.check()
        self._pop_decided()

    def wake_on_commit(self, link: ReplicaLink) -> None:
        """The sender of `link` (not in direct mode) waits for the next commit."""
        self._commit_waiters.append(link)

    def _committed_one(self) -> None:
        """A transaction entered the outbox: get it sent to every link."""
        if not self._flusher_started:
            self._flusher_started = True
            self._node._spawn().start_soon(self.flusher)
        self._committed.set()
        waiters = self._commit_waiters
        if waiters:
            for link in waiters:
                link._waiting_commit = False
                link._wake.set()
            waiters.clear()

    def read_link(self, link: ReplicaLink) -> None:
        """Have the master's one link reader read `link` (a simulated one) from now on."""
        self._reader.add(link, self._node._spawn().start_soon)

    def unread_link(self, link: ReplicaLink) -> None:
        """The reader stops reading `link` (it closed, or has nothing more to hear)."""
        self._reader.remove(link)

    async def flusher(self) -> None:
        """Send the transactions committed to every direct-mode link, once per scheduler pass.

        Runs after the committing tasks yield, so that what several writers committed meanwhile
        leaves in one frame per link (group commit), as with the links' own senders. Then
        forgets what no link needs any more.
        """
        while True:
            await self._committed.wait()
            self._committed = trio.Event()
            links = list(self.links.values())
            now = trio.current_time()  # one pass, one instant: as one send to each
            # Links at one position are sent the same frames: each hands them to the next.
            shared = None
            for link in links:
                shared = link.flush_direct(now, shared)
            self._trim(links)

    def _trim(self, links: list[ReplicaLink]) -> None:
        outbox = self.outbox
        # Not every round: one synchronous commit per round would pay a pass over every
        # link each time, for a few entries.
        if len(outbox) >= _TRIM_EVERY:
            outbox.trim(min((link.needed_from for link in links), default=outbox.last + 1))

    # -- force master: pause, then step down ---------------------------------------------------
    def _begin_pause(self, link: ReplicaLink) -> None:
        if self._pause_link is not None:
            link.abort(StopReason.CONNECTION_ABORTED, "another force master is in progress")
            return
        self._pause_link = link
        self._unpaused = trio.Event()
        link.push_frame(link.machine.pause_ready(self._node.txid).encode())
        params = self.params
        timeout = params.commit_timeout if params and params.commit_timeout else 5.0
        self._node._spawn().start_soon(self._pause_watchdog, link, timeout)

    async def _pause_watchdog(self, link: ReplicaLink, timeout: float) -> None:
        await trio.sleep(timeout)
        if self._pause_link is link and self._node._role is Role.MASTER:
            link.abort(StopReason.CONNECTION_ABORTED, "force master did not complete in time")

    def _step_down(
        self,
        generation: int,
        new_master: str | None,
        address: str | None,
        *,
        promoter: ReplicaLink | None = None,
        stale: bool = False,
    ) -> None:
        """Stop being the master: a replica took over, or a newer history was proven."""
        node = self._node
        if node._role is not Role.MASTER:
            return
        params = self.params
        disable = params.disable_writes_on_kill if params else True
        self.killed = KilledByReplicaError(new_master or "?", address, generation)
        self.master_hint = address
        # Persisted even when it keeps writing: a later promotion must go past the newer
        # generation, and after a restart the node knows its history was superseded.
        node.storage.set_generation(max(generation, node.generation))
        if stale or disable:
            self.writes_disabled = True
        if stale:
            # A newer master exists that may lack whatever waits for acknowledgements here.
            for pending in self._pending:
                if not pending.done.is_set():
                    pending.error = CommitFailedError(
                        f"the master stepped down (a newer history exists) before txid "
                        f"{pending.txid} was confirmed; it may be lost",
                        txid=pending.txid,
                    )
                    pending.done.set()
            self._pending.clear()
        if promoter is not None:
            promoter.push_frame(m.MasterKilled(generation).encode())
            promoter.close_after_flush(StopReason.BECOMES_MASTER, "took over as master")
        for link in list(self.links.values()):
            if link is promoter:
                continue
            if new_master is not None:
                link.push_frame(m.MasterChanged(generation, new_master, address).encode())
            link.close_after_flush(
                StopReason.MASTER_REQUESTED_DISCONNECT, f"the master is now {new_master}"
            )
            # The replica will follow the new master; it no longer counts for commits here.
            self.drop_link(link)
        self._pause_link = None
        self._unpaused.set()
        node._set_role(Role.STANDALONE)

    # -- operator calls ------------------------------------------------------------------------
    async def attach_replica(self, address: str | None, timeout: float) -> ReplicaInfo:
        node = self._node
        self.require_master()
        if address is not None:
            await node.listen(address)
        elif node._address is None:
            raise InvalidArgumentError("the node listens nowhere: pass an address")
        while self._unclaimed:
            info = self._unclaimed.popleft()
            if info.name in self.links:
                await trio.lowlevel.checkpoint()
                return info
        send, receive = trio.open_memory_channel[ReplicaInfo](1)
        self._arrivals.append(send)
        try:
            with trio.move_on_after(timeout) as scope:
                async with trio.open_nursery() as nursery:

                    async def watch_kill() -> None:
                        while node._role is Role.MASTER and not node._crashed:
                            await node._role_changed.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(watch_kill)
                    info = await receive.receive()
                    nursery.cancel_scope.cancel()
                    return info
            node._check_alive()
            if self.killed is not None:
                raise self.killed
            if scope.cancelled_caught:
                raise NetworkTimeoutError(
                    f"no replica attached within {timeout:g} s",
                    stop_reason=StopReason.CONNECTION_ABORTED,
                    address=address or node._address,
                )
            raise NotMasterError(f"node {node.name!r} stopped being the master")
        finally:
            if send in self._arrivals:
                self._arrivals.remove(send)
            send.close()
            receive.close()

    async def serve_replicas(self, address: str | None, task_status: trio.TaskStatus[str]) -> None:
        node = self._node
        self.require_master()
        if address is None:
            if node._address is None:
                raise InvalidArgumentError("the node listens nowhere: pass an address")
            bound = node._address
        else:
            bound = await node.listen(address)
        task_status.started(bound)
        while node._role is Role.MASTER and not node._crashed:
            await node._role_changed.wait()
        node._check_alive()
        if self.killed is not None:
            raise self.killed

    def detach_replica(self, name: str) -> None:
        link = self.links.get(name)
        if link is None:
            raise InvalidArgumentError(
                f"no replica named {name!r} is attached to {self._node.name!r}"
            )
        self._detach(link, f"detached by master {self._node.name}")

    def _detach(self, link: ReplicaLink, detail: str) -> None:
        link.push_frame(m.Detach(self._node.generation, detail).encode())
        link.close_after_flush(StopReason.MASTER_REQUESTED_DISCONNECT, detail)
        self.drop_link(link)

    def detach_all_replicas(self) -> None:
        for link in list(self.links.values()):
            self._detach(link, f"all replicas detached by master {self._node.name}")

    def stop_master(self) -> None:
        self.require_master()
        for link in list(self.links.values()):
            self._detach(link, f"master {self._node.name} stopped replication")
        self._node._set_role(Role.STANDALONE)

    # -- commits -------------------------------------------------------------------------------
    def check_writable(self) -> None:
        node = self._node
        session = node._session
        if node._role is Role.REPLICA:
            raise NotMasterError(
                f"node {node.name!r} is a replica and cannot accept writes",
                master_address=session.master_address if session else None,
            )
        if session is not None and node._role is not Role.MASTER:
            # An attach in progress counts as a replica from its first step: its handshake
            # announced this node's txid, so a local write now would fork it from the master.
            raise NotMasterError(
                f"node {node.name!r} is attaching to a master and cannot accept writes",
                master_address=session.master_address,
            )
        if self.writes_disabled:
            raise NotMasterError(
                f"node {node.name!r} stepped down and refuses writes",
                master_address=self.master_hint,
            )
        if (
            node._role is Role.STANDALONE
            and node.generation > 0
            and h.current_id(node.storage.history) != self._own_history
        ):
            # Its history belongs to another master: writing here would make a second writer
            # in it. Only a fresh database (generation 0), or a former master still in the
            # history it minted, is writable without being a master.
            raise NotMasterError(
                f"node {node.name!r} holds a replicated database (generation {node.generation}) "
                "and is not a master: call set_master_params() to make it one",
                master_address=self.master_hint,
            )
        if node._closed:
            raise NodeClosedError(f"node {node.name!r} is closed")

    async def commit(self, ops: list[list[Any]]) -> CommitResult:
        node = self._node
        await trio.lowlevel.checkpoint_if_cancelled()
        self.check_writable()  # again: the role may have changed since the block began
        while not self._unpaused.is_set():
            await self._unpaused.wait()
            self.check_writable()
        params = self.params if node._role is Role.MASTER else None
        links = self.links
        if params is not None and params.quorum:
            synced = sum(1 for link in links.values() if link.is_synced)
            if synced < params.quorum:
                self.commit_failures += 1
                raise NoQuorumError(synced, params.quorum)
        if h.current_id(node.storage.history) != self._own_history:
            # A standalone fresh database: its writes get a history of their own, so they
            # can never pass for another node's transactions of the same txids.
            self._start_history()
        storage = node.storage
        txid = storage.txid + 1
        generation = self._own_generation
        try:
            packed = m.pack_entry(txid, generation, ops)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidArgumentError(f"a value is not msgpack-serializable: {exc}") from None
        limit = max_transaction_bytes(node.max_frame_size)
        if len(packed) > limit:
            # Committed, it could never reach a replica: every sync would fail on it.
            raise TransactionTooLargeError(len(packed), limit)
        storage.apply([[txid, generation, ops]])
        node._log.append(txid, generation, packed)
        self.commits += 1
        if links:
            self.outbox.append(txid, packed)
            self._committed_one()
        history = self._own_history or ""
        if params is not None and links:
            if MasterMode.ASYNC in params.mode or params.ack_policy is AckPolicy.NONE:
                await self._async_backpressure(params, len(packed))
                return CommitResult(txid, generation, history=history)
            return await self._wait_acks(params, txid, generation, history)
        await trio.lowlevel.checkpoint()
        return CommitResult(txid, generation, history=history)

    async def _async_backpressure(self, params: MasterParams, size: int) -> None:
        # Yielding once per transaction would cost a scheduler round trip each; yielding
        # every few hundred lets the senders ship them as one batch per link.
        self._async_unflushed += size
        self._async_unyielded += 1
        if (
            self._async_unflushed < _ASYNC_YIELD_BYTES
            and self._async_unyielded < _ASYNC_YIELD_COUNT
        ):
            return
        self._async_unflushed = 0
        self._async_unyielded = 0
        await trio.lowlevel.checkpoint()  # the link senders ship what is queued, in one batch
        limit = params.async_buffer_bytes
        for link in list(self.links.values()):
            if link.lag_bytes <= limit:
                continue
            # The replica lags by more than the buffer allows: writes wait for it to catch
            # up, for at most commit_timeout, then it is detached so the master goes on.
            with trio.move_on_after(params.commit_timeout or math.inf):
                while link.lag_bytes > limit and not link.closed.is_set():
                    await link.wait_ack()
            if link.lag_bytes > limit and not link.closed.is_set():
                self.commit_failures += 1
                link.abort(
                    StopReason.CONNECTION_ABORTED,
                    f"could not keep up: more than {limit} bytes behind for "
                    f"{params.commit_timeout:g} s (commit_timeout)",
                )

    async def _wait_acks(
        self, params: MasterParams, txid: int, generation: int, history: str
    ) -> CommitResult:
        node = self._node
        # A replica whose whole initial load is on its way counts too: it acknowledges as
        # soon as it has applied the load, and it may already report itself synced.
        # (load_sent first: an attribute, true of every synced link but one still being sent
        # what was queued after its Welcome.)
        required = {name for name, link in self.links.items() if link.load_sent or link.is_synced}
        policy = params.ack_policy
        needed = {
            AckPolicy.ALL: len(required),
            AckPolicy.QUORUM: len(required) // 2 + 1,
            AckPolicy.ONE: 1,
        }[policy]
        # A quorum is also a floor on acknowledgements (Redis's min-replicas-to-write with
        # WAIT): a commit confirmed by fewer replicas than the quorum is not a success.
        needed = max(needed, params.quorum)
        deadline = node._now() + (params.synch_timeout or math.inf)
        pending = _PendingCommit(txid, required, needed, deadline)
        pending.check()
        if not pending.done.is_set():
            # No cancel scope per commit: the acknowledgement watchdog enforces synch_timeout
            # for every waiting commit at once (a scope costs more than the rest of a wait).
            self._pending.append(pending)
            if not self._watchdog_started:
                # Started by the first commit that waits: most nodes of a large cluster
                # never are masters, and an idle task each would be memory for nothing.
                self._watchdog_started = True
                node._spawn().start_soon(self.ack_watchdog)
            self._pending_added.set()
            await pending.done.wait()
        else:  # no replica counts yet (all still loading), or the policy needs none
            await trio.lowlevel.checkpoint()
        error = pending.error
        if error is None and len(pending.acked) < params.quorum:
            gone = f" ({', '.join(pending.detached)} detached)" if pending.detached else ""
            error = CommitFailedError(
                f"txid {txid} is in the master's database but only {len(pending.acked)} "
                f"replicas acknowledged it, below the quorum of {params.quorum}{gone}: "
                "it may be lost if the master fails",
                txid=txid,
            )
        if error is not None:
            self.commit_failures += 1
            if isinstance(error, CommitFailedError):
                node._record(CommitFailed(node._now(), node.name, txid, str(error)))
            raise error
        if pending.timed_out:
            self.commit_failures += 1  # it succeeded, but only by detaching a late replica
        acked, detached = tuple(pending.acked), tuple(pending.detached)
        return CommitResult(txid, generation, acked, detached, history)

    async def ack_watchdog(self) -> None:
        """Detach replicas that leave a synchronous commit unacknowledged past synch_timeout.

        Waiting commits are in txid order, so their deadlines are too (for a given
        synch_timeout): sleeping until the oldest one's deadline is enough.

        A replica is judged on what reached this node in time, not on what this node found
        the time to read: at a deadline, acknowledgements already delivered (waiting in a
        link's buffer, or their reader ready to run, behind hundreds of other links or a
        garbage-collector pause) are heard first, then whoever is still missing is detached.
        """
        while True:
            while not self._pending:
                await self._pending_added.wait()
                self._pending_added = trio.Event()
            oldest = self._pending[0]
            await trio.sleep_until(oldest.deadline)
            now = self._node._now()
            await self._hear_delivered_acks(now)
            for pending in list(self._pending):
                if pending.deadline > now:
                    break
                if pending.done.is_set():
                    continue
                # Set first: aborting a link takes it out of `required` at once.
                pending.timed_out = bool(pending.required)
                for name in sorted(pending.required):
                    link = self.links.get(name)
                    if link is not None:
                        params = self.params
                        timeout = params.synch_timeout if params else 0.0
                        link.abort(
                            StopReason.CONNECTION_ABORTED,
                            f"no acknowledgement of txid {pending.txid} within {timeout:g} s "
                            "(synch_timeout)",
                        )
                pending.required.clear()
                pending.done.set()
            self._pop_decided()

    async def _hear_delivered_acks(self, now: float) -> None:
        """Let the link receivers run until they stop bringing acks for commits due by `now`.

        Each checkpoint lets every task that is ready run once (a reader with bytes in its
        buffer, a replica with a frame to apply); two in a row that bring no acknowledgement
        mean that what is still missing has not arrived. It ends: each round that does bring
        one shrinks a finite set.
        """

        def missing() -> int:
            return sum(
                len(p.required) for p in self._pending if p.deadline <= now and not p.done.is_set()
            )

        left, quiet = missing(), 0
        while left and quiet < 2:
            await trio.lowlevel.checkpoint()
            still = missing()
            quiet = quiet + 1 if still >= left else 0
            left = still

    def fail_all_pending(self, error: Exception) -> None:
        for pending in self._pending:
            if not pending.done.is_set():
                pending.error = error
                pending.done.set()
        self._pending.clear()
