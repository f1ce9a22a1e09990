"""Both halves of the protocol wired together, with no I/O (h11's ConnectionPair, for HA).

`Pair` plays a tiny runtime on each side: the master commits into a dict and a log, answers
the handshake with `decide_handshake`, streams snapshots and `Txns` batches, and reacts to
`MasterLinkMachine` events; each replica applies `ReplicaMachine` events to its own dict. Every
message crosses as bytes: encoded, fed to a `FrameDecoder` a few bytes at a time, parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from hakit.protocol import (
    FrameDecoder,
    LinkState,
    MasterLinkMachine,
    MasterView,
    ReplicaMachine,
    ReplicaState,
    StopReason,
    SyncKind,
    decide_handshake,
    parse_message,
)
from hakit.protocol import _master as mm
from hakit.protocol import _messages as m
from hakit.protocol import _replica as rm

CHUNK_PAIRS = 3  # key/value pairs per snapshot chunk: small, so snapshots take several
PIECE = 5  # bytes fed to a decoder at a time: frames arrive split anywhere


class Pipe:
    """One direction of a connection: bytes in flight, then a decoder at the far end."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.decoder = FrameDecoder()
        self.frames = 0
        self.cut = False  # a cut pipe loses whatever is sent into it

    def send(self, frame: bytes) -> None:
        if not self.cut:
            self.data += frame

    def receive(self) -> list[m.Message]:
        out: list[m.Message] = []
        while self.data:
            self.decoder.feed(self.data[:PIECE])
            del self.data[:PIECE]
            out += [parse_message(value) for value in self.decoder.drain()]
        self.frames += len(out)
        return out


def apply_ops(db: dict[Any, Any], ops: list[Any]) -> None:
    for op in ops:
        if op[0] == 0:
            db[op[1]] = op[2]
        else:
            db.pop(op[1], None)


@dataclass
class Link:
    """The master's view of one connection: its machine and its queued entries."""

    name: str
    machine: MasterLinkMachine
    to_replica: Pipe
    to_master: Pipe
    queued: list[bytes] = field(default_factory=list)
    queued_txid: int = 0
    left: mm.ReplicaLeft | None = None
    synced: mm.LinkSynced | None = None


class Master:
    """A master node reduced to a dict, a transaction log and its links."""

    def __init__(self, name: str, generation: int, *, stateful: bool = True) -> None:
        self.name = name
        self.generation = generation
        self.stateful = stateful
        self.db: dict[Any, Any] = {}
        self.txid = 0
        self.last_generation = 0
        self.log: dict[int, tuple[int, bytes]] = {}  # txid -> (generation, packed entry)
        self.links: dict[str, Link] = {}
        self.paused = False
        self.killed: mm.KillRequested | None = None
        self.keepalive_interval = 1.0
        self.detach_timeout = 5.0

    def commit(self, ops: list[Any]) -> int:
        assert not self.paused, "commits are paused for a force master"
        assert self.killed is None, "a killed master takes no writes"
        self.txid += 1
        self.last_generation = self.generation
        apply_ops(self.db, ops)
        packed = m.pack_entry(self.txid, self.generation, ops)
        self.log[self.txid] = (self.generation, packed)
        for link in self.links.values():
            self.queue(link, self.txid, packed)
        return self.txid

    def queue(self, link: Link, txid: int, packed: bytes) -> None:
        link.queued.append(packed)
        link.queued_txid = txid

    def flush(self, link: Link, now: float) -> None:
        if link.queued:
            link.to_replica.send(m.encode_txns(self.generation, link.queued))
            link.machine.sent(now, link.queued_txid)
            link.queued = []

    def view(self) -> MasterView:
        return MasterView(
            cluster="hakit",
            node=self.name,
            generation=self.generation,
            txid=self.txid,
            last_generation=self.last_generation,
            generation_of=lambda txid: self.log[txid][0] if txid in self.log else None,
            stateful=self.stateful,
            accepting=self.killed is None,
            names_in_use=frozenset(self.links),
            keepalive_interval=self.keepalive_interval,
        )

    def accept(self, hello: m.Hello, to_replica: Pipe, to_master: Pipe, now: float) -> None:
        reply, sync = decide_handshake(hello, self.view())
        to_replica.send(reply.encode())
        if isinstance(reply, m.Reject):
            return
        machine = MasterLinkMachine(
            replica=hello.node,
            generation=self.generation,
            sync_target=self.txid,
            txid=0 if sync is SyncKind.FULL else hello.txid,
            keepalive_interval=self.keepalive_interval,
            detach_timeout=self.detach_timeout,
            now=now,
        )
        link = Link(hello.node, machine, to_replica, to_master)
        if sync is SyncKind.FULL:
            items = [x for key in sorted(self.db, key=repr) for x in (key, self.db[key])]
            count = len(items) // 2
            to_replica.send(
                m.SnapshotBegin(self.generation, self.txid, self.last_generation, count).encode()
            )
            for i in range(0, len(items), 2 * CHUNK_PAIRS):
                to_replica.send(
                    m.SnapshotChunk(self.generation, items[i : i + 2 * CHUNK_PAIRS]).encode()
                )
            to_replica.send(m.SnapshotEnd(self.generation, self.txid, count).encode())
            machine.sent(now, self.txid)
        elif sync is SyncKind.INCREMENTAL:
            for txid in range(hello.txid + 1, self.txid + 1):
                self.queue(link, txid, self.log[txid][1])
        self.links[hello.node] = link

    def on_event(self, link: Link, event: mm.LinkEvent | None, now: float) -> None:
        if isinstance(event, mm.LinkSynced):
            link.synced = event
        elif isinstance(event, mm.ReplicaLeft):
            link.left = event
            del self.links[link.name]
        elif isinstance(event, mm.PromoteRequested):
            self.paused = True
            self.flush(link, now)  # everything committed goes out before the pause point
            link.to_replica.send(link.machine.pause_ready(self.txid).encode())
        elif isinstance(event, mm.KillRequested):
            self.killed = event
            link.to_replica.send(m.MasterKilled(event.generation).encode())
            for other in list(self.links.values()):
                if other is not link:
                    changed = m.MasterChanged(event.generation, event.node, event.address)
                    other.to_replica.send(changed.encode())
                    del self.links[other.name]  # closed once MasterChanged is sent


class Replica:
    """A replica node reduced to a dict; it acts on its machine's events like a runtime."""

    def __init__(self, name: str, *, generation: int = 0, **options: Any) -> None:
        self.name = name
        self.generation = generation
        self.db: dict[Any, Any] = {}
        self.txid = 0
        self.last_generation = 0
        self.applied: list[m.Entry] = []
        self.options = options
        self.machine: ReplicaMachine | None = None
        self.events: list[rm.ReplicaEvent] = []
        self.late: list[m.Message] = []  # arrived after the session stopped
        self._staging: dict[Any, Any] | None = None

    def start(self, now: float) -> ReplicaMachine:
        self.machine = ReplicaMachine(
            cluster="hakit",
            node=self.name,
            generation=self.generation,
            txid=self.txid,
            last_generation=self.last_generation,
            address=f"mem:{self.name}",
            now=now,
            **self.options,
        )
        return self.machine

    def on_events(self, events: list[rm.ReplicaEvent], to_master: Pipe) -> None:
        machine = self.machine
        assert machine is not None
        for event in events:
            self.events.append(event)
            if isinstance(event, rm.Apply):
                for txid, generation, ops in event.entries:
                    apply_ops(self.db, ops)
                    self.txid, self.last_generation = txid, generation
                self.applied += event.entries
                to_master.send(machine.ack().encode())
            elif isinstance(event, rm.LoadBegin):
                self._staging = {}
            elif isinstance(event, rm.LoadChunk):
                assert self._staging is not None
                items = event.items
                self._staging.update(zip(items[::2], items[1::2], strict=True))
            elif isinstance(event, rm.LoadEnd):
                assert self._staging is not None
                self.db, self._staging = self._staging, None
                self.txid, self.last_generation = event.txid, event.last_generation
                self.generation = event.generation
                self.applied = []
            elif isinstance(event, rm.Welcomed):
                self.generation = machine.generation
            elif isinstance(event, rm.Synced):
                to_master.send(machine.ack().encode())
            elif isinstance(event, rm.Send):
                to_master.send(event.message.encode())
            elif isinstance(event, rm.Promoted):
                self.generation = event.generation

    def of_type(self, cls: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


class Pair:
    """Connections between one master and its replicas, pumped until quiet."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.now = 0.0
        self.connections: list[tuple[Replica, Pipe, Pipe]] = []  # (replica, to_master, to_replica)

    def connect(self, replica: Replica) -> None:
        to_master, to_replica = Pipe(), Pipe()
        to_master.send(replica.start(self.now).hello().encode())
        self.connections.append((replica, to_master, to_replica))
        self.pump()

    def pump(self) -> None:
        """Deliver frames both ways until nothing is in flight."""
        master = self.master
        for _ in range(1000):
            moved = False
            for replica, to_master, to_replica in self.connections:
                for msg in to_master.receive():
                    moved = True
                    link = master.links.get(replica.name)
                    if isinstance(msg, m.Hello) and (
                        link is None or link.to_master is not to_master
                    ):
                        master.accept(msg, to_replica, to_master, self.now)
                    else:
                        assert link is not None
                        master.on_event(link, link.machine.receive(msg, self.now), self.now)
                machine = replica.machine
                assert machine is not None
                for msg in to_replica.receive():
                    moved = True
                    if machine.state is ReplicaState.STOPPED:
                        replica.late.append(msg)  # a runtime would have closed the link
                    else:
                        replica.on_events(machine.receive(msg, self.now), to_master)
            for link in list(master.links.values()):
                if link.queued:
                    moved = True
                    master.flush(link, self.now)
            if not moved:
                return
        raise AssertionError("the pair never went quiet")

    def advance(self, seconds: float) -> None:
        """Let time pass: run every machine's timers, then deliver what they produced."""
        self.now += seconds
        for link in list(self.master.links.values()):
            result = link.machine.tick(self.now)
            if isinstance(result, m.KeepAlive):
                link.to_replica.send(result.encode())
            elif result is not None:
                self.master.on_event(link, result, self.now)
        for replica, _, _ in self.connections:
            machine = replica.machine
            assert machine is not None
            stopped = machine.tick(self.now)
            if stopped is not None:
                replica.events.append(stopped)
        self.pump()

    def commit(self, *ops: list[Any]) -> int:
        return self.master.commit(list(ops))


def put(key: Any, value: Any) -> list[Any]:
    return [0, key, value]


def delete(key: Any) -> list[Any]:
    return [1, key]


def master_with_data(n: int = 20, *, generation: int = 1, stateful: bool = True) -> Master:
    master = Master("m", generation, stateful=stateful)
    for i in range(1, n + 1):
        master.commit([put(f"k{i}", i), put(b"bin", bytes([i]))])
    master.commit([delete("k1")])
    return master


# -- scenarios -------------------------------------------------------------------------------


def test_full_sync_transaction_batches_and_force_master() -> None:
    master = master_with_data()  # txid 21
    pair = Pair(master)
    replica = Replica("r1", force_master=True)
    to_master, to_replica = Pipe(), Pipe()
    # Hello, then the master answers with a Welcome and a snapshot in several chunks while it
    # keeps committing (hot sync): those commits wait on the link until the snapshot is sent.
    to_master.send(replica.start(pair.now).hello().encode())
    for msg in to_master.receive():
        assert isinstance(msg, m.Hello)
        master.accept(msg, to_replica, to_master, pair.now)
    link = master.links["r1"]
    assert link.machine.state is LinkState.SYNCING
    pair.commit(put("during-load", 1))
    pair.commit(put("k2", "changed"), delete("k3"))
    pair.connections.append((replica, to_master, to_replica))
    pair.pump()

    assert replica.of_type(rm.Welcomed) == [rm.Welcomed("m", SyncKind.FULL, 21)]
    assert replica.of_type(rm.LoadBegin) == [rm.LoadBegin(21, 1, 20)]
    assert len(replica.of_type(rm.LoadChunk)) == 7  # 20 keys, 3 per chunk
    assert replica.of_type(rm.LoadEnd) == [rm.LoadEnd(21, 1, 1)]
    assert replica.of_type(rm.Synced) == [rm.Synced(21)]
    assert link.synced == mm.LinkSynced(21)
    # Synced -> PromoteRequest -> the master pauses after sending txids 22-23 -> PromoteReady
    # -> KillMaster(generation 2) -> KillRequested -> MasterKilled -> Promoted.
    assert master.paused
    assert master.killed == mm.KillRequested(2, "r1", "mem:r1")
    assert link.machine.state is LinkState.KILLED
    assert link.machine.acked == 23
    assert replica.of_type(rm.Promoted) == [rm.Promoted(2)]
    assert replica.applied == [
        [22, 1, [put("during-load", 1)]],
        [23, 1, [put("k2", "changed"), delete("k3")]],
    ]
    assert replica.db == master.db
    assert (replica.txid, replica.generation) == (master.txid, 2)
    assert replica.machine is not None
    assert replica.machine.stop_reason is StopReason.BECOMES_MASTER
    assert replica.late == []


def test_incremental_resync_keepalives_and_a_graceful_stop() -> None:
    master = master_with_data(10)  # txid 11
    replica = Replica("r1", generation=1)
    # The replica holds the first 6 transactions of the same history.
    for txid in range(1, 7):
        _, packed = master.log[txid]
        _, generation, ops = msgpack.unpackb(packed)
        apply_ops(replica.db, ops)
        replica.txid, replica.last_generation = txid, generation
    pair = Pair(master)
    pair.connect(replica)
    link = master.links["r1"]
    assert replica.of_type(rm.Welcomed) == [rm.Welcomed("m", SyncKind.INCREMENTAL, 11)]
    assert replica.of_type(rm.LoadBegin) == []
    assert [e[0] for e in replica.applied] == [7, 8, 9, 10, 11]
    assert link.synced == mm.LinkSynced(11)
    assert replica.db == master.db

    for batch in range(3):  # a few batches of several transactions, one frame each
        for i in range(4):
            pair.commit(put(f"b{batch}", i))
        pair.pump()
        assert link.machine.acked == master.txid
    assert replica.db == master.db
    assert replica.txid == 23

    # Idle: the master sends keep-alives, the replica answers them, nobody times out.
    frames = link.to_replica.frames
    for _ in range(20):
        pair.advance(0.5)
    assert link.to_replica.frames == frames + 10
    assert master.links["r1"] is link
    assert replica.of_type(rm.Stopped) == []

    machine = replica.machine
    assert machine is not None
    bye = machine.stop(StopReason.STOPPED_BY_LOCAL_REQUEST, "replica_stop() called")
    assert bye is not None
    link.to_master.send(bye.encode())
    pair.pump()
    assert link.left == mm.ReplicaLeft(StopReason.STOPPED_BY_LOCAL_REQUEST, "replica_stop() called")
    assert "r1" not in master.links


def test_behind_replica_of_a_stateless_master_is_reloaded() -> None:
    master = master_with_data(10, stateful=False)
    replica = Replica("r1", generation=1)
    for txid in range(1, 4):
        _, generation, ops = msgpack.unpackb(master.log[txid][1])
        apply_ops(replica.db, ops)
        replica.txid, replica.last_generation = txid, generation
    pair = Pair(master)
    pair.connect(replica)
    assert replica.of_type(rm.Welcomed) == [rm.Welcomed("m", SyncKind.FULL, 11)]
    assert replica.of_type(rm.LoadEnd) == [rm.LoadEnd(11, 1, 1)]
    assert replica.applied == []
    assert replica.db == master.db
    assert master.links["r1"].synced == mm.LinkSynced(11)


def test_silent_replica_is_detached_and_silent_master_aborts() -> None:
    master = master_with_data(3)
    pair = Pair(master)
    replica = Replica("r1", wait_data_timeout=3.0)
    pair.connect(replica)
    link = master.links["r1"]
    assert link.synced is not None
    # Cut the replica -> master direction at t=0: keep-alives still arrive, acks are lost.
    link.to_master.cut = True
    for _ in range(4):
        pair.advance(1.0)
    assert link.left is None  # the last keep-alive went out at t=4
    pair.advance(1.0)
    assert link.left is not None  # silent since t=0: detach_timeout (5 s)
    assert link.left.reason is StopReason.CONNECTION_ABORTED
    assert "detach_timeout" in link.left.detail
    # From now on the master is silent, and the replica gives up after wait_data_timeout.
    pair.advance(1.0)
    assert replica.of_type(rm.Stopped) == []
    pair.advance(1.0)  # t=7: 3 s after the last keep-alive
    (stopped,) = replica.of_type(rm.Stopped)
    assert stopped.reason is StopReason.CONNECTION_ABORTED
    assert "wait_data_timeout" in stopped.detail


def test_replica_ahead_on_another_history_is_reloaded() -> None:
    master = master_with_data(10, generation=2)  # txid 11, all generation 2
    replica = Replica("r1", generation=1)
    replica.db = {"stale": True}
    replica.txid, replica.last_generation = 30, 1
    pair = Pair(master)
    pair.connect(replica)
    link = master.links["r1"]
    assert replica.of_type(rm.Welcomed) == [rm.Welcomed("m", SyncKind.FULL, 11)]
    assert link.synced == mm.LinkSynced(11)
    assert replica.db == master.db
    pair.commit(put("x", 1))
    pair.pump()
    assert link.machine.acked == 12
    assert (replica.txid, replica.last_generation, replica.generation) == (12, 2, 2)


def test_other_replicas_follow_the_new_master() -> None:
    master = master_with_data(5)
    pair = Pair(master)
    r2 = Replica("r2", generation=1)
    pair.connect(r2)
    r1 = Replica("r1", generation=1, force_master=True)
    pair.connect(r1)
    assert r1.of_type(rm.Promoted) == [rm.Promoted(2)]
    (follow,) = r2.of_type(rm.FollowMaster)
    assert follow == rm.FollowMaster("r1", "mem:r1", 2)
    assert r2.machine is not None
    assert r2.machine.state is ReplicaState.STOPPED
    assert r1.late == r2.late == []

    # r1 now masters generation 2 from its own copy; r2 follows it without a reload.
    new = Master("r1", r1.generation)
    new.db, new.txid, new.last_generation = dict(r1.db), r1.txid, r1.last_generation
    pair2 = Pair(new)
    pair2.connect(r2)
    assert r2.of_type(rm.Welcomed)[-1] == rm.Welcomed("r1", SyncKind.EQUAL, 6)
    assert new.links["r2"].synced == mm.LinkSynced(6)
    pair2.commit(put("gen2", True))
    pair2.pump()
    assert r2.db == new.db
    assert (r2.txid, r2.last_generation, r2.generation) == (7, 2, 2)

    # The old master, restarted without hearing of the handover, can never take r2 back.
    stale = Pair(master_with_data(5))
    stale.connect(r2)
    assert r2.of_type(rm.Stopped)[-1].reason is StopReason.HANDSHAKE_FAILED
    assert "newer than this master's 1" in r2.of_type(rm.Stopped)[-1].detail
