"""The replica side of a node: one `attach_master` call, from connect to stop reason.

`ReplicaRun` drives a `ReplicaMachine` over one connection at a time: it connects and
handshakes, loads or replays what the master sends, applies the transaction stream, and turns
every way of stopping into a `StopReason` (returned once attached, raised before). When the
master is replaced by force master it reconnects to the new one and carries on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import suppress
from itertools import chain
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from ..protocol import (
    HAIOError,
    HAProtocolError,
    NetworkTimeoutError,
    RemoteProtocolError,
    ReplicaMachine,
    ReplicationError,
    StopReason,
    SyncKind,
)
from ..protocol import _messages as m
from ..protocol import _replica as rm
from ..protocol._codec import pack
from ..storage import Loader
from ..transports import FramedStream
from ._dial import dial
from ._events import Connected, HistoryDiverged, MasterChanged, ReplicaStopped, ReplicaSynced
from ._follower import RECEIVE_FAILURES, Follower
from ._params import (
    Notification,
    ReplicaInfo,
    ReplicaMode,
    ReplicaParams,
    Role,
    TransactionRecord,
)

if TYPE_CHECKING:
    from ._node import Node

#: A master that cannot be reached (nothing listens yet, or it is not a master yet) is tried
#: again after this long, doubling up to `_RETRY_MAX`: a replica started before its master
#: waits for it, as the reference system's replica does for `timeout`.
_RETRY_FIRST = 0.05
_RETRY_MAX = 1.0
#: What sending to the master may raise when the link is gone (it ends the session).
_SEND_FAILURES = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
_RAW_KINDS = frozenset({int(m.Kind.TXNS)})


class _Unreachable(HAIOError):
    """Nobody answered as a master there (yet): `ReplicaRun` waits and tries again."""


class Session:
    """A replica's running attach: what `replica_stop` and `cancel` act on."""

    def __init__(self) -> None:
        self._scope = trio.CancelScope()
        self.request: StopReason | None = None
        self.detail = ""
        self.master: str | None = None
        self.master_address: str | None = None
        #: Set when the `attach_master` call has ended, however it ended.
        self.ended = trio.Event()
        #: Why it ended (the returned reason, or the raised error's ``stop_reason``).
        self.stop_reason: StopReason | None = None

    def scope(self) -> trio.CancelScope:
        """A fresh scope for the next phase; already cancelled if a stop was requested."""
        self._scope = trio.CancelScope()
        if self.request is not None:
            self._scope.cancel()
        return self._scope

    def interrupt(self, reason: StopReason, detail: str) -> None:
        if self.request is None:
            self.request = reason
            self.detail = detail
        self._scope.cancel()


_MISSING = object()


class _Discard:
    """What a diverged replica gives up, gathered while the full load replaces it."""

    def __init__(self, node: Node, event: rm.Diverged) -> None:
        self.event = event
        self.time = node._now()
        self.transactions: list[list[Any]] = []
        for txid, generation, entry in node._log:
            if event.first <= txid <= event.last:
                if isinstance(entry, bytes):
                    entry = msgpack.unpackb(entry, raw=False, strict_map_key=False)
                self.transactions.append([txid, generation, entry[2]])
        self.replaced: list[list[Any]] = []
        self._loaded: set[Any] = set()

    def add_chunk(self, node: Node, items: list[Any]) -> None:
        # Called before the chunk is staged: the storage still shows this node's own values.
        get = node.storage.get
        for index in range(0, len(items) - 1, 2):
            key = items[index]
            self._loaded.add(key)
            old = get(key, _MISSING)
            if old is not _MISSING and old != items[index + 1]:
                self.replaced.append([key, old])

    def record(self, node: Node) -> dict[str, Any]:
        self.replaced.extend([key, value] for key, value in node.items() if key not in self._loaded)
        return {
            "time": self.time,
            "master": self.event.master,
            "first_txid": self.event.first,
            "last_txid": self.event.last,
            "transactions": self.transactions,
            "replaced": self.replaced,
        }


class ReplicaRun:
    """One `Node.attach_master` call."""

    def __init__(
        self,
        node: Node,
        session: Session,
        params: ReplicaParams,
        task_status: trio.TaskStatus[ReplicaInfo] | None = None,
    ) -> None:
        self.node = node
        self.session = session
        self.params = params
        #: Told once, at the first initial sync (``nursery.start(node.attach_master, ...)``).
        self._task_status = task_status

    @property
    def started(self) -> bool:
        """Whether the caller of ``nursery.start`` has been told the replica is synced."""
        return self._task_status is None

    def _report_synced(self, sync: str, txid: int) -> None:
        status, self._task_status = self._task_status, None
        if status is not None:
            status.started(ReplicaInfo(self.node.name, sync, txid))

    def _notify(self, what: Notification, detail: str = "") -> None:
        if self.params.on_notification is not None:
            self.params.on_notification(what, detail)

    async def replicate(self, address: str, timeout: float) -> StopReason:
        force_master = ReplicaMode.FORCE_MASTER in self.params.mode
        while True:
            try:
                outcome = await self._reach(address, timeout, force_master=force_master)
            except ReplicationError as exc:
                self._replica_stopped(exc.stop_reason, str(exc), None)
                if self.session.master is not None:
                    # Once attached, attach_master reports stops by returning: here the new
                    # master that this replica followed could not be reached.
                    return exc.stop_reason
                raise
            if isinstance(outcome, rm.FollowMaster):
                if outcome.address is None:
                    return self._replica_stopped(
                        StopReason.MASTER_REQUESTED_DISCONNECT,
                        f"the master is now {outcome.node}, which has no address to follow",
                        self.session.master,
                    )  # fmt: skip
                node = self.node
                changed = MasterChanged(
                    node._now(), node.name, self.session.master, outcome.node, outcome.address,
                    outcome.generation,
                )  # fmt: skip
                node._record(changed)
                self._notify(Notification.MASTER_CHANGED, outcome.address)
                address = outcome.address
                force_master = False
                continue
            return outcome

    async def _reach(
        self, address: str, timeout: float, *, force_master: bool
    ) -> StopReason | rm.FollowMaster:
        """Attach to `address`, trying again with backoff until it answers as a master.

        Nothing listening, a lost connection before the handshake, or a node that is not a
        master yet are worth waiting for, up to `timeout`; a refused handshake (another
        cluster, an incompatible protocol) is not.
        """
        deadline = self.node._now() + timeout
        delay = _RETRY_FIRST
        attempts = 0
        last = ""
        while True:
            attempts += 1
            try:
                return await self._replicate_once(address, deadline, force_master=force_master)
            except NetworkTimeoutError:
                # Cut short by the deadline: an earlier failure says more, if there was one.
                last = last or "no answer in time"
            except _Unreachable as exc:
                last = str(exc)
            remaining = deadline - self.node._now()
            if remaining > 0:
                with self.session.scope():
                    await trio.sleep(min(delay, remaining))
                if self.session.request is not None:
                    return self._replica_stopped(
                        self.session.request,
                        f"{self.session.detail} while waiting for the master",
                        self.session.master,
                    )
                delay = min(2 * delay, _RETRY_MAX)
                remaining = deadline - self.node._now()
            if remaining <= 0:
                tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
                raise NetworkTimeoutError(
                    f"the master at {address} was not reached within {timeout:g} s "
                    f"({tries}; the last: {last})",
                    stop_reason=StopReason.CONNECTION_ABORTED, address=address,
                )  # fmt: skip

    async def _replicate_once(
        self,
        address: str,
        deadline: float,
        *,
        force_master: bool,
    ) -> StopReason | rm.FollowMaster:
        machine = ReplicaMachine(
            cluster=self.node.cluster_name,
            node=self.node.name,
            generation=self.node.generation,
            txid=self.node.txid,
            last_generation=self.node.storage.last_generation,
            history=self.node.storage.history,
            force_master=force_master,
            force_sync=ReplicaMode.FORCE_SYNC in self.params.mode,
            address=self.node._address,
            wait_data_timeout=self.params.wait_data_timeout,
            now=self.node._now(),
        )
        framed: FramedStream | None = None
        loader: Loader | None = None
        discard: _Discard | None = None
        try:
            # 1. connect and handshake, by `deadline`
            with self.session.scope():
                framed, values = await dial(
                    address,
                    machine.hello().encode(),
                    timeout=max(deadline - self.node._now(), 0.0),
                    peer=f"the master at {address}",
                    stop_reason=StopReason.CONNECTION_ABORTED,
                    network=self.node._network,
                    source=self.node.name,
                    max_frame_size=self.node.max_frame_size,
                    security=self.node._security,
                    unreachable=_Unreachable,
                )
            if self.session.request is not None:
                return self._replica_stopped(
                    self.session.request, f"{self.session.detail} while connecting", None
                )
            events = self._feed(machine, values)
            first = next(events, None)
            if isinstance(first, rm.Stopped):
                if first.reason is StopReason.HANDSHAKE_FAILED:
                    raise HAProtocolError(
                        f"master at {address} refused the handshake: {first.detail}",
                        stop_reason=first.reason, address=address,
                    )  # fmt: skip
                # Not a refusal for good (e.g. "not a master" yet): worth trying again.
                raise _Unreachable(
                    f"{address} answered: {first.detail}",
                    stop_reason=first.reason, address=address,
                )  # fmt: skip
            assert isinstance(first, rm.Welcomed)
            assert framed is not None
            limits = framed.limits
            if (limits.max_containers, limits.max_array_len, limits.max_map_len) == (None,) * 3:
                # Transaction batches are read packed and decoded a piece at a time as they
                # are applied (rm.APPLY_BATCH), their entries' bytes kept for the log.
                framed.set_limits(dataclasses.replace(limits, raw_kinds=_RAW_KINDS))
            self.session.master, self.session.master_address = first.master, address
            if machine.generation > self.node.generation:
                self.node.storage.set_generation(machine.generation)
            self.node._set_role(Role.REPLICA)
            self.node._record(Connected(self.node._now(), self.node.name, first.master, address))
            self._notify(Notification.CONNECTED, address)
            # 2. load and stream until stopped
            load_deadline = self.node._now() + (self.params.initial_timeout or math.inf)
            with self.session.scope():
                events = chain((first,), events)
                # The timeouts (wait_data_timeout, initial_timeout) are one watchdog task's
                # job, not a timeout scope around every read: a scope per frame costs more
                # than the rest of what a replica does with it.
                timed_out: list[rm.Stopped] = []
                event: rm.ReplicaEvent | None = None
                # The watchdog runs in the node's nursery, not one of its own here: a nursery
                # cancelled from outside would raise a group of two Cancelled, not one.
                loop_scope, watch_scope = trio.CancelScope(), trio.CancelScope()
                self.node._spawn().start_soon(
                    self._watchdog, machine, load_deadline, loop_scope, watch_scope, timed_out
                )
                # The stream's sends never block (a simulated link): transactions are
                # applied and acknowledged without a coroutine of their own (see _apply_now).
                nowait = framed.can_send_nowait
                # Once synced, such a stream's transactions are applied by the run's one
                # replica reader while this task parks (see _follower), unless a callback
                # wants to see each transaction from this task.
                follower = (
                    Follower(self, machine, framed)
                    if nowait and framed.can_watch and self.params.on_transaction is None
                    else None
                )
                with loop_scope:
                    try:
                        while not timed_out:
                            for event in events:
                                if nowait and type(event) is rm.Apply:
                                    stopped = self._apply_now(
                                        machine, framed, event.entries, event.packed, event.ack
                                    )
                                    if stopped is not None:
                                        return self._replica_stopped(
                                            stopped.reason, stopped.detail, first.master
                                        )
                                    continue
                                outcome = await self._replica_event(machine, framed, event)
                                if isinstance(outcome, rm.Stopped):
                                    return self._replica_stopped(
                                        outcome.reason, outcome.detail, first.master
                                    )
                                if isinstance(outcome, rm.FollowMaster):
                                    return outcome
                                if isinstance(event, rm.Diverged):
                                    discard = _Discard(self.node, event)
                                    self._diverged(event)
                                elif isinstance(event, rm.LoadBegin):
                                    loader = self.node.storage.begin_load()
                                    self._notify(Notification.DB_LOAD_BEGIN, f"{event.count} keys")
                                elif isinstance(event, rm.LoadChunk):
                                    assert loader is not None
                                    if discard is not None:
                                        discard.add_chunk(self.node, event.items)
                                    loader.add(event.items)
                                elif isinstance(event, rm.LoadEnd):
                                    assert loader is not None
                                    # What the load discards is kept in the same atomic step.
                                    record = (
                                        discard.record(self.node) if discard is not None else None
                                    )
                                    discard = None
                                    loader.commit(
                                        event.txid, event.last_generation, event.generation,
                                        event.history, record, forced=machine.force_sync,
                                    )  # fmt: skip
                                    loader = None
                                    self.node._log.clear()
                                    self._notify(Notification.DB_LOAD_OK, f"txid {event.txid}")
                            if machine.state is rm.ReplicaState.STOPPED:
                                assert machine.stop_reason is not None
                                return self._replica_stopped(machine.stop_reason, "", first.master)
                            if not machine.synced and self.node._now() >= load_deadline:
                                return self._replica_stopped(*self._load_timeout(), first.master)
                            # Let go of the batch just applied before waiting: held while
                            # parked, its decoded lists would outlive a collection and be
                            # promoted, to be freed only by a full one.
                            event = None
                            if follower is not None and machine.synced:
                                events = await follower.follow()
                                continue
                            try:
                                events = self._feed(machine, await framed.receive())
                            except RECEIVE_FAILURES as exc:
                                events = iter([self._receive_failed(machine, exc)])
                    finally:
                        watch_scope.cancel()  # the watchdog ends on every way out
                if timed_out:
                    return self._replica_stopped(
                        timed_out[0].reason, timed_out[0].detail, first.master
                    )
        finally:
            if loader is not None:
                # Whatever stopped us mid-load, the staged data is dropped: a half-loaded
                # database is never exposed.
                loader.abort()
                self._notify(Notification.DB_LOAD_FAILED, "the load did not complete")
            if framed is not None:
                await self._close_replica_link(machine, framed)
        # A stop requested from outside (replica_stop / cancel) lands here.
        reason = self.session.request or StopReason.CANCELLED
        return self._replica_stopped(reason, self.session.detail, self.session.master)

    async def _close_replica_link(self, machine: ReplicaMachine, framed: FramedStream) -> None:
        with trio.CancelScope(shield=True):
            if self.session.request is StopReason.STOPPED_BY_LOCAL_REQUEST:
                bye = machine.stop(StopReason.STOPPED_BY_LOCAL_REQUEST, "replica_stop() called")
                if bye is not None:
                    with trio.move_on_after(1.0):
                        with suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                            await framed.send(bye.encode())
            await framed.aclose()

    def _feed(self, machine: ReplicaMachine, values: list[Any]) -> Iterator[rm.ReplicaEvent]:
        """Feed the master's messages to the machine one at a time, as events are consumed.

        Lazy on purpose: one read may hold several transaction batches, and the machine's
        cumulative `ack()` counts every entry it has handed out. Feeding the next message
        only once the caller has acted on (applied) the previous one's events keeps every
        ack at or below what this node really holds.
        """
        if len(values) == 1:
            # The usual read, one message: the machine's own lazy events, with no generator
            # of ours around them (a busy replica reads once per commit).
            try:
                msg = m.parse_message(values[0])
            except RemoteProtocolError as exc:
                return iter((machine.connection_lost(f"bad message from the master: {exc}"),))
            return machine.receive_iter(msg, self.node._now())
        return self._feed_each(machine, values)

    def _feed_each(self, machine: ReplicaMachine, values: list[Any]) -> Iterator[rm.ReplicaEvent]:
        for value in values:
            try:
                msg = m.parse_message(value)
            except RemoteProtocolError as exc:
                yield machine.connection_lost(f"bad message from the master: {exc}")
                return
            yield from machine.receive_iter(msg, self.node._now())
            if machine.state is rm.ReplicaState.STOPPED:
                return

    def _receive_failed(self, machine: ReplicaMachine, exc: BaseException) -> rm.Stopped:
        """The end of the stream from the master, as the event the machine makes of it."""
        if isinstance(exc, EOFError):
            return machine.connection_lost("the master closed the connection")
        # ClosedResourceError: our end was closed under us (the node crashed).
        return machine.connection_lost(f"connection to the master failed: {exc}")

    def _load_timeout(self) -> tuple[StopReason, str]:
        return (
            StopReason.CONNECTION_ABORTED,
            f"initial sync not complete within {self.params.initial_timeout:g} s (initial_timeout)",
        )

    async def _watchdog(
        self,
        machine: ReplicaMachine,
        load_deadline: float,
        scope: trio.CancelScope,
        own: trio.CancelScope,
        timed_out: list[rm.Stopped],
    ) -> None:
        """Stop the link when the master falls silent (or the load takes too long).

        Sleeps until the machine's deadline; every frame moves that deadline on, so it wakes
        about once per `wait_data_timeout` on a live link, finds the deadline moved, and
        sleeps again. When one has really passed it records why and cancels `scope`, which
        interrupts the stream loop wherever it waits. `own` ends it when the loop ends.
        """
        with own:
            while True:
                deadline = machine.next_deadline
                if not machine.synced:
                    deadline = min(deadline, load_deadline)
                await trio.sleep_until(deadline)
                now = self.node._now()
                if not machine.synced and now >= load_deadline:
                    timed_out.append(rm.Stopped(*self._load_timeout()))
                else:
                    stopped = machine.tick(now)
                    if stopped is None:
                        continue  # the deadline moved on meanwhile
                    timed_out.append(stopped)
                scope.cancel()
                return

    async def _replica_event(
        self,
        machine: ReplicaMachine,
        framed: FramedStream,
        event: rm.ReplicaEvent,
    ) -> rm.Stopped | rm.FollowMaster | None:
        if isinstance(event, rm.Apply):
            error = self._apply(event.entries, event.packed)
            if error is not None:
                return self._iterator_error(machine, error)
            if not event.ack:
                return None  # more of the same batch follows: acknowledged after its last
            return await self._send_to_master(machine, framed, machine.ack())
        elif isinstance(event, rm.Send):
            return await self._send_to_master(machine, framed, event.message)
        elif isinstance(event, rm.Welcomed):
            if event.sync is not SyncKind.FULL:
                # Same history up to our txid: adopt the master's boundaries (those past our
                # txid name transactions still to come). A full load adopts them atomically.
                self.node.storage.set_history(event.history)
            if event.sync is SyncKind.EQUAL:
                self._notify(Notification.DB_EQUAL, f"txid {event.txid}")
            elif event.sync is SyncKind.INCREMENTAL:
                self._notify(Notification.STATEFUL_SYNC, f"to txid {event.txid}")
        elif isinstance(event, rm.Synced):
            self.node._master.resynced()
            sync = machine.sync_kind.name.lower() if machine.sync_kind is not None else "?"
            self.node._record(
                ReplicaSynced(self.node._now(), self.node.name, self.node.name, sync, event.txid)
            )
            self._report_synced(sync, event.txid)
            return await self._send_to_master(machine, framed, machine.ack())
        elif isinstance(event, rm.Promoted):
            self.node.storage.set_generation(event.generation)
            self.node._master.become_master_after_force(self.params)
            sync = machine.sync_kind.name.lower() if machine.sync_kind is not None else "?"
            self._report_synced(sync, self.node.txid)  # (always synced before: kept safe)
            return rm.Stopped(StopReason.BECOMES_MASTER, "this node is now the master")
        elif isinstance(event, rm.Stopped | rm.FollowMaster):
            return event
        return None

    def _diverged(self, event: rm.Diverged) -> None:
        node = self.node
        node._record(HistoryDiverged(node._now(), node.name, event.master, event.first, event.last))
        self._notify(
            Notification.HISTORY_DIVERGED,
            f"txids {event.first}..{event.last} are not on {event.master}'s history; "
            "the full sync discards them (see node.discarded())",
        )

    def _iterator_error(self, machine: ReplicaMachine, detail: str) -> rm.Stopped:
        machine.stop(StopReason.ITERATOR_ERROR, detail)
        return rm.Stopped(StopReason.ITERATOR_ERROR, detail)

    def _apply(self, entries: list[m.Entry], packed: bytes | None) -> str | None:
        """Apply a batch; return an error text if the per-transaction callback raised.

        `packed` is the entries as received (back to back), when the machine has them: the
        log keeps them as they are (see TransLog).
        """
        callback = self.params.on_transaction
        log = self.node._log
        if callback is None:
            if not entries:
                return None
            self.node.storage.apply(entries)
            if packed is None:
                packed = b"".join([pack(entry) for entry in entries])
            first, last = entries[0], entries[-1]
            # Generations never go back: equal at both ends, one for the whole batch.
            gens = first[1] if first[1] == last[1] else tuple(e[1] for e in entries)
            log.extend(first[0], gens, len(entries), packed)
            self.node._applied += len(entries)
            return None
        for entry in entries:
            self.node.storage.apply([entry])
            log.append(entry[0], entry[1], pack(entry))
            self.node._applied += 1
            try:
                callback(TransactionRecord(entry[0], entry[1], entry[2]))
            except Exception as exc:
                return f"on_transaction raised {type(exc).__name__}: {exc} (txid {entry[0]})"
        return None

    def _apply_now(
        self,
        machine: ReplicaMachine,
        framed: FramedStream,
        entries: list[m.Entry],
        packed: bytes | None,
        ack: bool = True,
    ) -> rm.Stopped | None:
        """Apply a batch and acknowledge it (if `ack`), on a stream whose sends never block.

        What `_replica_event` does with an `Apply`, minus its two coroutines: a busy
        replica of a large in-kernel cluster does this once per commit.
        """
        error = self._apply(entries, packed)
        if error is not None:
            return self._iterator_error(machine, error)
        if not ack:
            return None  # more of the same batch follows: acknowledged after its last
        try:
            framed.try_send_nowait(m.encode_ack(machine.generation, machine.txid))
        except _SEND_FAILURES as exc:
            return machine.connection_lost(f"sending to the master failed: {exc}")
        return None

    async def _send_to_master(
        self, machine: ReplicaMachine, framed: FramedStream, msg: m.Message
    ) -> rm.Stopped | None:
        """Send one message; a failure (or a send blocked past commit_timeout) ends the link."""
        data = msg.encode()
        try:
            # On a link whose sends never block there is nothing to time out: no scope.
            if not framed.try_send_nowait(data):
                with trio.fail_after(self.params.commit_timeout or math.inf):
                    await framed.send(data)
        except trio.TooSlowError:
            return machine.connection_lost(
                f"sending to the master blocked for {self.params.commit_timeout:g} s "
                "(commit_timeout)"
            )
        except _SEND_FAILURES as exc:
            return machine.connection_lost(f"sending to the master failed: {exc}")
        return None

    def _replica_stopped(self, reason: StopReason, detail: str, master: str | None) -> StopReason:
        self.node._record(ReplicaStopped(self.node._now(), self.node.name, reason, detail, master))
        self._notify(Notification.REPLICA_STOPPED, f"{reason.name}: {detail}")
        return reason
