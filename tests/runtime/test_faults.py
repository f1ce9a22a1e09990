"""Faults on mem: links and node crashes: what each does to replication.

Every test runs a cluster on virtual time (autojump), so timeouts of seconds are instant.
For each fault: which stop reason the replica reports, what the master sees, and that no
acknowledged commit is lost.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

import hakit
from hakit import MasterParams, ReplicaParams, StopReason

from .conftest import Background, commit, run_attach, wait_until


@pytest.fixture
async def cluster() -> AsyncIterator[hakit.Cluster]:
    async with hakit.open_cluster(seed=11, latency=(0.002, 0.001)) as cluster:
        yield cluster


async def pair(
    cluster: hakit.Cluster,
    nursery: trio.Nursery,
    *,
    storage: hakit.Storage | None = None,
    replica_storage: hakit.Storage | None = None,
    params: ReplicaParams | None = None,
    master_params: MasterParams | None = None,
) -> tuple[hakit.Node, hakit.Node, Background]:
    master = await cluster.add_node("m", storage=storage)
    master.set_master_params(master_params or MasterParams())
    replica = await cluster.add_node("r", storage=replica_storage)
    run = run_attach(nursery, replica, "mem:m", params)
    await master.attach_replica(timeout=5)
    return master, replica, run


def messages(
    cluster: hakit.Cluster, action: str, kind: str | None = None
) -> list[hakit.MessageEvent]:
    return [
        e
        for e in cluster.events
        if isinstance(e, hakit.MessageEvent)
        and e.action == action
        and (kind is None or e.kind == kind)
    ]


def acked_all_present(replica: hakit.Node, acked: dict[str, int]) -> None:
    for key, value in acked.items():
        assert replica.get(key) == value, key


# -- latency ------------------------------------------------------------------------------


async def test_latency_delays_every_frame_within_its_bounds(
    cluster: hakit.Cluster, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    master, replica, _ = await pair(cluster, nursery)
    cluster.network.set_latency("m", "r", 0.5, 0.1)
    start = trio.current_time()
    await commit(master, a=1)
    # A synchronous commit waits for the Txns to go and the Ack to come back.
    assert 0.8 <= trio.current_time() - start <= 1.2
    for event in messages(cluster, "delivered"):
        if event.time > start:
            assert 0.4 - 1e-9 <= event.time - event.sent <= 0.6 + 1e-9, event
    assert replica.get("a") == 1
    assert cluster.network.latency("r", "m") == (0.5, 0.1)
    (change,) = cluster.events.of_type(hakit.NetworkChanged)
    assert "0.5 s" in change.describe()


# -- loss ---------------------------------------------------------------------------------


async def test_moderate_loss_is_delay_not_missing_messages(
    cluster: hakit.Cluster, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Retransmissions can take seconds: a synch_timeout that long keeps the replica attached.
    slow = MasterParams(synch_timeout=30, detach_timeout=60)
    patient = ReplicaParams(wait_data_timeout=60)
    master, replica, run = await pair(cluster, nursery, master_params=slow, params=patient)
    cluster.network.set_loss("m", "r", 0.3)
    acked = {}
    for i in range(30):
        await commit(master, **{f"k{i}": i})
        acked[f"k{i}"] = i
    assert cluster.network.statistics().retransmissions > 0
    assert cluster.network.statistics().resets == 0
    retried = [e for e in messages(cluster, "sent") if e.retransmits]
    assert retried and all(e.due is not None and e.due - e.sent >= 0.2 for e in retried)
    assert not run.done.is_set() and master.replicas == ["r"]
    acked_all_present(replica, acked)
    assert cluster.network.loss("r", "m") == 0.3


async def test_total_loss_resets_the_connection(
    cluster: hakit.Cluster, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    params = ReplicaParams(wait_data_timeout=60)  # so the reset, not silence, ends the link
    master, replica, run = await pair(cluster, nursery, params=params)
    acked = {"before": 1}
    await commit(master, before=1)
    cluster.network.set_loss("m", "r", 1.0)
    writer_done = trio.Event()

    async def writer() -> None:
        with contextlib.suppress(hakit.HakitError):
            await commit(master, during=2)  # a synchronous commit can only fail or detach
        writer_done.set()

    nursery.start_soon(writer)
    assert await run.wait() is StopReason.CONNECTION_ABORTED
    (stopped,) = replica.events.of_type(hakit.ReplicaStopped)
    assert stopped.reason is StopReason.CONNECTION_ABORTED
    assert "reset" in stopped.detail
    assert cluster.network.statistics().resets == 1
    await writer_done.wait()
    await wait_until(lambda: not master.replicas)
    detached = master.events.of_type(hakit.ReplicaDetached)
    assert [e.replica for e in detached] == ["r"]
    dropped = messages(cluster, "dropped")
    assert dropped and any("retransmissions lost" in e.detail for e in dropped)
    assert messages(cluster, "delivered", "RESET")
    acked_all_present(replica, acked)


# -- partition and hold -------------------------------------------------------------------


async def test_a_partition_is_silence_and_the_replica_gives_up(
    cluster: hakit.Cluster, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    master, replica, run = await pair(cluster, nursery)
    await commit(master, a=1)
    cluster.network.partition("r", "m")
    assert await run.wait() is StopReason.CONNECTION_ABORTED
    stopped = replica.events.of_type(hakit.ReplicaStopped)[-1]
    assert "wait_data_timeout" in stopped.detail or "silent" in stopped.detail
    await wait_until(lambda: not master.replicas)
    assert messages(cluster, "held")
    assert replica.get("a") == 1
    cluster.network.heal()
    again = run_attach(nursery, replica, "mem:m")
    await wait_until(lambda: master.replicas == ["r"])
    await commit(master, b=2)
    assert replica.get("b") == 2 and not again.done.is_set()


async def test_hold_then_release_delivers_everything_in_order(
    cluster: hakit.Cluster, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    master, replica, run = await pair(cluster, nursery)
    cluster.network.hold("m", "r")
    result: list[hakit.CommitResult] = []

    async def writer() -> None:
        result.append(await commit(master, held=1))

    nursery.start_soon(writer)
    await trio.sleep(0.5)  # shorter than every timeout: the link is only slow
    assert not result and replica.get("held") is None
    held = messages(cluster, "held", "TXNS")
    assert held
    cluster.network.release("m", "r")
    await wait_until(lambda: bool(result))
    assert result[0].acked == ("r",)
    assert replica.get("held") == 1
    delivered = {e.id: e for e in messages(cluster, "delivered", "TXNS")}
    assert all(e.id in delivered and delivered[e.id].time >= e.time for e in held)
    assert not run.done.is_set()


# -- crash and restart --------------------------------------------------------------------


async def test_crashing_a_memory_master_loses_it_but_not_the_replica(
    cluster: hakit.Cluster, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    master, replica, run = await pair(cluster, nursery)
    await commit(master, a=1)
    await cluster.crash("m")
    assert await run.wait() is StopReason.CONNECTION_ABORTED
    assert replica.get("a") == 1  # what was acknowledged survives on the replica
    (crashed,) = cluster.events.of_type(hakit.NodeCrashed)
    assert (crashed.node, crashed.role, crashed.txid) == ("m", "master", 1)
    with pytest.raises(hakit.NodeClosedError):
        await commit(master, b=2)
    with pytest.raises(hakit.InvalidArgumentError, match="already crashed"):
        await cluster.crash("m")
    with pytest.raises(OSError, match="refused"):
        await cluster.network.connect("m", source="r")
    fresh = await cluster.restart("m")
    assert cluster["m"] is fresh and fresh is not master
    assert (fresh.txid, fresh.get("a"), fresh.role) == (0, None, hakit.Role.STANDALONE)
    (restarted,) = cluster.events.of_type(hakit.NodeRestarted)
    assert restarted.storage == "empty"
    with pytest.raises(hakit.InvalidArgumentError, match="running"):
        await cluster.restart("m")


async def test_a_sqlite_master_comes_back_with_what_it_had(
    cluster: hakit.Cluster,
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = hakit.SqliteStorage(tmp_path / "m.db")
    master, replica, run = await pair(cluster, nursery, storage=storage)
    for i in range(5):
        await commit(master, **{f"k{i}": i})
    await cluster.crash("m")
    assert await run.wait() is StopReason.CONNECTION_ABORTED
    back = await cluster.restart("m")
    assert back.txid == 5 and back.get("k4") == 4
    assert cluster.events.of_type(hakit.NodeRestarted)[-1].storage == "kept"  # type: ignore[attr-defined]
    back.set_master_params(MasterParams())
    again = run_attach(nursery, replica, "mem:m")
    await back.attach_replica(timeout=5)
    await commit(back, k5=5)
    assert replica.get("k5") == 5 and replica.txid == back.txid
    assert not again.done.is_set()


async def test_a_replica_crashing_in_its_handshake_raises_node_closed(
    cluster: hakit.Cluster, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    master = await cluster.add_node("m")
    master.set_master_params(MasterParams())
    replica = await cluster.add_node("r")
    cluster.network.hold("m", "r")  # the Hello (and any answer) waits in flight
    run = run_attach(nursery, replica, "mem:m")
    await trio.sleep(0.5)
    assert not run.done.is_set()
    await cluster.crash("r")
    with trio.fail_after(5), pytest.raises(hakit.NodeClosedError, match="crashed"):
        await run.wait()
    assert master.role is hakit.Role.MASTER


async def test_a_stream_closed_under_a_dial_is_a_named_error(
    cluster: hakit.Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    # torture seed 130329: a crash closed the replica's stream while its dial waited for the
    # master's answer; the woken read saw its end closed (before the crash's cancellation),
    # and attach_master raised a raw trio.ClosedResourceError instead of NodeClosedError.
    from hakit._runtime._dial import dial
    from hakit.transports import open_listener

    # A listener that accepts and never answers: the dial waits for an answer.
    listener, _ = await open_listener("mem:silent", network=cluster.network)
    accepted: list[object] = []
    failure: list[BaseException] = []

    async def silent() -> None:
        accepted.append(await listener.accept())
        await trio.sleep_forever()

    async def dialing() -> None:
        try:
            await dial(
                "mem:silent", b"\x91\x00", timeout=30, peer="the master at mem:silent",
                stop_reason=StopReason.CONNECTION_ABORTED, network=cluster.network, source="r",
            )  # fmt: skip
        except BaseException as exc:
            failure.append(exc)

    async with trio.open_nursery() as inner:
        inner.start_soon(silent)
        inner.start_soon(dialing)
        await wait_until(lambda: bool(accepted))
        await trio.sleep(0.5)
        cluster.network.crash("r")  # the network part of a crash only: no cancellation
        await wait_until(lambda: bool(failure))
        inner.cancel_scope.cancel()
    (exc,) = failure
    assert isinstance(exc, hakit.HAIOError), repr(exc)
    assert exc.stop_reason is StopReason.CONNECTION_ABORTED
    assert "closed" in str(exc)


async def test_crashing_a_replica_detaches_it_and_its_attach_raises(
    cluster: hakit.Cluster,
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = hakit.SqliteStorage(tmp_path / "r.db")
    master, _replica, run = await pair(cluster, nursery, replica_storage=storage)
    await commit(master, a=1)
    await cluster.crash("r")
    with pytest.raises(hakit.NodeClosedError, match="crashed"):
        await run.wait()
    await wait_until(lambda: not master.replicas)
    (detached,) = master.events.of_type(hakit.ReplicaDetached)
    assert detached.reason is StopReason.CONNECTION_ABORTED  # type: ignore[attr-defined]
    result = await commit(master, b=2)  # the master goes on without it
    assert result.acked == ()
    back = await cluster.restart("r")
    assert back.get("a") == 1
    run_attach(nursery, back, "mem:m")
    await master.attach_replica(timeout=5)
    assert back.get("b") == 2  # caught up on restart


async def test_a_crash_sends_nothing_after_it(
    cluster: hakit.Cluster, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    await pair(cluster, nursery)
    await cluster.crash("m")
    crash_time = cluster.events.of_type(hakit.NodeCrashed)[0].time
    await trio.sleep(1)  # the end of its streams travels like data
    late = [e for e in messages(cluster, "sent") if e.sender == "m" and e.time > crash_time]
    assert late == []
    ends = [e for e in messages(cluster, "delivered") if e.sender == "m" and e.time >= crash_time]
    assert {e.kind for e in ends} <= {"CLOSE", "RESET"} and ends
