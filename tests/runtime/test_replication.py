"""The replication engine end to end, on mem: and on real TCP (127.0.0.1)."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
from trio.testing import MockClock

import hakit
from hakit import MasterMode, MasterParams, Notification, ReplicaMode, ReplicaParams, StopReason
from hakit.protocol import _messages as m
from hakit.transports import FramedStream

from .conftest import Nodes, commit, force_master, master_with_replicas, run_attach, wait_until


async def test_attach_full_load_then_stream(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    for i in range(50):
        await commit(master, **{f"k{i}": i})
    master.set_master_params(MasterParams())
    replica = await nodes.add("r1")
    seen: list[Notification] = []
    params = ReplicaParams(on_notification=lambda what, detail: seen.append(what))
    run = run_attach(nursery, replica, master.address, params)
    info = await master.attach_replica(timeout=5)
    assert (info.name, info.sync, info.txid) == ("r1", "full", 50)
    assert replica.role is hakit.Role.REPLICA
    assert dict(replica.items()) == dict(master.items())
    assert Notification.DB_LOAD_BEGIN in seen and Notification.DB_LOAD_OK in seen

    result = await commit(master, x=1, y=b"bytes")
    assert result.acked == ("r1",) and result.detached == ()
    assert replica.get("x") == 1 and replica.get("y") == b"bytes"
    assert replica.txid == master.txid == 51
    assert replica.generation == master.generation == 1

    master.detach_replica("r1")
    assert await run.wait() is StopReason.MASTER_REQUESTED_DISCONNECT
    assert replica.role is hakit.Role.STANDALONE
    assert (
        replica.events.of_type(hakit.ReplicaStopped)[-1].reason
        is StopReason.MASTER_REQUESTED_DISCONNECT
    )


async def test_equal_database_needs_no_load(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, (replica,), (run,) = await master_with_replicas(nodes, nursery, "r1")
    await commit(master, a=1)
    replica.replica_stop()
    assert await run.wait() is StopReason.STOPPED_BY_LOCAL_REQUEST
    seen: list[Notification] = []
    run = run_attach(
        nursery,
        replica,
        master.address,
        ReplicaParams(on_notification=lambda what, _: seen.append(what)),
    )
    info = await master.attach_replica(timeout=5)
    assert info.sync == "equal"
    assert Notification.DB_EQUAL in seen and Notification.DB_LOAD_BEGIN not in seen
    replica.cancel()
    assert await run.wait() is StopReason.CANCELLED


async def test_incremental_resync_replays_only_missed(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, (replica,), (run,) = await master_with_replicas(nodes, nursery, "r1")
    await commit(master, a=1)
    replica.replica_stop()
    assert await run.wait() is StopReason.STOPPED_BY_LOCAL_REQUEST
    for i in range(5):
        await commit(master, **{f"b{i}": i})
    run = run_attach(nursery, replica, master.address)
    info = await master.attach_replica(timeout=5)
    assert info.sync == "incremental"
    assert replica.txid == master.txid == 6
    assert dict(replica.items()) == dict(master.items())
    replica.cancel()
    await run.wait()


async def test_full_load_when_log_is_too_short(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    params = MasterParams(trans_log_length=2)
    master, (replica,), (run,) = await master_with_replicas(nodes, nursery, "r1", params=params)
    replica.replica_stop()
    await run.wait()
    for i in range(5):
        await commit(master, **{f"b{i}": i})
    run = run_attach(nursery, replica, master.address)
    assert (await master.attach_replica(timeout=5)).sync == "full"
    assert dict(replica.items()) == dict(master.items())
    replica.cancel()
    await run.wait()


async def test_force_sync_always_loads(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, (replica,), (run,) = await master_with_replicas(nodes, nursery, "r1")
    replica.replica_stop()
    await run.wait()
    run = run_attach(nursery, replica, master.address, ReplicaParams(mode=ReplicaMode.FORCE_SYNC))
    assert (await master.attach_replica(timeout=5)).sync == "full"
    replica.cancel()
    await run.wait()


async def test_hot_sync_keeps_writes_flowing(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    async with master.transaction() as tx:
        for i in range(20_000):
            tx.put(f"key{i}", "v" * 20)
    master.set_master_params(MasterParams())
    replica = await nodes.add("r1")
    run = run_attach(nursery, replica, master.address)
    # The snapshot streams in many chunks; meanwhile commits keep succeeding.
    while "r1" not in master.replicas:
        await trio.lowlevel.checkpoint()
    committed = 0
    while "r1" not in [e.replica for e in master.events.of_type(hakit.ReplicaSynced)]:
        await commit(master, **{f"hot{committed}": committed})
        committed += 1
    await wait_until(lambda: replica.txid == master.txid)
    assert dict(replica.items()) == dict(master.items())
    assert committed > 0
    replica.cancel()
    await run.wait()


async def test_static_sync_holds_writes_until_loaded(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    async with master.transaction() as tx:
        for i in range(20_000):
            tx.put(f"key{i}", "v" * 20)
    master.set_master_params(MasterParams(mode=MasterMode.STATEFUL))
    replica = await nodes.add("r1")
    run = run_attach(nursery, replica, master.address)
    while "r1" not in master.replicas:
        await trio.lowlevel.checkpoint()
    result = await commit(master, after="load")
    # The write waited for the load, so it reached the replica as a normal, acked commit.
    assert result.acked == ("r1",)
    assert replica.get("after") == "load"
    replica.cancel()
    await run.wait()


async def test_async_commit_replicates(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    params = MasterParams(mode=MasterMode.ASYNC | MasterMode.HOTSYNC | MasterMode.STATEFUL)
    master, replicas, _runs = await master_with_replicas(nodes, nursery, "r1", "r2", params=params)
    for i in range(3000):
        result = await commit(master, **{f"k{i}": i})
        assert result.acked == ()
    await wait_until(lambda: all(r.txid == master.txid for r in replicas))
    for replica in replicas:
        assert dict(replica.items()) == dict(master.items())


async def test_sync_commit_group_commit_many_writers(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, replicas, _ = await master_with_replicas(nodes, nursery, "r1", "r2")
    results: list[hakit.CommitResult] = []

    async def writer(w: int) -> None:
        for i in range(20):
            results.append(await commit(master, **{f"w{w}-{i}": i}))

    async with trio.open_nursery() as writers:
        for w in range(16):
            writers.start_soon(writer, w)
    assert len(results) == 320
    assert all(sorted(r.acked) == ["r1", "r2"] for r in results)
    assert sorted(r.txid for r in results) == list(range(1, 321))
    for replica in replicas:
        assert replica.txid == 320


async def test_ack_policy_one_and_quorum(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    params = MasterParams(ack_policy=hakit.AckPolicy.ONE)
    master, _, _ = await master_with_replicas(nodes, nursery, "r1", "r2", params=params)
    result = await commit(master, a=1)
    assert len(result.acked) >= 1


async def test_wait_data_timeout_aborts_when_the_master_falls_silent(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    from hakit.transports import open_listener

    network = nodes.cluster.network if nodes.cluster else None
    listener, address = await open_listener(
        "mem:quiet" if network else "127.0.0.1:0", network=network
    )

    async def quiet_master() -> None:
        # A real master's handshake, then nothing: no transactions, no keep-alives.
        async with listener, FramedStream(await listener.accept()) as framed:
            await framed.receive()
            await framed.send(m.Welcome(0, "quiet", 0, int(m.SyncKind.EQUAL), 1.0).encode())
            await trio.sleep_forever()

    nursery.start_soon(quiet_master)
    replica = await nodes.add("r1")
    started = trio.current_time()
    reason = await replica.attach_master(address, ReplicaParams(wait_data_timeout=0.5))
    assert reason is StopReason.CONNECTION_ABORTED
    assert trio.current_time() - started == pytest.approx(0.5, abs=0.1)
    assert "wait_data_timeout" in replica.events.of_type(hakit.ReplicaStopped)[-1].detail


async def test_keepalive_keeps_an_idle_link_up(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams(keepalive_interval=0.2, detach_timeout=1.0))
    replica = await nodes.add("r1")
    run = run_attach(nursery, replica, master.address, ReplicaParams(wait_data_timeout=0.5))
    await master.attach_replica(timeout=5)
    await trio.sleep(10)  # idle far longer than both timeouts
    assert master.replicas == ["r1"] and not run.done.is_set()
    replica.replica_stop()
    assert await run.wait() is StopReason.STOPPED_BY_LOCAL_REQUEST
    await wait_until(lambda: not master.replicas)
    assert (
        master.events.of_type(hakit.ReplicaDetached)[-1].reason
        is StopReason.STOPPED_BY_LOCAL_REQUEST
    )


async def test_master_going_away_aborts_connection(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, (_replica,), (run,) = await master_with_replicas(nodes, nursery, "r1")
    await master.aclose()
    assert await run.wait() is StopReason.CONNECTION_ABORTED
    # The master's own record says the same: it closed the link, it sent no Detach.
    (detached,) = master.events.of_type(hakit.ReplicaDetached)
    assert detached.reason is StopReason.CONNECTION_ABORTED
    assert detached.detail == "the master node is closing"


async def test_handshake_failed_wrong_cluster(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    stranger = await nodes.open("x", cluster_name="other")
    with pytest.raises(hakit.HAProtocolError) as info:
        await stranger.attach_master(master.address)
    assert info.value.stop_reason is StopReason.HANDSHAKE_FAILED
    assert "cluster" in str(info.value)
    assert stranger.events.of_type(hakit.ReplicaStopped)[-1].reason is StopReason.HANDSHAKE_FAILED


async def test_iterator_error(nodes: Nodes, clock: MockClock, nursery: trio.Nursery) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    replica = await nodes.add("r1")

    def explode(record: hakit.TransactionRecord) -> None:
        if record.ops[0][1] == "bad":
            raise RuntimeError("cannot handle this one")

    run = run_attach(nursery, replica, master.address, ReplicaParams(on_transaction=explode))
    await master.attach_replica(timeout=5)
    await commit(master, good=1)
    await commit(master, bad=2)
    assert await run.wait() is StopReason.ITERATOR_ERROR
    stop = replica.events.of_type(hakit.ReplicaStopped)[-1]
    assert "RuntimeError" in stop.detail and "cannot handle" in stop.detail


async def test_remote_cancel_through_cancel_point(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery, tmp_path
) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    replica = await nodes.add("r1")
    cancel_address = "mem:r1-cancel" if nodes.cluster else "127.0.0.1:0"
    if nodes.cluster is None:
        # Learn a free port first: the cancel point needs a fixed, known address.
        async with hakit.open_node("probe", address="127.0.0.1:0") as probe:
            cancel_address = probe.address
    params = ReplicaParams(mode=ReplicaMode.ALLOW_CANCEL, cancel_address=cancel_address)
    run = run_attach(nursery, replica, master.address, params)
    await master.attach_replica(timeout=5)
    await hakit.cancel(cancel_address, timeout=5, cluster=nodes.cluster)
    assert await run.wait() is StopReason.CANCELLED


async def test_attach_timeout_when_master_unreachable(nodes: Nodes, clock: MockClock) -> None:
    replica = await nodes.add("r1")
    if nodes.cluster is not None:
        master = await nodes.add("m")
        master.set_master_params(MasterParams())
        nodes.cluster.network.set_latency("r1", "m", 30)
        address = master.address
    else:
        address = "127.0.0.1:1"  # nothing listens on port 1
    with pytest.raises(hakit.NetworkTimeoutError) as info:
        await replica.attach_master(address, timeout=2)
    assert info.value.stop_reason is StopReason.CONNECTION_ABORTED


async def test_attach_replica_times_out(nodes: Nodes, clock: MockClock) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams())
    with pytest.raises(hakit.NetworkTimeoutError):
        await master.attach_replica(timeout=1)


async def test_writes_on_replica_raise_not_master(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, (replica,), _ = await master_with_replicas(nodes, nursery, "r1")
    with pytest.raises(hakit.NotMasterError) as info:
        async with replica.transaction() as tx:
            tx.put("a", 1)
    assert info.value.master_address == master.address
    assert replica.get("a") is None


async def test_quorum_refuses_writes_without_enough_replicas(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master = await nodes.add("m")
    master.set_master_params(MasterParams(quorum=1))
    with pytest.raises(hakit.NoQuorumError):
        await commit(master, a=1)
    assert master.txid == 0 and master.get("a") is None
    replica = await nodes.add("r1")
    run_attach(nursery, replica, master.address)
    await master.attach_replica(timeout=5)
    assert (await commit(master, a=1)).acked == ("r1",)


async def test_stop_master_detaches_all(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, _replicas, runs = await master_with_replicas(nodes, nursery, "r1", "r2")
    master.stop_master()
    for run in runs:
        assert await run.wait() is StopReason.MASTER_REQUESTED_DISCONNECT
    assert master.role is hakit.Role.STANDALONE


async def test_detach_all_replicas(nodes: Nodes, clock: MockClock, nursery: trio.Nursery) -> None:
    master, _replicas, runs = await master_with_replicas(nodes, nursery, "r1", "r2")
    master.detach_all_replicas()
    for run in runs:
        assert await run.wait() is StopReason.MASTER_REQUESTED_DISCONNECT
    assert master.role is hakit.Role.MASTER


async def test_force_master_and_followers(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, (r1, r2), (run1, run2) = await master_with_replicas(nodes, nursery, "r1", "r2")
    for i in range(10):
        await commit(master, **{f"k{i}": i})
    killed = await force_master(nursery, master, r1, run1)
    assert r1.role is hakit.Role.MASTER and r1.generation == 2
    await wait_until(lambda: bool(killed))
    assert killed[0].new_master == "r1"
    assert master.role is hakit.Role.STANDALONE
    with pytest.raises(hakit.NotMasterError):
        await commit(master, stale=1)
    # r2 follows the new master without returning from attach_master.
    assert (await r1.attach_replica(timeout=5)).name == "r2"
    assert not run2.done.is_set()
    assert r2.events.of_type(hakit.MasterChanged)[-1].new_master == "r1"
    result = await commit(r1, after=1)
    assert result.acked == ("r2",) and result.generation == 2
    assert r2.get("after") == 1 and r2.generation == 2
    r2.replica_stop()
    assert await run2.wait() is StopReason.STOPPED_BY_LOCAL_REQUEST


async def test_attach_master_bad_arguments(nodes: Nodes, clock: MockClock) -> None:
    node = await nodes.add("a")
    with pytest.raises(ValueError, match="host:port"):
        await node.attach_master("not an address")
    with pytest.raises(hakit.InvalidArgumentError):
        await node.attach_master("127.0.0.1:1", timeout=-1)
    with pytest.raises(hakit.InvalidArgumentError):
        MasterParams(synch_timeout=-1)
    with pytest.raises(hakit.InvalidArgumentError):
        ReplicaParams(mode=ReplicaMode.ALLOW_CANCEL)


async def test_replica_behind_resyncs_incrementally_from_a_promoted_master(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, (r1, r2), (run1, run2) = await master_with_replicas(nodes, nursery, "r1", "r2")
    await commit(master, a=1)
    r2.replica_stop()
    await run2.wait()
    for i in range(5):  # r2 misses these; r1 applies them and keeps them in its log
        await commit(master, **{f"k{i}": i})
    r1.cancel()
    await run1.wait()
    force = ReplicaParams(mode=ReplicaMode.FORCE_MASTER)
    assert await r1.attach_master(master.address, force) is StopReason.BECOMES_MASTER
    run = run_attach(nursery, r2, r1.address)
    info = await r1.attach_replica(timeout=5)
    assert info.sync == "incremental"
    assert dict(r2.items()) == dict(r1.items())
    assert r2.txid == r1.txid == 6
    assert (await commit(r1, b=2)).acked == ("r2",)
    r2.cancel()
    await run.wait()


async def test_killed_master_keeps_writing_when_writes_stay_enabled(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    params = MasterParams(disable_writes_on_kill=False)
    master, (r1,), (run1,) = await master_with_replicas(nodes, nursery, "r1", params=params)
    r1.cancel()
    await run1.wait()
    force = ReplicaParams(mode=ReplicaMode.FORCE_MASTER)
    assert await r1.attach_master(master.address, force) is StopReason.BECOMES_MASTER
    await wait_until(lambda: master.role is hakit.Role.STANDALONE)
    # Its own generation (1) is no one else's: writes there cannot clash with r1's (2).
    result = await commit(master, local=1)
    assert (result.generation, r1.generation) == (1, 2)
    assert r1.get("local") is None
