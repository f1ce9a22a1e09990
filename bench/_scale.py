"""In-kernel scale: many nodes in one trio run, on the simulated network, event log on.

* 100 nodes (a master and 99 replicas, ack policy ALL): synchronous commits per second, and
  asynchronous commits per second counted until every replica has applied them;
* 1,000 nodes at default settings: every replica attaches, commits go through, and none is
  detached (the issue measured every replica detached by GC pauses at ``synch_timeout``);
* the memory an idle attached replica costs (tracemalloc, per replica);
* the event log's cost per message: the simulated network's tracer and the log, timed on
  their own over real frames (no scheduler in the figure).

The sync and async figures each stand beside a ceiling measured just before them in the
same run: the same work done in bare trio and msgpack, with no hakit (see the end).

Each figure records the run's own numbers beside it (nodes, commits, detached replicas).
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections import deque
from typing import Any

import trio

from ._util import Figure, log

# Polling loops below wait on conditions spread over hundreds of nodes; a trio.Event per
# condition would need hooks in hakit that a benchmark should not add.
# ruff: noqa: ASYNC110


async def _cluster_with_replicas(
    cluster: Any, nursery: trio.Nursery, replicas: int, params: Any
) -> tuple[Any, list[Any]]:
    import hakit

    master = await cluster.add_node("m")
    master.set_master_params(params)
    nodes = []
    for i in range(replicas):
        node = await cluster.add_node(f"r{i}")
        nodes.append(node)
        nursery.start_soon(node.attach_master, "mem:m", hakit.ReplicaParams())
    while len(master.replicas) < replicas:
        await trio.sleep(0.01)
    return master, nodes


def _detached(cluster: Any) -> int:
    import hakit

    return sum(1 for e in cluster.events if isinstance(e, hakit.ReplicaDetached))


async def sync_commits(duration: float, nodes: int = 100, writers: int = 1) -> Figure:
    """Synchronous commits per second, ack policy ALL, `nodes - 1` replicas.

    With several `writers` committing at once, their commits share frames and acks (group
    commit): context for the figure, whose goal is for one writer.
    """
    import hakit

    fig = Figure("txn/s")
    async with hakit.open_cluster(seed=1) as cluster, trio.open_nursery() as nursery:
        params = hakit.MasterParams(max_replicas=nodes)
        master, _ = await _cluster_with_replicas(cluster, nursery, nodes - 1, params)
        counts = [0] * writers
        start = time.perf_counter()
        async with trio.open_nursery() as writing:
            for w in range(writers):
                writing.start_soon(_count_commits, master, duration, counts, w)
        elapsed = time.perf_counter() - start
        count = sum(counts)
        fig.add(count / elapsed)
        fig.extra.update(nodes=nodes, writers=writers, commits=count,
                         detached=_detached(cluster), events=cluster.events.total)  # fmt: skip
        log(f"scale: {nodes} nodes, {writers} writers, {count} sync commits in {elapsed:.2f} s")
        nursery.cancel_scope.cancel()
    return fig


async def _count_commits(master: Any, duration: float, counts: list[int], w: int) -> None:
    counts[w] = await _commit_for(master, duration, prefix=f"w{w}-")


async def _commit_for(master: Any, duration: float, prefix: str = "k") -> int:
    """Commit one put after another on `master` for `duration` seconds; return how many."""
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < duration:
        async with master.transaction() as tx:
            tx.put(f"{prefix}{count}", count)
        count += 1
    return count


async def async_commits(duration: float, nodes: int = 100) -> Figure:
    """Asynchronous commits per second, counted until every replica has applied them."""
    import hakit

    fig = Figure("txn/s")
    async with hakit.open_cluster(seed=1) as cluster, trio.open_nursery() as nursery:
        params = hakit.MasterParams(mode=hakit.MasterMode.ASYNC, max_replicas=nodes)
        master, replicas = await _cluster_with_replicas(cluster, nursery, nodes - 1, params)
        start = time.perf_counter()
        count = await _commit_for(master, duration)
        target = master.txid
        while min(r.txid for r in replicas) < target:
            await trio.sleep(0.001)
        elapsed = time.perf_counter() - start
        fig.add(count / elapsed)
        fig.extra.update(nodes=nodes, commits=count, detached=_detached(cluster))
        log(f"scale: {nodes} nodes, {count} async commits applied everywhere in {elapsed:.2f} s")
        nursery.cancel_scope.cancel()
    return fig


async def thousand(nodes: int = 1000, commits: int = 20) -> Figure:
    """Replicas detached while `nodes` nodes attach and take `commits` commits (goal: 0)."""
    import hakit

    fig = Figure("replicas")
    async with hakit.open_cluster(seed=1) as cluster, trio.open_nursery() as nursery:
        params = hakit.MasterParams(max_replicas=nodes)
        start = time.perf_counter()
        master, _ = await _cluster_with_replicas(cluster, nursery, nodes - 1, params)
        attached = time.perf_counter() - start
        for i in range(commits):
            async with master.transaction() as tx:
                tx.put(f"k{i}", i)
        await trio.sleep(2 * hakit.MasterParams().synch_timeout)  # idle, keep-alives flowing
        detached = _detached(cluster)
        fig.add(float(detached))
        fig.extra.update(nodes=nodes, attach_s=round(attached, 2), commits=commits,
                         attached_at_end=len(master.replicas))  # fmt: skip
        log(f"scale: {nodes} nodes attached in {attached:.1f} s; {detached} detached")
        nursery.cancel_scope.cancel()
    return fig


async def idle_replica_memory(replicas: int = 200) -> Figure:
    """KiB of Python memory one more idle, attached replica costs (tracemalloc)."""
    import hakit

    fig = Figure("KiB")
    async with hakit.open_cluster(seed=1) as cluster, trio.open_nursery() as nursery:
        params = hakit.MasterParams(max_replicas=replicas + 10)
        master, _ = await _cluster_with_replicas(cluster, nursery, 1, params)
        await trio.sleep(0.5)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(replicas):
            node = await cluster.add_node(f"idle{i}")
            nursery.start_soon(node.attach_master, "mem:m", hakit.ReplicaParams())
        while len(master.replicas) < replicas + 1:
            await trio.sleep(0.01)
        await trio.sleep(3 * params.keepalive_interval)  # steady state: keep-alives logged
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        fig.add((after - before) / replicas / 1024)
        fig.extra.update(replicas=replicas, events_kept=len(cluster.events))
        nursery.cancel_scope.cancel()
    return fig


def event_log_cost(messages: int = 200_000) -> Figure:
    """Microseconds the tracer and the event log add per message (sent + delivered)."""
    import hakit
    from hakit._runtime._cluster import _Tracer
    from hakit.protocol._messages import encode_txns, pack_entry
    from hakit.transports._memory import Route

    fig = Figure("us")
    log_ = hakit.EventLog(canonical=True)
    tracer = _Tracer(log_)
    route = Route("m", "r1", "r1>m#0", False)
    frame = encode_txns(1, [pack_entry(7, 1, [[0, "key", "value-" * 8]])])[4:]
    start = time.perf_counter()
    for i in range(messages):
        t = i * 1e-4
        tracer.message("sent", t, route, i, frame, "", t, t, 0, "")
        tracer.message("delivered", t + 5e-5, route, i, frame, "", t, None, 0, "")
    elapsed = time.perf_counter() - start
    fig.add(elapsed / messages * 1e6)
    fig.extra.update(messages=messages, ring=log_.capacity, dropped=log_.dropped)
    return fig


# -- ceilings: the same work in bare trio and msgpack, no hakit ----------------------------
#
# In hakit's task shape: every replica's frames are read by one reader task (as hakit's
# replica reader reads every synced replica of a run), and the master's acks by one waiting
# task. Each commit's entry is packed once, framed, and put in every replica's inbox, which
# queues the replica on the reader; for each queued replica the reader decodes the frame
# entry by entry, applies their ops to the replica's dict, keeps the frame's received bytes
# in the replica's bounded log, and answers with a framed ack, which the master decodes.
# Every frame is recorded as a sent and a delivered event tuple in a ring of the event
# log's capacity (the goals are with the event log on). No validation, state machines,
# timeouts or storage layer: what is left is what any design of this shape pays here.


class _CeilingReplica:
    """One replica's state in the ceiling: an inbox, its data, its log, its decoder."""

    def __init__(self, index: int) -> None:
        import msgpack

        self.name = f"r{index}"
        self.inbox: list[bytes] = []
        self.queued = False
        self.data: dict[str, Any] = {}
        # A frame's entries are kept as the master packed them: the frame's bytes, one blob.
        self.log: deque[bytes] = deque(maxlen=100_000)
        # Entries are decoded one at a time from a stream: a large batch decoded whole
        # would be thousands of young lists at once, for the garbage collector to sweep.
        self.unpacker = msgpack.Unpacker(raw=False)
        self.applied = 0


class _CeilingNet:
    """Inboxes and two parked tasks: the least a frame needs to reach its reader and wake it."""

    def __init__(self, replicas: int) -> None:
        import msgpack

        from hakit._runtime._events import DEFAULT_CAPACITY

        self.ring: deque[tuple[Any, ...]] = deque(maxlen=DEFAULT_CAPACITY)
        self.replicas = [_CeilingReplica(i) for i in range(replicas)]
        self.ready: list[_CeilingReplica] = []
        self.reader: trio.lowlevel.Task | None = None
        self.acks: list[bytes] = []
        self.master: trio.lowlevel.Task | None = None
        self.pack = msgpack.Packer(use_bin_type=True).pack

    @property
    def applied(self) -> list[int]:
        return [replica.applied for replica in self.replicas]

    def record(self, sender: str, receiver: str, payload: bytes) -> None:
        now = trio.current_time()
        size = len(payload) + 4
        self.ring.append((now, sender, "sent", sender, receiver, "", True, 0, "", size, now,
                          now, 0, "", payload))  # fmt: skip
        self.ring.append((now, receiver, "delivered", sender, receiver, "", True, 0, "", size,
                          now, None, 0, "", payload))  # fmt: skip

    def to_replica(self, replica: _CeilingReplica, frame: bytes) -> None:
        self.record("m", replica.name, frame[4:])
        replica.inbox.append(frame)
        if not replica.queued:
            replica.queued = True
            self.ready.append(replica)
            task = self.reader
            if task is not None:
                self.reader = None
                trio.lowlevel.reschedule(task)

    def to_master(self, replica: _CeilingReplica, frame: bytes) -> None:
        self.record(replica.name, "m", frame[4:])
        self.acks.append(frame)
        task = self.master
        if task is not None:
            self.master = None
            trio.lowlevel.reschedule(task)

    async def read_replicas(self) -> None:
        while True:
            while not self.ready:
                self.reader = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(_succeeded)
            ready, self.ready = self.ready, []
            for replica in ready:
                replica.queued = False
                self._apply(replica)

    def _apply(self, replica: _CeilingReplica) -> None:
        frames, replica.inbox = replica.inbox, []
        unpacker, data = replica.unpacker, replica.data
        txid = 0
        for frame in frames:
            payload = frame[4:]
            unpacker.feed(payload)
            count = unpacker.read_array_header() - 2
            unpacker.skip()  # kind
            unpacker.skip()  # generation
            for _ in range(count):
                entry = unpacker.unpack()
                for op in entry[2]:
                    data[op[1]] = op[2]
                txid = entry[0]
            replica.log.append(payload)
        replica.applied = txid
        ack = self.pack([8, 1, txid])
        self.to_master(replica, len(ack).to_bytes(4, "big") + ack)

    def broadcast(self, frame: bytes) -> None:
        for replica in self.replicas:
            self.to_replica(replica, frame)

    async def wait_acks(self, count: int) -> None:
        import msgpack

        got = 0
        while got < count:
            while not self.acks:
                self.master = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(_succeeded)
            acks, self.acks = self.acks, []
            for frame in acks:
                msgpack.unpackb(frame[4:], raw=False)
            got += len(acks)


def _succeeded(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.SUCCEEDED


def _txns_frame(entries: list[bytes]) -> bytes:
    from hakit.protocol._messages import encode_txns

    return encode_txns(1, entries)


async def sync_ceiling(duration: float, nodes: int = 100) -> Figure:
    """The sync figure's work in bare trio: one commit after another, all acks awaited."""
    import msgpack

    fig = Figure("txn/s")
    pack = msgpack.Packer(use_bin_type=True).pack
    replicas = nodes - 1
    net = _CeilingNet(replicas)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.read_replicas)
        await trio.sleep(0.01)
        start = time.perf_counter()
        count = 0
        while time.perf_counter() - start < duration:
            count += 1
            net.broadcast(_txns_frame([pack([count, 1, [[0, f"k{count}", count]]])]))
            await net.wait_acks(replicas)
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    fig.add(count / elapsed)
    fig.extra.update(nodes=nodes, commits=count)
    return fig


async def async_ceiling(duration: float, nodes: int = 100) -> Figure:
    """The async figure's work in bare trio: batches of commits, counted until all applied."""
    import msgpack

    fig = Figure("txn/s")
    pack = msgpack.Packer(use_bin_type=True).pack
    replicas = nodes - 1
    net = _CeilingNet(replicas)
    batch = 512  # what hakit's asynchronous writer queues before it yields
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.read_replicas)
        await trio.sleep(0.01)
        start = time.perf_counter()
        count = 0
        data: dict[str, Any] = {}
        master_log: deque[tuple[int, int, bytes]] = deque(maxlen=100_000)
        while time.perf_counter() - start < duration:
            entries = []
            for _ in range(batch):
                count += 1
                data[f"k{count}"] = count
                packed = pack([count, 1, [[0, f"k{count}", count]]])
                master_log.append((count, 1, packed))
                entries.append(packed)
            net.broadcast(_txns_frame(entries))
            await trio.lowlevel.checkpoint()
        while min(net.applied) < count:
            await net.wait_acks(1)
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    fig.add(count / elapsed)
    fig.extra.update(nodes=nodes, commits=count)
    return fig
