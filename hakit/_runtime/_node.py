"""A node: one database and the roles it plays (standalone, master, replica).

The node is the trio shell around the sans-I/O machines of `hakit.protocol`: it moves bytes,
reads the clock, persists through its `Storage`, and runs its background tasks (listeners,
replica links) in its own nursery. Every decision about the protocol is made by the machines.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

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
    RemoteProtocolError,
    StopReason,
    SyncKind,
    decide_handshake,
)
from ..protocol import _master as mm
from ..protocol import _messages as m
from ..protocol._codec import DEFAULT_MAX_FRAME_SIZE, pack
from ..storage import DELETE, PUT, Key, MemoryStorage, Storage
from ..transports import FramedStream, SimulatedNetwork, open_listener, parse_address
from ._channels import Channel, ChannelManager, Handler, _Eid  # message channels (hook)
from ._events import (
    CommitFailed,
    Connected,
    ConnectionRefused,
    Event,
    EventLog,
    EventSink,
    ReplicaDetached,
    ReplicaSynced,
    RoleChanged,
)
from ._link import ReplicaLink
from ._params import (
    AckPolicy,
    CommitResult,
    MasterMode,
    MasterParams,
    ReplicaInfo,
    ReplicaMode,
    ReplicaParams,
    Role,
)
from ._replica_side import ReplicaRun, Session
from ._statistics import LinkStatistics, NodeStatistics

#: Transactions kept for resync by a node that is not (yet) a master, so that after a force
#: master the old master's other replicas can resync incrementally.
_REPLICA_LOG_LENGTH = 100_000
#: An asynchronous writer yields to the link senders after this many queued bytes, so that
#: frames leave in large batches instead of one send per transaction.
_ASYNC_YIELD_BYTES = 256 * 1024
_ASYNC_YIELD_COUNT = 512
#: How long a new connection may take to send its first frame when no master params say.
_DEFAULT_HANDSHAKE_TIMEOUT = 10.0


class _PendingCommit:
    """A synchronous commit waiting for acknowledgements."""

    __slots__ = ("acked", "deadline", "detached", "done", "error", "needed", "required", "txid")

    def __init__(self, txid: int, required: set[str], needed: int, deadline: float) -> None:
        self.txid = txid
        self.required = required
        self.needed = needed
        self.deadline = deadline
        self.acked: list[str] = []
        self.detached: list[str] = []
        self.done = trio.Event()
        self.error: Exception | None = None

    def check(self) -> None:
        if len(self.acked) >= min(self.needed, len(self.acked) + len(self.required)):
            self.done.set()


class Transaction:
    """A write transaction; use it as ``async with node.transaction() as tx:``.

    Writes are buffered and committed atomically on exit; an exception inside the block
    rolls everything back. Reads see the transaction's own writes first.
    """

    __slots__ = ("_node", "_ops", "_writes", "result")

    def __init__(self, node: Node) -> None:
        self._node = node
        self._ops: list[list[Any]] = []
        self._writes: dict[Key, Any] = {}
        #: The `CommitResult`, once committed.
        self.result: CommitResult | None = None

    def put(self, key: Key, value: Any) -> None:
        """Set `key` to `value` (any msgpack-serializable value)."""
        _check_key(key)
        self._ops.append([PUT, key, value])
        self._writes[key] = value

    def delete(self, key: Key) -> None:
        """Remove `key` (a no-op if it does not exist)."""
        _check_key(key)
        self._ops.append([DELETE, key])
        self._writes[key] = _DELETED

    def get(self, key: Key, default: Any = None) -> Any:
        """Return the value of `key` as this transaction sees it."""
        value = self._writes.get(key, _MISSING)
        if value is _MISSING:
            return self._node.storage.get(key, default)
        return default if value is _DELETED else value

    async def __aenter__(self) -> Transaction:
        self._node._check_writable()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None and self._ops:
            self.result = await self._node._commit(self._ops)


_MISSING = object()
_DELETED = object()


def _check_key(key: object) -> None:
    if not isinstance(key, str | bytes):
        raise InvalidArgumentError(f"keys must be str or bytes, got {type(key).__name__}")


class Node:
    """One database and its replication roles. Create with `open_node` or `Cluster.add_node`.

    Attributes:
        name: the node's name, unique in its cluster.
        storage: the node's database.
        cluster_name: replicas and masters must share it.
        events: the node's own event log.
    """

    def __init__(
        self,
        name: str,
        *,
        storage: Storage | None = None,
        cluster_name: str = "hakit",
        network: SimulatedNetwork | None = None,
        event_sink: EventSink | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError("a node needs a non-empty name")
        self.name = name
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        self.cluster_name = cluster_name
        self.events = EventLog(event_sink)
        self.max_frame_size = max_frame_size
        self._network = network
        self._address: str | None = None
        self._role = Role.STANDALONE
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._listeners: dict[str, trio.CancelScope] = {}
        # master state
        self._master_params: MasterParams | None = None
        self._links: dict[str, ReplicaLink] = {}
        # Recent transactions for incremental resync: (txid, generation, entry). A master keeps
        # the entry packed, as it is sent; a replica keeps the decoded entry it applied and
        # packs it only if it becomes a master and a follower needs it.
        self._log: deque[tuple[int, int, bytes | m.Entry]] = deque(maxlen=_REPLICA_LOG_LENGTH)
        self._pending: deque[_PendingCommit] = deque()
        self._pending_added = trio.Event()
        self._pause_link: ReplicaLink | None = None
        self._static_loads = 0
        self._unpaused = trio.Event()
        self._unpaused.set()
        self._arrivals: list[trio.MemorySendChannel[ReplicaInfo]] = []
        self._unclaimed: deque[ReplicaInfo] = deque(maxlen=64)
        self._killed: KilledByReplicaError | None = None
        self._role_changed = trio.Event()
        self._writes_disabled = False
        #: The generation in which this node is (or was) the master, if any since it started.
        self._own_generation: int | None = None
        self._master_hint: str | None = None
        self._async_unflushed = 0
        self._async_unyielded = 0
        # replica state
        self._session: Session | None = None
        self._channels = ChannelManager(self)  # message channels (hook)
        # statistics
        self._commits = 0
        self._commit_failures = 0
        self._applied = 0
        self._refused = 0

    # -- identity and state --------------------------------------------------------------------
    @property
    def address(self) -> str | None:
        """Where this node listens (replicas attach and channels connect here), if anywhere."""
        return self._address

    @property
    def role(self) -> Role:
        """The node's current role."""
        return self._role

    @property
    def txid(self) -> int:
        """The id of the last transaction this node holds (0: empty)."""
        return self.storage.txid

    @property
    def generation(self) -> int:
        """The node's generation (fencing counter, raised at every promotion)."""
        return self.storage.generation

    @property
    def master_params(self) -> MasterParams | None:
        """The master parameters in force, if this node is or was set up as a master."""
        return self._master_params

    @property
    def replicas(self) -> list[str]:
        """The names of the replicas attached to this master."""
        return list(self._links)

    def get(self, key: Key, default: Any = None) -> Any:
        """Return the committed value of `key`, or `default` (works in every role)."""
        return self.storage.get(key, default)

    def items(self) -> list[tuple[Key, Any]]:
        """Return every committed ``(key, value)`` pair."""
        return list(self.storage.items())

    def transaction(self) -> Transaction:
        """Start a write transaction: ``async with node.transaction() as tx: tx.put(k, v)``.

        Raises:
            NotMasterError: this node is a replica, or stepped down after a force master.
        """
        return Transaction(self)

    def __repr__(self) -> str:
        return (
            f"<hakit.Node {self.name!r} {self._role.value} gen={self.generation} "
            f"txid={self.txid} address={self._address!r}>"
        )

    # -- lifecycle -----------------------------------------------------------------------------
    async def _main(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._ack_watchdog)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._closed = True
            self._nursery = None
            self._fail_all_pending(NodeClosedError(f"node {self.name!r} was closed"))
            self.storage.close()

    def _spawn(self) -> trio.Nursery:
        if self._nursery is None:
            raise NodeClosedError(f"node {self.name!r} is closed")
        return self._nursery

    async def aclose(self) -> None:
        """Stop every role and background task of this node and close its storage."""
        if self._nursery is not None:
            for link in list(self._links.values()):
                link.abort(StopReason.MASTER_REQUESTED_DISCONNECT, "the master node is closing")
            if self._session is not None:
                self._session.interrupt(StopReason.CANCELLED, "the node is closing")
            self._nursery.cancel_scope.cancel()
        await trio.lowlevel.checkpoint()

    async def listen(self, address: str) -> str:
        """Listen on `address` for replicas, channels and cancel requests.

        Returns:
            The bound address (with the real port for ``"host:0"``). The first address a node
            listens on becomes `node.address`.
        """
        nursery = self._spawn()
        if address in self._listeners or address == self._address:
            return self._address if address == self._address and self._address else address
        listener, bound = await open_listener(address, network=self._network)
        scope = trio.CancelScope()
        self._listeners[bound] = scope
        if self._address is None:
            self._address = bound
        nursery.start_soon(self._accept_loop, listener, scope, bound)
        return bound

    async def _accept_loop(
        self, listener: trio.abc.Listener[trio.abc.Stream], scope: trio.CancelScope, bound: str
    ) -> None:
        try:
            with scope:
                async with listener:
                    while True:
                        stream = await listener.accept()
                        self._spawn().start_soon(self._handle_incoming, stream)
        finally:
            self._listeners.pop(bound, None)

    def _stop_listener(self, address: str) -> None:
        scope = self._listeners.get(address)
        if scope is not None:
            scope.cancel()

    def _record(self, event: Event) -> None:
        self.events.append(event)

    def _now(self) -> float:
        return trio.current_time()

    def _set_role(self, role: Role) -> None:
        if role is not self._role:
            old, self._role = self._role, role
            self._record(
                RoleChanged(self._now(), self.name, old.value, role.value, self.generation)
            )
        self._role_changed.set()
        self._role_changed = trio.Event()

    # -- incoming connections ------------------------------------------------------------------
    async def _handle_incoming(self, stream: trio.abc.Stream) -> None:
        framed = FramedStream(stream, max_frame_size=self.max_frame_size)
        params = self._master_params
        timeout = params.initial_timeout if params and params.initial_timeout else None
        try:
            with trio.fail_after(timeout or _DEFAULT_HANDSHAKE_TIMEOUT):
                values = await framed.receive()
            if len(values) != 1:
                raise RemoteProtocolError("sent more before the handshake was answered")
            msg = m.parse_message(values[0])
        except (RemoteProtocolError, EOFError, OSError, trio.BrokenResourceError,
                trio.TooSlowError) as exc:  # fmt: skip
            detail = "no handshake in time" if isinstance(exc, trio.TooSlowError) else str(exc)
            self._refuse("unknown peer", detail)
            with trio.CancelScope(shield=True):
                await framed.aclose()
            return
        if isinstance(msg, m.Hello):
            await self._serve_replica(framed, msg)
        elif isinstance(msg, m.Cancel):
            await self._serve_cancel(framed, msg)
        elif isinstance(msg, m.ChannelHello):  # message channels (hook)
            await self._channels.serve(framed, msg)
        else:
            self._refuse("unknown peer", f"unexpected first message {type(msg).__name__}")
            await framed.aclose()

    def _refuse(self, peer: str, detail: str) -> None:
        self._refused += 1
        self._record(ConnectionRefused(self._now(), self.name, peer, detail))

    async def _send_and_close(self, framed: FramedStream, data: bytes) -> None:
        with trio.move_on_after(1.0):
            with suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                await framed.send(data)
        with trio.CancelScope(shield=True):
            await framed.aclose()

    # -- master side ---------------------------------------------------------------------------
    def set_master_params(self, params: MasterParams | None = None) -> None:
        """Make this node a master with `params` (or update them).

        Becoming a master raises the generation by one (DESIGN 4.5), so that every history is
        named by the master that wrote it.

        Raises:
            LocalProtocolError: the node is attached as a replica.
            InvalidArgumentError: `params` is not a `MasterParams`.
        """
        params = MasterParams() if params is None else params
        if not isinstance(params, MasterParams):
            raise InvalidArgumentError(f"expected MasterParams, got {type(params).__name__}")
        if self._role is Role.REPLICA:
            raise LocalProtocolError(
                f"node {self.name!r} is attached as a replica; stop it before making it a master"
            )
        self._master_params = params
        self._resize_log(params.trans_log_length)
        if self._role is not Role.MASTER:
            self.storage.set_generation(self.generation + 1)
            self._own_generation = self.generation
            self._killed = None
            self._writes_disabled = False
            self._master_hint = None
            self._set_role(Role.MASTER)

    def _resize_log(self, length: int) -> None:
        if self._log.maxlen != length:
            self._log = deque(self._log, maxlen=length)

    def _generation_of(self, txid: int) -> int | None:
        log = self._log
        if not log:
            return None
        index = txid - log[0][0]
        if 0 <= index < len(log):
            return log[index][1]
        return None

    def _master_view(self) -> MasterView:
        params = self._master_params
        assert params is not None
        return MasterView(
            cluster=self.cluster_name,
            node=self.name,
            generation=self.generation,
            txid=self.txid,
            last_generation=self.storage.last_generation,
            generation_of=self._generation_of,
            stateful=MasterMode.STATEFUL in params.mode,
            accepting=len(self._links) < params.max_replicas,
            names_in_use=frozenset(self._links),
            keepalive_interval=params.keepalive_interval,
        )

    async def _serve_replica(self, framed: FramedStream, hello: m.Hello) -> None:
        params = self._master_params
        if self._role is not Role.MASTER or params is None:
            hint = f"; the master is at {self._master_hint}" if self._master_hint else ""
            detail = f"node {self.name!r} is not a master{hint}"
            self._refuse(hello.node, detail)
            reject = m.Reject(self.generation, int(StopReason.HANDSHAKE_FAILED), detail)
            await self._send_and_close(framed, reject.encode())
            return
        reply, sync = decide_handshake(hello, self._master_view())
        if isinstance(reply, m.Reject):
            self._refuse(hello.node, reply.detail)
            await self._send_and_close(framed, reply.encode())
            if hello.generation > self.generation:
                self._step_down(hello.generation, None, None, stale=True)
            return
        now = self._now()
        machine = MasterLinkMachine(
            replica=hello.node,
            generation=self.generation,
            sync_target=self.txid,
            txid=0 if sync is SyncKind.FULL else hello.txid,
            keepalive_interval=params.keepalive_interval,
            detach_timeout=params.detach_timeout,
            initial_timeout=params.initial_timeout,
            now=now,
        )
        link = ReplicaLink(self, hello.node, framed, machine, sync, hello.address)
        link.flush_timeout = params.commit_timeout or 5.0
        link.first_frame = reply.encode()
        if sync is SyncKind.FULL:
            link.snapshot = self.storage.snapshot()
            if MasterMode.HOTSYNC not in params.mode:
                link.static_load = True
                self._static_loads += 1
                self._unpaused = trio.Event()
        elif sync is SyncKind.INCREMENTAL:
            first = self._log[0][0] if self._log else self.txid + 1
            for txid, _generation, entry in list(self._log)[hello.txid + 1 - first :]:
                link.push_entry(txid, entry if isinstance(entry, bytes) else pack(entry))
        # From here on every commit reaches this link: no await since the snapshot was taken.
        self._links[hello.node] = link
        self._record(Connected(now, self.name, hello.node, hello.address))
        await link.run()

    def _static_load_done(self) -> None:
        self._static_loads -= 1
        self._maybe_unpause()

    def _maybe_unpause(self) -> None:
        if self._static_loads == 0 and self._pause_link is None:
            self._unpaused.set()

    def _link_event(self, link: ReplicaLink, event: mm.LinkEvent) -> bool:
        """React to one event of a link; return True when the link must close."""
        if isinstance(event, mm.Acked):
            self._on_ack(link, event.txid)
        elif isinstance(event, mm.LinkSynced):
            if link.static_load:  # a static sync holds writes until the replica is synced
                link.static_load = False
                self._static_load_done()
            info = ReplicaInfo(link.name, link.sync.name.lower(), event.txid)
            self._record(ReplicaSynced(self._now(), self.name, link.name, info.sync, event.txid))
            self._on_ack(link, event.txid)
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
        elif isinstance(event, mm.NewerGeneration):
            self._step_down(event.generation, None, None, stale=True)
            return True
        return False

    def _on_ack(self, link: ReplicaLink, txid: int) -> None:
        link.acked(txid)
        name = link.name
        for pending in self._pending:
            if pending.txid > txid:
                break
            if name in pending.required:
                pending.required.discard(name)
                pending.acked.append(name)
                pending.check()
        while self._pending and self._pending[0].done.is_set():
            self._pending.popleft()

    def _link_closed(self, link: ReplicaLink) -> None:
        self._drop_link(link)
        if link.static_load:
            link.static_load = False
            self._static_load_done()
        if self._pause_link is link:
            self._pause_link = None
            self._maybe_unpause()

    def _begin_pause(self, link: ReplicaLink) -> None:
        if self._pause_link is not None:
            link.abort(StopReason.CONNECTION_ABORTED, "another force master is in progress")
            return
        self._pause_link = link
        self._unpaused = trio.Event()
        link.push_frame(link.machine.pause_ready(self.txid).encode())
        params = self._master_params
        timeout = params.commit_timeout if params and params.commit_timeout else 5.0
        self._spawn().start_soon(self._pause_watchdog, link, timeout)

    async def _pause_watchdog(self, link: ReplicaLink, timeout: float) -> None:
        await trio.sleep(timeout)
        if self._pause_link is link and self._role is Role.MASTER:
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
        """Stop being the master: a replica took over, or a newer generation was seen."""
        if self._role is not Role.MASTER:
            return
        params = self._master_params
        disable = params.disable_writes_on_kill if params else True
        self._killed = KilledByReplicaError(new_master or "?", address, generation)
        self._master_hint = address
        if stale or disable:
            self.storage.set_generation(generation)
            self._writes_disabled = True
        if promoter is not None:
            promoter.push_frame(m.MasterKilled(generation).encode())
            promoter.close_after_flush(StopReason.BECOMES_MASTER, "took over as master")
        for link in list(self._links.values()):
            if link is promoter:
                continue
            if new_master is not None:
                link.push_frame(m.MasterChanged(generation, new_master, address).encode())
            link.close_after_flush(
                StopReason.MASTER_REQUESTED_DISCONNECT, f"the master is now {new_master}"
            )
            # The replica will follow the new master; it no longer counts for commits here.
            self._drop_link(link)
        self._pause_link = None
        self._unpaused.set()
        self._set_role(Role.STANDALONE)

    def _drop_link(self, link: ReplicaLink) -> None:
        """Stop counting `link` as attached: it no longer takes part in commits."""
        if self._links.get(link.name) is link:
            del self._links[link.name]
            reason = link.close_reason or StopReason.CONNECTION_ABORTED
            self._record(
                ReplicaDetached(self._now(), self.name, link.name, reason, link.close_detail)
            )
        for pending in self._pending:
            if link.name in pending.required:
                pending.required.discard(link.name)
                pending.detached.append(link.name)
                pending.check()
        while self._pending and self._pending[0].done.is_set():
            self._pending.popleft()

    async def attach_replica(
        self, address: str | None = None, *, timeout: float = 60.0
    ) -> ReplicaInfo:
        """Wait for one replica to connect and finish its initial sync.

        Args:
            address: where to listen (default: the node's own address). Listening starts if
                needed and goes on after the call, so other replicas may attach too.
            timeout: seconds to wait.

        Returns:
            The replica that attached.

        Raises:
            NetworkTimeoutError: no replica attached within `timeout`.
            KilledByReplicaError: a replica took over as the master (force master).
            LocalProtocolError: this node is not a master (call `set_master_params` first).
        """
        self._require_master()
        if address is not None:
            await self.listen(address)
        elif self._address is None:
            raise InvalidArgumentError("the node listens nowhere: pass an address")
        while self._unclaimed:
            info = self._unclaimed.popleft()
            if info.name in self._links:
                await trio.lowlevel.checkpoint()
                return info
        send, receive = trio.open_memory_channel[ReplicaInfo](1)
        self._arrivals.append(send)
        try:
            with trio.move_on_after(timeout) as scope:
                async with trio.open_nursery() as nursery:

                    async def watch_kill() -> None:
                        while self._role is Role.MASTER:
                            await self._role_changed.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(watch_kill)
                    info = await receive.receive()
                    nursery.cancel_scope.cancel()
                    return info
            if self._killed is not None:
                raise self._killed
            if scope.cancelled_caught:
                raise NetworkTimeoutError(
                    f"no replica attached within {timeout:g} s",
                    stop_reason=StopReason.CONNECTION_ABORTED,
                    address=address or self._address,
                )
            raise NotMasterError(f"node {self.name!r} stopped being the master")
        finally:
            if send in self._arrivals:
                self._arrivals.remove(send)
            send.close()
            receive.close()

    async def serve_replicas(
        self,
        address: str | None = None,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve any number of replicas on `address` until cancelled or stepped down.

        Use ``bound = await nursery.start(node.serve_replicas, "127.0.0.1:0")`` to learn the
        bound address; `node.address` reports it from then on (if it had none).

        Raises:
            KilledByReplicaError: a replica took over as the master.
        """
        self._require_master()
        if address is None:
            if self._address is None:
                raise InvalidArgumentError("the node listens nowhere: pass an address")
            bound = self._address
        else:
            bound = await self.listen(address)
        task_status.started(bound)
        while self._role is Role.MASTER:
            await self._role_changed.wait()
        if self._killed is not None:
            raise self._killed

    def _require_master(self) -> None:
        if self._role is not Role.MASTER or self._master_params is None:
            if self._killed is not None:
                raise self._killed
            raise LocalProtocolError(
                f"node {self.name!r} is not a master: call set_master_params() first"
            )

    def detach_replica(self, name: str) -> None:
        """Detach one replica; its `attach_master` returns `MASTER_REQUESTED_DISCONNECT`.

        Raises:
            InvalidArgumentError: no replica of that name is attached.
        """
        link = self._links.get(name)
        if link is None:
            raise InvalidArgumentError(f"no replica named {name!r} is attached to {self.name!r}")
        self._detach(link, f"detached by master {self.name}")

    def _detach(self, link: ReplicaLink, detail: str) -> None:
        link.push_frame(m.Detach(self.generation, detail).encode())
        link.close_after_flush(StopReason.MASTER_REQUESTED_DISCONNECT, detail)
        self._drop_link(link)

    def detach_all_replicas(self) -> None:
        """Detach every attached replica."""
        for link in list(self._links.values()):
            self._detach(link, f"all replicas detached by master {self.name}")

    def stop_master(self) -> None:
        """Detach every replica, stop serving replication and become `STANDALONE`."""
        self._require_master()
        for link in list(self._links.values()):
            self._detach(link, f"master {self.name} stopped replication")
        self._set_role(Role.STANDALONE)

    # -- commits -------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self._role is Role.REPLICA:
            session = self._session
            raise NotMasterError(
                f"node {self.name!r} is a replica and cannot accept writes",
                master_address=session.master_address if session else None,
            )
        if self._writes_disabled:
            raise NotMasterError(
                f"node {self.name!r} stepped down and refuses writes",
                master_address=self._master_hint,
            )
        if (
            self._role is Role.STANDALONE
            and self.generation > 0
            and self.generation != self._own_generation
        ):
            # Its generation belongs to another master's history: writing here would create
            # a second writer in that generation. Only a fresh database (generation 0), or a
            # former master still in its own generation, is writable without being a master.
            raise NotMasterError(
                f"node {self.name!r} holds a replicated database (generation {self.generation}) "
                "and is not a master: call set_master_params() to make it one",
                master_address=self._master_hint,
            )
        if self._closed:
            raise NodeClosedError(f"node {self.name!r} is closed")

    async def _commit(self, ops: list[list[Any]]) -> CommitResult:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_writable()  # again: the role may have changed since the block began
        while not self._unpaused.is_set():
            await self._unpaused.wait()
            self._check_writable()
        params = self._master_params if self._role is Role.MASTER else None
        links = self._links
        if params is not None and params.quorum:
            synced = sum(1 for link in links.values() if link.is_synced)
            if synced < params.quorum:
                raise NoQuorumError(synced, params.quorum)
        storage = self.storage
        txid = storage.txid + 1
        generation = storage.generation
        try:
            packed = m.pack_entry(txid, generation, ops)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidArgumentError(f"a value is not msgpack-serializable: {exc}") from None
        storage.apply([[txid, generation, ops]])
        self._log.append((txid, generation, packed))
        self._commits += 1
        for link in links.values():
            link.push_entry(txid, packed)
        if params is not None and links:
            if MasterMode.ASYNC in params.mode or params.ack_policy is AckPolicy.NONE:
                await self._async_backpressure(params, len(packed))
                return CommitResult(txid, generation)
            return await self._wait_acks(params, txid, generation)
        await trio.lowlevel.checkpoint()
        return CommitResult(txid, generation)

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
        for link in list(self._links.values()):
            if link.lag_bytes <= limit:
                continue
            # The replica lags by more than the buffer allows: writes wait for it to catch
            # up, for at most commit_timeout, then it is detached so the master goes on.
            with trio.move_on_after(params.commit_timeout or math.inf):
                while link.lag_bytes > limit and not link.closed.is_set():
                    await link.wait_ack()
            if link.lag_bytes > limit and not link.closed.is_set():
                self._commit_failures += 1
                link.abort(
                    StopReason.CONNECTION_ABORTED,
                    f"could not keep up: more than {limit} bytes behind for "
                    f"{params.commit_timeout:g} s (commit_timeout)",
                )

    async def _wait_acks(self, params: MasterParams, txid: int, generation: int) -> CommitResult:
        required = {name for name, link in self._links.items() if link.is_synced}
        policy = params.ack_policy
        needed = {
            AckPolicy.ALL: len(required),
            AckPolicy.QUORUM: len(required) // 2 + 1,
            AckPolicy.ONE: 1,
        }[policy]
        deadline = self._now() + (params.synch_timeout or math.inf)
        pending = _PendingCommit(txid, required, needed, deadline)
        pending.check()
        if pending.done.is_set():  # no replica counts yet (all still loading, or policy)
            await trio.lowlevel.checkpoint()
            return CommitResult(txid, generation)
        # No cancel scope per commit: the acknowledgement watchdog enforces synch_timeout for
        # every waiting commit at once (a scope costs more than the rest of a commit's wait).
        self._pending.append(pending)
        self._pending_added.set()
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        if self._role is not Role.MASTER and self._killed is None:
            # Stepped down as stale: a newer master exists that may not hold this transaction.
            self._commit_failures += 1
            self._record(CommitFailed(self._now(), self.name, txid, "master stepped down"))
            raise CommitFailedError(
                f"the master stepped down before txid {txid} was confirmed", txid=txid
            )
        return CommitResult(txid, generation, tuple(pending.acked), tuple(pending.detached))

    async def _ack_watchdog(self) -> None:
        """Detach replicas that leave a synchronous commit unacknowledged past synch_timeout.

        Waiting commits are in txid order, so their deadlines are too (for a given
        synch_timeout): sleeping until the oldest one's deadline is enough.
        """
        while True:
            while not self._pending:
                await self._pending_added.wait()
                self._pending_added = trio.Event()
            oldest = self._pending[0]
            await trio.sleep_until(oldest.deadline)
            now = self._now()
            for pending in list(self._pending):
                if pending.deadline > now:
                    break
                if pending.done.is_set():
                    continue
                for name in sorted(pending.required):
                    link = self._links.get(name)
                    if link is not None:
                        params = self._master_params
                        timeout = params.synch_timeout if params else 0.0
                        link.abort(
                            StopReason.CONNECTION_ABORTED,
                            f"no acknowledgement of txid {pending.txid} within {timeout:g} s "
                            "(synch_timeout)",
                        )
                pending.required.clear()
                pending.done.set()
            while self._pending and self._pending[0].done.is_set():
                self._pending.popleft()

    def _fail_all_pending(self, error: Exception) -> None:
        for pending in self._pending:
            if not pending.done.is_set():
                pending.error = error
                pending.done.set()
        self._pending.clear()

    # -- replica side --------------------------------------------------------------------------
    async def attach_master(
        self,
        connection_string: str,
        params: ReplicaParams | None = None,
        *,
        timeout: float = 10.0,
    ) -> StopReason:
        """Attach to the master at `connection_string` and replicate until stopped.

        Connects, handshakes, loads the master's state (none if equal, the missed
        transactions if possible, else a full snapshot), then applies the master's
        transaction stream. If the master is replaced by force master, the replica follows
        the new master without returning (a `MasterChanged` event records it).

        Returns:
            Why replication stopped, once the replica had attached.

        Raises:
            NetworkTimeoutError: the master was not reached, or did not answer, in `timeout`.
            HAProtocolError: the master refused the handshake (`HANDSHAKE_FAILED`).
            HAIOError: the connection failed before the replica was attached.
            Each carries ``.stop_reason``.
        """
        params = ReplicaParams() if params is None else params
        if not isinstance(params, ReplicaParams):
            raise InvalidArgumentError(f"expected ReplicaParams, got {type(params).__name__}")
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidArgumentError(
                f"timeout must be a positive number of seconds, got {timeout!r}"
            )
        parse_address(connection_string)  # a malformed string fails here, with ValueError
        if self._role is Role.MASTER:
            raise LocalProtocolError(
                f"node {self.name!r} is a master; "
                "call stop_master() before attaching it as a replica"
            )
        if self._session is not None:
            raise LocalProtocolError(f"node {self.name!r} is already attached to a master")
        session = Session()
        self._session = session
        try:
            if ReplicaMode.ALLOW_CANCEL in params.mode:
                assert params.cancel_address is not None
                await self.listen(params.cancel_address)
            return await ReplicaRun(self, session, params).replicate(connection_string, timeout)
        finally:
            self._session = None
            if params.cancel_address and params.cancel_address != self._address:
                self._stop_listener(params.cancel_address)
            if self._role is Role.REPLICA:
                self._set_role(Role.STANDALONE)

    def _become_master_after_force(self, params: ReplicaParams) -> None:
        master_params = params.master_params or self._master_params or MasterParams()
        self._master_params = master_params
        self._resize_log(master_params.trans_log_length)
        self._writes_disabled = False
        self._killed = None
        self._own_generation = self.generation
        self._set_role(Role.MASTER)

    def replica_stop(self) -> None:
        """Stop replicating gracefully; `attach_master` returns `STOPPED_BY_LOCAL_REQUEST`.

        The transaction in hand is finished and the master is told before the link closes.

        Raises:
            LocalProtocolError: the node is not attached to a master.
        """
        if self._session is None:
            raise LocalProtocolError(f"node {self.name!r} is not attached to a master")
        self._session.interrupt(StopReason.STOPPED_BY_LOCAL_REQUEST, "replica_stop() was called")

    def cancel(self) -> None:
        """Interrupt replication at once; `attach_master` returns `CANCELLED`.

        Raises:
            LocalProtocolError: the node is not attached to a master.
        """
        if self._session is None:
            raise LocalProtocolError(f"node {self.name!r} is not attached to a master")
        self._session.interrupt(StopReason.CANCELLED, "cancel() was called")

    async def _serve_cancel(self, framed: FramedStream, msg: m.Cancel) -> None:
        session = self._session
        reply: m.Message
        if session is None or (msg.node and msg.node != self.name):
            detail = f"node {self.name!r} has no replication to cancel"
            self._refuse("cancel request", detail)
            reply = m.Reject(self.generation, int(StopReason.CANCELLED), detail)
        else:
            session.interrupt(StopReason.CANCELLED, "a cancel request came to the cancel point")
            reply = m.Bye(self.generation, int(StopReason.CANCELLED), "cancelled")
        await self._send_and_close(framed, reply.encode())

    # -- peers (used by message channels) ------------------------------------------------------
    def _resolve_peer(self, name: str) -> str | None:
        """Return the address of the node called `name`, if this node knows it.

        Known peers: the node itself, cluster members (``mem:<name>``), attached replicas
        (the address they announced) and the master this replica follows.
        """
        if name == self.name:
            return self._address
        if self._network is not None and self._network.is_listening(name):
            return f"mem:{name}"
        link = self._links.get(name)
        if link is not None and link.address:
            return link.address
        session = self._session
        if session is not None and session.master == name:
            return session.master_address
        return None

    def _current_master(self) -> str | None:
        """Return the current master's address: ``""`` for this node itself, None if unknown."""
        if self._role is Role.MASTER:
            return ""
        session = self._session
        if session is not None and session.master_address is not None:
            return session.master_address
        return self._master_hint

    # -- message channels (hook: implemented in _channels.py) --------------------------------
    def set_msg_dispatch(self, handler: Handler | None) -> None:
        """Set the handler of the messages other nodes send this node (None removes it).

        Each message runs ``await handler(msg)`` in a task of its own in the node's nursery;
        ``msg`` is a `hakit.ChannelMessage` (``parts``, ``sender``, ``need_response``,
        ``await msg.respond(*parts)``). A request arriving with no handler fails with
        `NoServerError`; a one-way message is dropped. If the handler raises, the requester
        gets `RemoteHandlerError` and the node carries on.

        Raises:
            InvalidArgumentError: `handler` is not an async function.
        """
        self._channels.set_dispatch(handler)

    def channel(self, target: str | _Eid) -> Channel:
        """Return a channel for messages and requests to `target`.

        Args:
            target: a node name, an address (``"host:port"``, a unix path, ``"mem:name"``),
                or `hakit.EID_MASTER` for whichever node is the master at each send (this
                node's own handler when it is the master).

        Raises:
            InvalidArgumentError: `target` is neither a known node nor an address.
        """
        return self._channels.channel(target)

    # -- statistics ----------------------------------------------------------------------------
    def statistics(self) -> NodeStatistics:
        """Return a snapshot of this node's counters and links."""
        links = tuple(
            LinkStatistics(
                replica=link.name,
                state=link.machine.state.value,
                sync=link.sync.name.lower(),
                acked_txid=link.machine.acked,
                lag=self.txid - link.machine.acked,
                unsent_bytes=link.unsent_bytes,
                bytes_sent=link.bytes_sent,
            )
            for link in self._links.values()
        )
        session = self._session
        return NodeStatistics(
            name=self.name,
            role=self._role.value,
            address=self._address,
            generation=self.generation,
            txid=self.txid,
            keys=len(self.storage),
            commits=self._commits,
            commit_failures=self._commit_failures,
            applied=self._applied,
            refused_connections=self._refused,
            replicas=links,
            master=session.master if session else None,
            writes_disabled=self._writes_disabled,
            channels=self._channels.statistics(),  # message channels (hook)
        )


@asynccontextmanager
async def open_node(
    name: str,
    *,
    address: str | None = None,
    storage: Storage | None = None,
    cluster_name: str = "hakit",
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> AsyncIterator[Node]:
    """Run one standalone node; its background tasks live inside the ``async with`` block.

    Args:
        name: the node's name.
        address: where to listen (``"host:port"``, a unix path); ``"127.0.0.1:0"`` picks a
            free port, reported by `node.address`.
        storage: the database (default: a new `MemoryStorage`).
        cluster_name: replicas and masters must share it.
        max_frame_size: the largest frame accepted from a peer.
    """
    node = Node(name, storage=storage, cluster_name=cluster_name, max_frame_size=max_frame_size)
    async with trio.open_nursery() as nursery:
        await nursery.start(node._main)
        try:
            if address is not None:
                await node.listen(address)
            yield node
        finally:
            await node.aclose()
