"""The cluster's event log: every message and node event, bounded, byte-identical replays."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import trio
import trio.testing

import hakit
from hakit import MasterParams, ReplicaParams, StopReason

from .conftest import commit, run_attach, wait_until


async def every_fault(cluster: hakit.Cluster, nursery: trio.Nursery) -> None:
    """A script that uses every fault kind on a master and two replicas."""
    net = cluster.network
    master = await cluster.add_node("m")
    master.set_master_params(MasterParams(synch_timeout=30, detach_timeout=60))
    patient = ReplicaParams(wait_data_timeout=60)
    r1, r2 = await cluster.add_node("r1"), await cluster.add_node("r2")
    run_attach(nursery, r1, "mem:m", patient)
    await master.attach_replica(timeout=5)
    run2 = run_attach(nursery, r2, "mem:m", patient)
    await master.attach_replica(timeout=5)
    for i in range(3):
        await commit(master, **{f"a{i}": i})
    net.set_latency("m", "r1", 0.05, 0.04)
    net.set_loss("m", "r2", 0.3)
    for i in range(5):
        await commit(master, **{f"b{i}": i})
    net.set_loss("m", "r2", 0)
    net.hold("m", "r1")
    nursery.start_soon(functools.partial(commit, master, held=1))
    await trio.sleep(0.5)
    net.release("m", "r1")
    await wait_until(lambda: r1.get("held") == 1)
    net.partition({"r2"}, {"m", "r1"})
    await trio.sleep(0.3)
    net.heal()
    await commit(master, c=1)
    nursery.start_soon(functools.partial(commit, master, lost=1))
    await trio.sleep(0.0005)  # its Txns are on their way to r2 when it dies: dropped
    await cluster.crash("r2")
    with pytest.raises(hakit.NodeClosedError):
        await run2.wait()
    await wait_until(lambda: "r2" not in master.replicas)  # the master saw the old link end
    back = await cluster.restart("r2")
    run_attach(nursery, back, "mem:m", patient)
    await master.attach_replica(timeout=5)
    await commit(master, d=1)
    assert back.get("d") == 1 and r1.get("d") == 1


def run_script(seed: int) -> str:
    async def main() -> str:
        async with trio.open_nursery() as nursery:
            async with hakit.open_cluster(seed=seed, latency=(0.003, 0.002)) as cluster:
                await every_fault(cluster, nursery)
                await trio.sleep(1)
                text = cluster.events.dumps()
            nursery.cancel_scope.cancel()
        return text

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_same_seed_same_script_gives_the_same_log_byte_for_byte() -> None:
    first = run_script(7)
    assert first == run_script(7)
    kinds = {
        line.split('"kind":"')[1].split('"')[0] for line in first.splitlines() if '"kind"' in line
    }
    assert {"HELLO", "WELCOME", "TXNS", "ACK", "CONNECT", "CLOSE"} <= kinds
    wanted = ['"action":"held"', '"action":"dropped"', '"type":"NodeCrashed"',
              '"type":"NodeRestarted"', '"action":"partition"', '"action":"loss"']  # fmt: skip
    for action in wanted:
        assert action in first, action
    assert '"retransmits":0' in first and '"retransmits":1' in first


def test_other_seeds_give_other_logs() -> None:
    logs = {run_script(seed) for seed in (7, 8, 9)}
    assert len(logs) == 3


async def test_save_and_load_round_trip(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async with hakit.open_cluster(seed=3, latency=(0.01, 0.005)) as cluster:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams())
        replica = await cluster.add_node("r")
        run = run_attach(nursery, replica, "mem:m")
        await master.attach_replica(timeout=5)
        await commit(master, greeting="hello", blob=b"\x00\xff")
        replica.replica_stop()
        assert await run.wait() is StopReason.STOPPED_BY_LOCAL_REQUEST
        await trio.sleep(1)
        path = tmp_path / "run.jsonl"
        cluster.events.save(path)
        text = cluster.events.dumps()
    loaded = hakit.EventLog.load(path)
    assert loaded.dumps() == text == path.read_text()
    assert loaded.meta == {"seed": 3, "cluster": "hakit"}
    originals = list(cluster.events)
    assert list(loaded) == originals
    txns = [e for e in loaded if isinstance(e, hakit.MessageEvent) and e.kind == "TXNS"]
    ops = txns[0].fields["entries"][0][2]
    assert sorted(ops) == [[0, "blob", "b'\\x00\\xff'"], [0, "greeting", "hello"]]
    hello = next(e for e in loaded if isinstance(e, hakit.MessageEvent) and e.kind == "HELLO")
    assert hello.fields["node"] == "r" and hello.sender == "r" and hello.receiver == "m"
    stop = loaded.of_type(hakit.ReplicaStopped)[0]
    assert stop.reason is StopReason.STOPPED_BY_LOCAL_REQUEST  # type: ignore[attr-defined]
    bye = next(e for e in loaded if isinstance(e, hakit.MessageEvent) and e.kind == "BYE")
    assert bye.fields["stop_reason"] == "STOPPED_BY_LOCAL_REQUEST"
    # Every delivered frame was sent before, on the same id, and arrived after it.
    sent = {e.id: e for e in loaded if isinstance(e, hakit.MessageEvent) and e.action == "sent"}
    for event in loaded:
        if isinstance(event, hakit.MessageEvent) and event.action == "delivered":
            assert event.id in sent and event.time >= sent[event.id].time
    times = [e.time for e in loaded]
    assert times == sorted(times)


def test_loading_something_else_is_a_clear_error(tmp_path: Path) -> None:
    for text, match in (
        ("", "no hakit-events header"),
        ("{nope", "not a hakit event log"),
        ('{"format":"hakit-events","version":9}\n', "version 9"),
        ('{"format":"hakit-events","version":1}\n{"type":"Bogus","time":1}\n', "line 2"),
        ('{"format":"hakit-events","version":1}\n{"type":"RoleChanged","time":1}\n', "line 2"),
    ):
        path = tmp_path / "bad.jsonl"
        path.write_text(text)
        with pytest.raises(ValueError, match=match):
            hakit.EventLog.load(path)


def test_the_log_is_a_ring_with_a_sink_that_keeps_everything() -> None:
    kept: list[hakit.Event] = []
    log = hakit.EventLog(capacity=3, sink=kept.append)
    events = [hakit.RoleChanged(float(t), "n", "a", "b", t) for t in range(5)]
    for event in events:
        log.append(event)
    assert list(log) == events[2:] and len(log) == 3
    assert log.dropped == 2 and kept == events
    assert "2 dropped" in repr(log)
    with pytest.raises(ValueError, match="capacity"):
        hakit.EventLog(capacity=0)


def test_one_instant_is_ordered_canonically_whatever_the_append_order() -> None:
    a = hakit.RoleChanged(1.0, "b-node", "standalone", "master", 1)
    b = hakit.RoleChanged(1.0, "a-node", "standalone", "replica", 0)
    late = hakit.RoleChanged(2.0, "a-node", "replica", "standalone", 0)
    one, two = hakit.EventLog(canonical=True), hakit.EventLog(canonical=True)
    for event in (a, b, late):
        one.append(event)
    for event in (b, a, late):
        two.append(event)
    assert list(one) == list(two) == [b, a, late]
    assert one.since(2.0) == [late]


async def test_a_node_log_is_bounded_too(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async with hakit.open_cluster() as cluster:
        node = await cluster.add_node("n")
        assert node.events.capacity == hakit.EventLog().capacity
        assert cluster.events.capacity is not None


def test_a_follower_reads_each_event_once_even_as_the_ring_drops() -> None:
    log = hakit.EventLog(capacity=4, canonical=True)
    cursor, seen = 0, []
    for t in range(10):
        log.append(hakit.RoleChanged(float(t), "n", "a", "b", t))
        if t % 3 == 0:
            events, cursor = log.read(cursor)
            seen.extend(e.time for e in events)
    events, cursor = log.read(cursor)
    seen.extend(e.time for e in events)
    assert cursor == log.total == 10
    assert seen == sorted(set(seen)) and seen[-1] == 9.0
    assert log.read(cursor) == ([], 10)
    assert [e.time for e in log.read(0)[0]] == [6.0, 7.0, 8.0, 9.0]  # the dropped are gone
