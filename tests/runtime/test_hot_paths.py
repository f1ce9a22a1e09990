"""The fast paths that let many in-kernel nodes replicate: same semantics as the slow ones.

A cluster's event log keeps message records as plain tuples and builds each `MessageEvent`
when it is read; a simulated link sends without a checkpoint and reads without a timeout
scope; a master sends to every simulated link from one flusher task; a replica's timeouts
are one watchdog task's. Each test pins what a user can observe of one of them.
"""

from __future__ import annotations

import gc

import pytest
import trio
import trio.testing

import hakit
from hakit import MasterParams, ReplicaParams, StopReason
from hakit._runtime._decode import frame_kind
from hakit.protocol import _messages as m
from hakit.transports import FramedStream, SimulatedNetwork

from .conftest import commit, run_attach, wait_until


def _record(time: float, action: str, seq: int, link: str = "r>m#0") -> tuple:
    return (time, "m", action, "r", "m", link, True, seq, "ACK", 9, time, None, 0, "", b"\x93")


def test_records_read_back_as_message_events_in_canonical_order() -> None:
    log = hakit.EventLog(canonical=True)
    # One instant, appended out of canonical order: the second link's frame first.
    log.append_message(_record(1.0, "sent", 0, "z>m#0"))
    log.append_message(_record(1.0, "sent", 0))
    log.append_message(_record(1.0, "delivered", 0))
    log.append(hakit.RoleChanged(1.0, "m", "standalone", "master", 1))
    log.append_message(_record(2.0, "sent", 1))
    events = list(log)
    assert all(isinstance(e, hakit.Event) for e in events)
    described = [
        (type(e).__name__, getattr(e, "link", ""), getattr(e, "action", "")) for e in events
    ]
    assert described == [
        ("RoleChanged", "", ""),
        ("MessageEvent", "r>m#0", "sent"),
        ("MessageEvent", "r>m#0", "delivered"),
        ("MessageEvent", "z>m#0", "sent"),
        ("MessageEvent", "r>m#0", "sent"),
    ]
    assert log[1] == events[1] and log[-1] == events[-1] and log[1:3] == events[1:3]
    with pytest.raises(IndexError):
        log[5]
    assert log.of_type(hakit.RoleChanged) == [events[0]]
    assert log.of_type(hakit.MessageEvent) == events[1:]
    assert log.of_type(hakit.Event) == events
    read, cursor = log.read(0)
    assert read == events and cursor == 5 == log.total


def test_a_record_is_the_same_event_as_the_one_it_stands_for() -> None:
    record = _record(3.0, "delivered", 7)
    log, sunk = hakit.EventLog(canonical=True, sink=None), []
    log.sink = sunk.append
    log.append_message(record)
    log.flush()
    assert sunk == [hakit.MessageEvent(*record)] and list(log) == sunk
    assert sunk[0].id == "r>m#0>7" and sunk[0].kind == "ACK"
    # A log that forwards (a node's) gets real events: the forward sees the same object.
    seen: list[hakit.Event] = []
    forwarding = hakit.EventLog(forward=seen.append)
    forwarding.append_message(record)
    assert seen == list(forwarding) == [hakit.MessageEvent(*record)]


def test_a_full_ring_of_records_is_not_tracked_by_the_collector() -> None:
    log = hakit.EventLog(capacity=100, canonical=True)
    for i in range(300):
        log.append_message(_record(float(i), "sent", i))
    gc.collect()
    kept = list(log._ring)
    assert len(kept) == 100 and log.dropped == 199  # 300 in: 100 kept, the last pending
    assert not any(gc.is_tracked(item) for item in kept)


def test_frame_kind_names_a_large_transaction_batch_without_decoding_it() -> None:
    entries = [m.pack_entry(i, 1, [[0, f"k{i}", i]]) for i in range(1, 40)]  # array 16
    payload = m.encode_txns(1, entries)[4:]
    assert payload[0] == 0xDC and frame_kind(payload) == "TXNS"
    assert frame_kind(m.Ack(1, 5).encode()[4:]) == "ACK"
    assert frame_kind(b"\xdc\x00") == "?" and frame_kind(b"") == "?"


async def test_a_simulated_link_sends_without_a_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = SimulatedNetwork()
    async with network.listen("b") as listener:
        client = await network.connect("b", source="a")
        server = await listener.accept()
        framed = FramedStream(client)
        assert framed.can_send_nowait
        assert framed.try_send_nowait(m.Ack(0, 1).encode())
        assert await FramedStream(server).receive() == [[int(m.Kind.ACK), 0, 1]]
        await server.aclose()
        await trio.sleep(0.1)  # the close reaches the client
        with pytest.raises(trio.BrokenResourceError):
            framed.try_send_nowait(m.Ack(0, 2).encode())
        await client.aclose()
        with pytest.raises(trio.ClosedResourceError):
            framed.try_send_nowait(m.Ack(0, 3).encode())


async def test_a_stream_that_may_block_is_not_sent_to_without_a_checkpoint() -> None:
    left, _right = trio.testing.memory_stream_pair()
    framed = FramedStream(left)
    assert not framed.can_send_nowait
    assert not framed.try_send_nowait(b"\x00\x00\x00\x01\xc0")


async def test_a_read_of_buffered_data_is_still_a_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Without a timeout scope per read, a read still yields (and can be cancelled) once,
    # whether the data is already there or has to be waited for.
    network = SimulatedNetwork()
    async with network.listen("b") as listener:
        client = await network.connect("b", source="a")
        server = await listener.accept()
        await client.send_all(b"x" * 10)
        with trio.testing.assert_checkpoints():
            assert await server.receive_some(4) == b"xxxx"
        with trio.CancelScope() as scope:
            scope.cancel()
            await server.receive_some(4)
        assert scope.cancelled_caught  # cancelled although data was waiting
        assert await server.receive_some() == b"x" * 6  # and nothing was lost

        async def later() -> None:
            await trio.sleep(1)
            await client.send_all(b"y")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(later)
            with trio.testing.assert_checkpoints():
                assert await server.receive_some() == b"y"
        await client.aclose()
        await server.aclose()


async def test_a_framed_read_of_a_simulated_link_is_one_checkpoint_and_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A FramedStream over a mem: link reads without waiting and parks on trio's trap: it
    # is still one schedule point per read, a cancellation comes before any frame is taken,
    # and a frame whose bytes come in pieces (or after a latency) is waited for.
    network = SimulatedNetwork()
    async with network.listen("b") as listener:
        client = await network.connect("b", source="a")
        server = FramedStream(await listener.accept())
        assert server.can_watch
        await client.send_all(m.Ack(1, 1).encode() + m.Ack(1, 2).encode())
        with trio.CancelScope() as scope:
            scope.cancel()
            await server.receive()
        assert scope.cancelled_caught  # cancelled although frames were waiting...
        with trio.testing.assert_checkpoints():
            assert await server.receive() == [[8, 1, 1], [8, 1, 2]]  # ...and none was lost
        frame = m.Ack(1, 3).encode()

        async def in_pieces() -> None:
            await trio.sleep(1)
            await client.send_all(frame[:3])
            await trio.sleep(1)
            network.set_latency("a", "b", 0.5)
            await client.send_all(frame[3:])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_pieces)
            with trio.testing.assert_checkpoints():
                assert await server.receive() == [[8, 1, 3]]
            assert trio.current_time() == pytest.approx(2.5)
        await client.aclose()
        with pytest.raises(EOFError):
            await server.receive()
        await server.aclose()


async def test_wait_data_timeout_counts_from_the_last_frame_heard(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The replica's watchdog sleeps until the deadline it saw, wakes, finds that a frame
    # moved it on, and sleeps again: the stop comes wait_data_timeout after the last frame.
    network = SimulatedNetwork()
    async with trio.open_nursery() as nursery:
        listener = network.listen("quiet")

        async def quiet_master() -> None:
            async with listener, FramedStream(await listener.accept()) as framed:
                await framed.receive()
                await framed.send(m.Welcome(0, "quiet", 0, int(m.SyncKind.EQUAL), 1.0).encode())
                await trio.sleep(0.4)
                await framed.send(m.KeepAlive(0, 0).encode())
                await trio.sleep(0.4)
                await framed.send(m.KeepAlive(0, 0).encode())
                await trio.sleep_forever()

        nursery.start_soon(quiet_master)
        replica = hakit.Node("r1", network=network)
        await nursery.start(replica._main)
        started = trio.current_time()
        reason = await replica.attach_master("mem:quiet", ReplicaParams(wait_data_timeout=0.5))
        assert reason is StopReason.CONNECTION_ABORTED
        assert trio.current_time() - started == pytest.approx(0.8 + 0.5)
        assert "wait_data_timeout" in replica.events.of_type(hakit.ReplicaStopped)[-1].detail
        nursery.cancel_scope.cancel()


async def test_group_commit_still_batches_through_the_flusher(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Sixteen writers at once: their transactions leave in one Txns frame per replica, sent
    # by the master's flusher after they all yielded; the replica acknowledges them at once.
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams())
        replicas = [await cluster.add_node(f"r{i}") for i in range(3)]
        for replica in replicas:
            run_attach(nursery, replica, "mem:m", ReplicaParams())
            await master.attach_replica(timeout=5)
        before = cluster.events.total
        results: list[hakit.CommitResult] = []

        async def writer(i: int) -> None:
            results.append(await commit(master, **{f"w{i}": i}))

        async with trio.open_nursery() as writers:
            for i in range(16):
                writers.start_soon(writer, i)
        assert sorted(r.txid for r in results) == list(range(1, 17))
        assert all(sorted(r.acked) == ["r0", "r1", "r2"] for r in results)
        sent = [
            e for e in cluster.events
            if isinstance(e, hakit.MessageEvent) and e.action == "sent" and e.kind == "TXNS"
        ][-3:]  # fmt: skip
        assert sorted(e.receiver for e in sent) == ["r0", "r1", "r2"]
        assert all(len(e.fields["entries"]) == 16 for e in sent)
        assert cluster.events.total > before
        for replica in replicas:
            assert all(replica.get(f"w{i}") == i for i in range(16))
        nursery.cancel_scope.cancel()


async def test_a_crashed_replica_ends_only_its_own_link(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A link whose peer has gone (seen by its receiver, or by the flusher's send) closes
    # alone; the commit succeeds with the other replica's acknowledgement.
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams(ack_policy=hakit.AckPolicy.ONE))
        r1, r2 = await cluster.add_node("r1"), await cluster.add_node("r2")
        for replica in (r1, r2):
            run_attach(nursery, replica, "mem:m", ReplicaParams())
            await master.attach_replica(timeout=5)
        await commit(master, a=1)
        await cluster.crash("r2")
        result = await commit(master, b=2)
        assert result.acked == ("r1",)
        await wait_until(lambda: master.replicas == ["r1"])
        assert r1.get("b") == 2
        nursery.cancel_scope.cancel()


async def test_an_attach_cancelled_from_outside_raises_cancelled_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The replica's watchdog is no nursery of the attach's own: cancelling the caller gives
    # it one trio.Cancelled (a notebook handle catches exactly that), not a group of them.
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams())
        replica = await cluster.add_node("r1")
        scope, caught = trio.CancelScope(), []

        async def attach() -> None:
            with scope:
                try:
                    await replica.attach_master("mem:m", ReplicaParams())
                except trio.Cancelled:
                    caught.append("Cancelled")
                    raise

        nursery.start_soon(attach)
        await master.attach_replica(timeout=5)
        await commit(master, a=1)
        scope.cancel()
        await wait_until(lambda: bool(caught))
        assert caught == ["Cancelled"]
        await wait_until(lambda: not master.replicas)
        nursery.cancel_scope.cancel()


async def test_an_ack_delivered_by_the_deadline_is_heard_before_judging(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # r1's ack reaches the master at the very instant synch_timeout expires: the watchdog
    # and r1's link reader wake together. The master hears what was delivered before it
    # judges, so r1 is not detached for the master's own scheduling; r2, whose ack arrives
    # a quarter second later, is.
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams(synch_timeout=1.0))
        r1, r2 = await cluster.add_node("r1"), await cluster.add_node("r2")
        for replica in (r1, r2):
            run_attach(nursery, replica, "mem:m", ReplicaParams(wait_data_timeout=60))
            await master.attach_replica(timeout=5)
        cluster.network.set_latency("m", "r1", 0.5, 0.0)  # there and back: exactly 1 s
        cluster.network.set_latency("m", "r2", 0.625, 0.0)  # 1.25 s: too late
        await trio.sleep_until(8.0)  # times that add up exactly in binary
        result = await commit(master, a=1)
        assert trio.current_time() == 9.0
        assert result.acked == ("r1",) and result.detached == ("r2",)
        assert master.replicas == ["r1"]
        (detached,) = master.events.of_type(hakit.ReplicaDetached)
        assert detached.replica == "r2" and "synch_timeout" in detached.detail
        nursery.cancel_scope.cancel()


def _task_names() -> list[str]:
    names, todo = [], [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        assert task is not None
        names.append(task.name)
        todo.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return names


async def test_one_task_reads_every_simulated_link_of_a_master(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # No reader task parked per replica: the master's one link reader is told which links
    # have something (an ack, a close) and reads them all in one step.
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams())
        replicas = [await cluster.add_node(f"r{i}") for i in range(4)]
        for replica in replicas:
            run_attach(nursery, replica, "mem:m", ReplicaParams())
            await master.attach_replica(timeout=5)
        result = await commit(master, a=1)
        assert sorted(result.acked) == ["r0", "r1", "r2", "r3"]
        names = _task_names()
        assert sum("LinkReader.run" in name for name in names) == 1
        assert not any("_receiver" in name for name in names)
        # A replica that goes away is heard through the same reader: its link alone ends.
        await cluster.crash("r2")
        await wait_until(lambda: "r2" not in master.replicas)
        result = await commit(master, b=2)
        assert sorted(result.acked) == ["r0", "r1", "r3"]
        nursery.cancel_scope.cancel()
