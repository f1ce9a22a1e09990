"""Commit paths: acknowledgement timeouts, asynchronous lag bound, races with force master."""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

import hakit
from hakit import MasterMode, MasterParams, ReplicaMode, ReplicaParams, StopReason
from hakit.protocol import PROTOCOL_VERSION, parse_message
from hakit.protocol import _messages as m
from hakit.transports import FramedStream, connect

from .conftest import Nodes, commit, run_attach, wait_until


async def silent_replica(
    nodes: Nodes, nursery: trio.Nursery, master: hakit.Node, name: str = "mute"
) -> trio.Event:
    """A real replica connection that syncs, then reads everything and never acknowledges."""
    network = nodes.cluster.network if nodes.cluster else None
    framed = FramedStream(await connect(master.address, network=network, source=name))
    await framed.send(
        m.Hello(
            master.generation,
            PROTOCOL_VERSION,
            master.cluster_name,
            name,
            master.txid,
            master.storage.last_generation,
            0,
            None,
        ).encode()
    )
    welcome = parse_message((await framed.receive())[0])
    assert isinstance(welcome, m.Welcome) and welcome.sync == m.SyncKind.EQUAL
    await framed.send(m.Ack(welcome.generation, welcome.txid).encode())
    closed = trio.Event()

    async def drain() -> None:
        try:
            while True:
                await framed.receive()
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
            closed.set()
        finally:
            await framed.aclose()

    nursery.start_soon(drain)
    await wait_until(lambda: any(r.replica == name for r in master.statistics().replicas
                                 if r.state == "streaming"))  # fmt: skip
    return closed


async def test_replica_without_ack_is_detached_after_synch_timeout(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams(synch_timeout=0.5))
    replica = await nodes.add("r1")
    run_attach(nursery, replica, master.address)
    await master.attach_replica(timeout=5)
    closed = await silent_replica(nodes, nursery, master)
    started = trio.current_time()
    result = await commit(master, a=1)
    assert trio.current_time() - started == pytest.approx(0.5, abs=0.1)
    assert result.acked == ("r1",) and result.detached == ("mute",)
    assert master.replicas == ["r1"]
    detached = master.events.of_type(hakit.ReplicaDetached)[-1]
    assert detached.replica == "mute" and "synch_timeout" in detached.detail
    await closed.wait()  # the link was really closed
    # The next commit no longer waits for it.
    assert (await commit(master, b=2)).detached == ()


async def test_async_lag_is_bounded_by_the_buffer(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    params = MasterParams(
        mode=MasterMode.ASYNC | MasterMode.HOTSYNC, async_buffer_bytes=4096, commit_timeout=1.0
    )
    master = await nodes.add("m")
    master.set_master_params(params)
    replica = await nodes.add("r1")
    run_attach(nursery, replica, master.address)
    await master.attach_replica(timeout=5)
    closed = await silent_replica(nodes, nursery, master)
    started = trio.current_time()
    for i in range(2000):
        await commit(master, **{f"k{i}": "x" * 50})
    # The writer was held up once the mute replica lagged by more than the buffer, for at
    # most commit_timeout, and then the mute replica was detached.
    assert trio.current_time() - started >= 1.0
    assert master.replicas == ["r1"]
    detached = master.events.of_type(hakit.ReplicaDetached)[-1]
    assert detached.replica == "mute" and "could not keep up" in detached.detail
    await closed.wait()
    await wait_until(lambda: replica.txid == master.txid)
    assert dict(replica.items()) == dict(master.items())


async def test_commits_racing_force_master_never_falsely_succeed(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    r1, r2 = await nodes.add("r1"), await nodes.add("r2")
    run2 = run_attach(nursery, r2, master.address)
    await master.attach_replica(timeout=5)
    succeeded: dict[str, int] = {}
    failed: list[BaseException] = []

    async def writer(w: int) -> None:
        for i in range(40):
            key = f"w{w}-{i}"
            try:
                succeeded[key] = (await commit(master, **{key: i})).generation
            except (hakit.NotMasterError, hakit.CommitFailedError) as exc:
                failed.append(exc)
                return
            await trio.sleep(0.001)

    async with trio.open_nursery() as writers:
        for w in range(8):
            writers.start_soon(writer, w)
        await trio.sleep(0.005)
        force = ReplicaParams(mode=ReplicaMode.FORCE_MASTER)
        assert await r1.attach_master(master.address, force) is StopReason.BECOMES_MASTER
    assert failed, "some commits raced the handover"
    assert succeeded, "some commits completed before it"
    for key, generation in succeeded.items():
        assert generation == 1
        assert r1.get(key) is not None, f"{key} reported committed but missing on the new master"
    await wait_until(lambda: r2.generation == 2)
    await wait_until(lambda: r2.txid == r1.txid)
    assert dict(r2.items()) == dict(r1.items())
    assert not run2.done.is_set()


async def test_commit_waiting_for_acks_reports_the_detach_when_the_master_closes(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    async with hakit.open_cluster(seed=1) as cluster:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams(synch_timeout=10))
        replica = await cluster.add_node("r1")
        run_attach(nursery, replica, "mem:m")
        await master.attach_replica(timeout=5)
        cluster.network.hold("m", "r1")
        results: list[hakit.CommitResult] = []

        async def write() -> None:
            results.append(await commit(master, a=1))

        nursery.start_soon(write)
        await trio.sleep(1)
        await master.aclose()
        await wait_until(lambda: bool(results))
        # Committed on the master, acknowledged by nobody: the result says so plainly.
        assert results[0].acked == ()
        assert results[0].detached == ("r1",)
        assert trio.current_time() < 5  # not left waiting for synch_timeout


# -- quorum: a commit confirmed by fewer replicas than the quorum is not a success ----------


async def test_a_commit_acknowledged_by_fewer_than_the_quorum_fails(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    # The repro: ALL + quorum=2, every replica cut off: it used to return success
    # with acked=() and leave commit_failures at 0.
    master = await nodes.add("m")
    master.set_master_params(
        MasterParams(ack_policy=hakit.AckPolicy.ALL, quorum=2, synch_timeout=0.5)
    )
    await silent_replica(nodes, nursery, master, "mute1")
    await silent_replica(nodes, nursery, master, "mute2")
    with pytest.raises(hakit.CommitFailedError, match="below the quorum of 2") as caught:
        await commit(master, x=1)
    assert caught.value.txid == 1
    assert "mute1, mute2 detached" in str(caught.value)
    stats = master.statistics()
    assert stats.commits == 1 and stats.commit_failures == 1
    (failed,) = master.events.of_type(hakit.CommitFailed)
    assert isinstance(failed, hakit.CommitFailed) and failed.txid == 1
    # Nothing is attached any more: the next commit is refused before it writes anything.
    with pytest.raises(hakit.NoQuorumError):
        await commit(master, y=1)
    assert master.statistics().commit_failures == 2
    assert master.get("y") is None


async def test_the_quorum_is_a_floor_on_acknowledgements_whatever_the_policy(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams(ack_policy=hakit.AckPolicy.ONE, quorum=2))
    assert master.address is not None
    for name in ("r1", "r2"):
        run_attach(nursery, await nodes.add(name), master.address)
        await master.attach_replica(timeout=5)
    result = await commit(master, x=1)
    assert sorted(result.acked) == ["r1", "r2"]  # ONE alone would have returned after one


async def test_a_replica_detached_by_synch_timeout_counts_as_a_commit_failure(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    # commit_failures counts "commits that failed or detached a replica for falling behind".
    master = await nodes.add("m")
    master.set_master_params(MasterParams(synch_timeout=0.5))
    await silent_replica(nodes, nursery, master)
    result = await commit(master, x=1)
    assert (result.acked, result.detached) == ((), ("mute",))
    assert master.statistics().commit_failures == 1
