"""The master's one link reader under faults: nothing acknowledged lost, the others served.

One task reads every mem: link of a master (`hakit._runtime._link_reader`). These tests put
acknowledgements in flight on several links at once (latency, a hold, loss with
retransmits, a crash) and check what the reader makes of each: the commit's result names
who acknowledged and who was detached, an acknowledging replica has the data, and a link
that ends (detached while its bytes wait, crashed) ends alone.
"""

from __future__ import annotations

import functools

import msgpack
import trio
import trio.testing

import hakit
from hakit import MasterParams, ReplicaParams, StopReason
from hakit.protocol import _messages as m
from hakit.transports import FramedStream, SimulatedNetwork

from .conftest import commit, run_attach, wait_until


async def test_acks_in_flight_on_faulty_links_are_heard_and_each_fault_ends_only_its_link(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with hakit.open_cluster(seed=5) as cluster, trio.open_nursery() as nursery:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams(synch_timeout=5.0))
        names = ["slow", "held", "lossy", "doomed", "plain"]
        replicas = {name: await cluster.add_node(name) for name in names}
        runs = {}
        for name, replica in replicas.items():
            runs[name] = run_attach(nursery, replica, "mem:m", ReplicaParams(wait_data_timeout=600))
            await master.attach_replica(timeout=5)
        net = cluster.network
        net.set_latency("m", "slow", 0.05, 0.01)
        net.set_loss("m", "lossy", 0.25)
        net.set_latency("m", "doomed", 0.5, 0.0)  # it crashes with acks on their way
        results: list[tuple[str, hakit.CommitResult]] = []

        async def writer(w: int, count: int) -> None:
            for i in range(count):
                key = f"w{w}-{i}"
                results.append((key, await commit(master, **{key: i})))

        async with trio.open_nursery() as writers:
            for w in range(4):
                writers.start_soon(writer, w, 6)
            await trio.sleep(0.03)
            await cluster.crash("doomed")  # with commits in flight to it
            await trio.sleep(0.05)
            net.hold("m", "held")  # its acks (and frames) stop while commits are in flight
        # The held replica was detached at synch_timeout, its bytes still held: releasing
        # them now reaches a closed link, which the reader must simply skip.
        net.release("m", "held")
        for i in range(3):
            key = f"after{i}"
            results.append((key, await commit(master, **{key: i})))
        assert sorted(master.replicas) == ["lossy", "plain", "slow"]
        detached = {e.replica: e for e in master.events.of_type(hakit.ReplicaDetached)}
        assert sorted(detached) == ["doomed", "held"]
        assert "synch_timeout" in detached["held"].detail
        assert detached["doomed"].reason is StopReason.CONNECTION_ABORTED
        assert sorted(results[-1][1].acked) == ["lossy", "plain", "slow"]
        await wait_until(lambda: runs["held"].done.is_set())
        for key, result in results:
            assert result.txid > 0
            assert {"lossy", "plain", "slow"} <= set(result.acked), (key, result)
            for name in result.acked:
                if name != "doomed":  # a crashed memory node lost everything, as it should
                    assert replicas[name].get(key) is not None, (name, key)
        # Both left while commits waited for them: those commits name them as detached.
        assert any("held" in r.detached for _, r in results)
        assert any("doomed" in r.detached for _, r in results)
        assert net.statistics().retransmissions > 0  # the loss did cost retransmits
        for name in ("slow", "lossy", "plain"):
            await wait_until(lambda name=name: replicas[name].txid == master.txid)
            assert dict(replicas[name].items()) == dict(master.items())
        nursery.cancel_scope.cancel()


async def test_more_than_a_read_buffered_on_one_link_is_read_whole_without_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 600 KiB of small frames and one frame larger than receive_size wait on one link:
    # receive_nowait hands out complete frames in order until nothing is left (None), never
    # a frame cut at the read size; a frame whose end is still in flight is waited for.
    network = SimulatedNetwork()
    async with network.listen("b") as listener:
        client = await network.connect("b", source="a")
        server = FramedStream(await listener.accept(), receive_size=256 * 1024)
        small = [m.Ack(1, i).encode() for i in range(1, 60_001)]
        big = m.Bye(1, 0, "x" * 300_000).encode()
        await client.send_all(b"".join(small) + big + small[0])
        got: list[object] = []
        while (values := server.receive_nowait()) is not None:
            got += values
        assert len(got) == len(small) + 2
        assert got[:3] == [[8, 1, 1], [8, 1, 2], [8, 1, 3]] and got[-3] == [8, 1, 60_000]
        assert got[-2][3] == "x" * 300_000 and got[-1] == [8, 1, 1]
        network.set_latency("a", "b", 1.0)
        await client.send_all(big[:100_000])
        await client.send_all(big[100_000:])
        assert server.receive_nowait() is None
        assert server.next_due is not None
        await trio.sleep_until(server.next_due)
        assert server.receive_nowait() == [got[-2]]
        assert server.receive_nowait() is None and server.next_due is None
        await client.aclose()
        await server.aclose()


async def test_a_link_detached_while_queued_in_the_reader_is_skipped_and_the_rest_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Both replicas' acks are held; the release delivers them (each link is queued on the
    # reader) and, before the reader runs, one link is detached. The reader skips it (the
    # detach stands, with its own reason), reads the other, and goes on serving it.
    async with hakit.open_cluster(seed=3) as cluster, trio.open_nursery() as nursery:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams(mode=hakit.MasterMode.ASYNC))
        r1, r2 = await cluster.add_node("r1"), await cluster.add_node("r2")
        run_attach(nursery, r1, "mem:m", ReplicaParams(wait_data_timeout=600))
        await master.attach_replica(timeout=5)
        gone = run_attach(nursery, r2, "mem:m", ReplicaParams(wait_data_timeout=600))
        await master.attach_replica(timeout=5)
        net = cluster.network
        for name in ("r1", "r2"):
            net.set_latency("m", name, 0.1, 0.0)
        for i in range(5):
            await commit(master, **{f"k{i}": i})
        await trio.sleep(0.15)  # delivered at +0.1; the acks are on their way back
        for name in ("r1", "r2"):
            net.hold("m", name)
        await trio.sleep(1.0)
        links = master._master.links
        assert all(link.lag_bytes > 0 for link in links.values())
        net.release("m", "r1")
        net.release("m", "r2")  # delivers the acks, due long ago: both links are queued
        assert all(link.queued for link in links.values())
        master.detach_replica("r2")
        assert await gone.wait() is StopReason.MASTER_REQUESTED_DISCONNECT
        (detached,) = master.events.of_type(hakit.ReplicaDetached)
        assert detached.replica == "r2"
        assert detached.reason is StopReason.MASTER_REQUESTED_DISCONNECT
        assert r2.txid == 5
        await wait_until(lambda: master._master.links["r1"].lag_bytes == 0)
        await commit(master, more=1)
        await wait_until(lambda: r1.txid == master.txid)
        assert master.replicas == ["r1"] and r1.get("more") == 1
        nursery.cancel_scope.cancel()


async def test_a_batch_applied_in_one_piece_is_discarded_entry_by_entry_on_divergence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # r2 applies five commits of m's that came in one Txns frame: its transaction log keeps
    # them as one piece of bytes. r1, cut off before them, is promoted by hand (another
    # history); when r2 attaches to it, r2 discards txids 2..6 and keeps each one exactly.
    async with hakit.open_cluster(seed=4) as cluster, trio.open_nursery() as nursery:
        m0 = await cluster.add_node("m")
        m0.set_master_params(MasterParams(mode=hakit.MasterMode.ASYNC))
        r1, r2 = await cluster.add_node("r1"), await cluster.add_node("r2")
        run1 = run_attach(nursery, r1, "mem:m", ReplicaParams())
        await m0.attach_replica(timeout=5)
        run_attach(nursery, r2, "mem:m", ReplicaParams())
        await m0.attach_replica(timeout=5)
        await commit(m0, x=0)
        await wait_until(lambda: r1.txid == r2.txid == 1)
        r1.cancel()
        await run1.done.wait()
        async with trio.open_nursery() as writers:
            for i in range(5):
                writers.start_soon(functools.partial(commit, m0, **{f"k{i}": i}))
        await wait_until(lambda: r2.txid == 6)
        assert len(r2._log._chunks) == 2  # x alone, then the five in one piece
        m0.stop_master()
        r2.cancel()
        r1.set_master_params(MasterParams())
        await commit(r1, y="from r1")
        run_attach(nursery, r2, "mem:r1", ReplicaParams())
        info = await r1.attach_replica(timeout=5)
        assert info.sync == "full"
        (kept,) = r2.discarded()
        assert (kept.first_txid, kept.last_txid) == (2, 6)
        committed = [msgpack.unpackb(packed) for txid, _g, packed in m0._log if txid >= 2]
        assert [[t.txid, t.generation, t.ops] for t in kept.transactions] == committed
        assert sorted(op for t in kept.transactions for op in t.ops) == [
            [0, f"k{i}", i] for i in range(5)
        ]
        assert dict(r2.items()) == dict(r1.items()) == {"x": 0, "y": "from r1"}
        nursery.cancel_scope.cancel()


async def test_a_framed_read_cancelled_in_the_middle_of_a_frame_keeps_its_first_bytes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The read of a mem: link takes the first bytes of a frame, then parks for the rest;
    # cancelled there, it loses nothing: the next read returns the frame once it is whole,
    # and a cut (a hold) in the middle of the next frame changes nothing either.
    network = SimulatedNetwork()
    async with network.listen("b") as listener:
        client = await network.connect("b", source="a")
        server = FramedStream(await listener.accept())
        first, second = m.Ack(1, 1).encode(), m.Ack(1, 2).encode()
        await client.send_all(first[:5])
        with trio.move_on_after(1) as scope:
            await server.receive()
        assert scope.cancelled_caught and server.partial_since is not None
        await client.send_all(first[5:] + second[:2])
        assert await server.receive() == [[8, 1, 1]]
        network.hold("a", "b")
        await client.send_all(second[2:])
        with trio.move_on_after(1) as scope:
            await server.receive()
        assert scope.cancelled_caught
        network.release("a", "b")
        assert await server.receive() == [[8, 1, 2]]
        assert server.partial_since is None
        await client.aclose()
        await server.aclose()
