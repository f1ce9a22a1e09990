"""The master's outbox: each committed transaction kept once, links keep a position in it.

What a user sees must not change: every replica gets every transaction in order, in frames
that fit its frame size; a replica's lag in bytes is what it has not acknowledged; a replica
that resyncs gets its backlog; a replica detached gets what was committed before, no more.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import hakit
from hakit import MasterMode, MasterParams, ReplicaParams
from hakit._runtime._link import ReplicaLink
from hakit._runtime._outbox import Outbox, txns_frames
from hakit.protocol import _messages as m
from hakit.protocol._codec import FrameDecoder

from .conftest import commit, run_attach, wait_until


def _entry(txid: int, size: int = 10) -> bytes:
    return m.pack_entry(txid, 1, [[0, f"k{txid:04d}", "v" * size]])


def _decoded(frames: list[bytes]) -> list[list[object]]:
    decoder = FrameDecoder()
    decoder.feed(b"".join(frames))
    return decoder.drain()


def test_offsets_count_the_bytes_appended_whatever_is_trimmed() -> None:
    outbox = Outbox(5)
    assert (outbox.first, outbox.last, len(outbox)) == (5, 4, 0)
    entries = {txid: _entry(txid, txid) for txid in range(5, 10)}
    for txid, entry in entries.items():
        outbox.append(txid, entry)
    assert (outbox.first, outbox.last, len(outbox)) == (5, 9, 5)
    assert outbox.bytes_after(4) == sum(map(len, entries.values())) == outbox.total
    assert outbox.bytes_after(7) == len(entries[8]) + len(entries[9])
    assert outbox.bytes_after(9) == 0
    with pytest.raises(ValueError, match="does not follow"):
        outbox.append(11, _entry(11))
    outbox.trim(8)
    assert (outbox.first, len(outbox)) == (8, 2)
    assert outbox.bytes_after(7) == len(entries[8]) + len(entries[9])  # still known at first-1
    assert outbox.ends(7) == [outbox.end_of(7), outbox.end_of(8), outbox.end_of(9)]
    with pytest.raises(ValueError, match="trimmed"):
        outbox.end_of(6)
    outbox.trim(3)  # never backwards
    assert outbox.first == 8
    outbox.trim(100)  # never past the end
    assert (outbox.first, len(outbox), outbox.bytes_after(9)) == (10, 0, 0)


def test_a_backlog_prepended_keeps_the_offsets_already_given() -> None:
    outbox = Outbox(11)
    for txid in range(11, 14):
        outbox.append(txid, _entry(txid))
    before = outbox.bytes_after(11)
    backlog = [_entry(txid, 3 * txid) for txid in range(6, 11)]
    outbox.prepend(backlog)
    assert (outbox.first, outbox.last) == (6, 13)
    assert outbox.bytes_after(11) == before
    assert outbox.bytes_after(5) == sum(map(len, backlog)) + outbox.bytes_after(10)
    frames, _data = outbox.frames(6, 1, 1 << 20)
    assert [e[0] for e in _decoded(frames)[0][2:]] == list(range(6, 14))


def test_frames_are_built_once_for_a_range_and_cut_to_the_frame_size() -> None:
    outbox = Outbox(1)
    for txid in range(1, 21):
        outbox.append(txid, _entry(txid, 40))
    limit = 5 * len(_entry(1, 40))
    frames, data = outbox.frames(3, 1, limit)
    again, data_again = outbox.frames(3, 1, limit)
    assert again is frames and data_again is data  # shared by every link at txid 3
    assert data == b"".join(frames) and len(frames) == 4
    assert [len(v) - 2 for v in _decoded(frames)] == [5, 5, 5, 3]
    assert frames == txns_frames(1, [_entry(t, 40) for t in range(3, 21)], limit)
    other, _ = outbox.frames(3, 2, limit)  # another generation: built anew
    assert _decoded(other)[0][1] == 2
    outbox.append(21, _entry(21, 40))
    longer, _ = outbox.frames(3, 1, limit)
    assert _decoded(longer)[-1][-1][0] == 21
    with pytest.raises(ValueError, match="not in the outbox"):
        outbox.frames(22, 1, limit)


def test_trimmed_entries_are_deleted_in_bulk() -> None:
    outbox = Outbox(1)
    for txid in range(1, 5001):
        outbox.append(txid, _entry(txid))
        if txid % 100 == 0:
            outbox.trim(txid - 50)
    assert (outbox.first, len(outbox)) == (4950, 51)
    assert len(outbox._entries) < 2100  # the dead prefix does not grow without bound
    frames, _ = outbox.frames(4950, 1, 1 << 20)
    assert [e[0] for e in _decoded(frames)[0][2:]] == list(range(4950, 5001))


def _link(master: hakit.Node, name: str) -> ReplicaLink:
    return master._master.links[name]


async def test_replicas_held_back_lag_by_what_they_have_not_acknowledged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Three replicas, one of them cut off: the outbox holds each transaction once; the cut
    # one lags by every byte committed since, the others by nothing once they acknowledged.
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams(mode=MasterMode.ASYNC))
        replicas = [await cluster.add_node(f"r{i}") for i in range(3)]
        for replica in replicas:
            run_attach(nursery, replica, "mem:m", ReplicaParams(wait_data_timeout=60))
            await master.attach_replica(timeout=5)
        cluster.network.hold("m", "r2")
        before = master.txid
        for i in range(20):
            await commit(master, **{f"k{i}": "x" * i})
        await wait_until(lambda: replicas[0].txid == replicas[1].txid == master.txid)
        outbox = master._master.outbox
        sizes = sum(map(len, master._log.packed(master.txid - 19, master.txid + 1)))
        assert outbox.last == master.txid and len(outbox) <= 20 + before
        lags = {r.name: _link(master, r.name).lag_bytes for r in replicas}
        assert lags == {"r0": 0, "r1": 0, "r2": sizes}
        assert _link(master, "r2").unsent_bytes == 0  # sent: waiting in the network
        cluster.network.release("m", "r2")
        await wait_until(lambda: replicas[2].txid == master.txid)
        await wait_until(lambda: _link(master, "r2").lag_bytes == 0)
        for replica in replicas:
            assert dict(replica.items()) == dict(master.items())
        nursery.cancel_scope.cancel()


async def test_a_resync_backlog_comes_from_the_log_through_the_outbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # r1 stays attached while r2 is away; r2 comes back for an incremental resync. Its
    # backlog, older than anything r1 still needs, is put back in the outbox: r2 lags by all
    # of it until acknowledged, and both end with the master's data.
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams())
        r1, r2 = await cluster.add_node("r1"), await cluster.add_node("r2")
        run_attach(nursery, r1, "mem:m", ReplicaParams())
        await master.attach_replica(timeout=5)
        away = run_attach(nursery, r2, "mem:m", ReplicaParams())
        await master.attach_replica(timeout=5)
        await commit(master, a=0)
        r2.replica_stop()
        await away.done.wait()
        for i in range(100):  # enough for the flusher to trim what r1 acknowledged
            await commit(master, **{f"k{i}": i})
        assert master._master.outbox.first > r2.txid + 1
        cluster.network.set_latency("m", "r2", 0.5)
        run_attach(nursery, r2, "mem:m", ReplicaParams(wait_data_timeout=60))
        await wait_until(lambda: "r2" in master.replicas)
        assert _link(master, "r2").sync is m.SyncKind.INCREMENTAL
        backlog = sum(len(entry) for txid, _g, entry in master._log if txid > r2.txid)
        assert _link(master, "r2").lag_bytes == backlog
        await commit(master, last=1)  # r1 acknowledges; r2's frames are still on their way
        await wait_until(lambda: r2.txid == master.txid)
        assert dict(r2.items()) == dict(master.items()) == dict(r1.items())
        nursery.cancel_scope.cancel()


async def test_a_detached_replica_gets_what_was_committed_before_and_no_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Detached while its frames are held: it still receives everything committed before
    # the detach (then the Detach), and nothing committed after; its lag stays counted from
    # what it was due while the link closes.
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams(mode=MasterMode.ASYNC))
        r1, r2 = await cluster.add_node("r1"), await cluster.add_node("r2")
        run_attach(nursery, r1, "mem:m", ReplicaParams())
        await master.attach_replica(timeout=5)
        gone = run_attach(nursery, r2, "mem:m", ReplicaParams(wait_data_timeout=60))
        await master.attach_replica(timeout=5)
        cluster.network.hold("m", "r2")
        for i in range(10):
            await commit(master, **{f"k{i}": i})
        due = master.txid
        link = _link(master, "r2")
        lag = link.lag_bytes
        assert lag > 0
        master.detach_replica("r2")
        assert link.lag_bytes == lag
        for i in range(10, 200):
            await commit(master, **{f"k{i}": i})
        cluster.network.release("m", "r2")
        await gone.done.wait()
        assert gone.result is hakit.StopReason.MASTER_REQUESTED_DISCONNECT
        assert r2.txid == due and r2.get("k9") == 9 and r2.get("k10") is None
        await wait_until(lambda: r1.txid == master.txid)
        nursery.cancel_scope.cancel()


async def test_a_replica_loading_while_others_stream_gets_what_was_committed_meanwhile(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # r2's full load is held up while r1 streams on: the outbox keeps what r2 needs from its
    # snapshot on, and r2 gets it after the load (links at different positions).
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams(ack_policy=hakit.AckPolicy.ONE))
        r1, r2 = await cluster.add_node("r1"), await cluster.add_node("r2")
        run_attach(nursery, r1, "mem:m", ReplicaParams())
        await master.attach_replica(timeout=5)
        for i in range(50):
            await commit(master, **{f"a{i}": i})
        cluster.network.set_latency("m", "r2", 0.5)
        run_attach(nursery, r2, "mem:m", ReplicaParams(wait_data_timeout=60))
        await wait_until(lambda: "r2" in master.replicas)
        for i in range(150):
            await commit(master, **{f"b{i}": i})
        await wait_until(lambda: r2.txid == master.txid)
        assert dict(r2.items()) == dict(master.items()) == dict(r1.items())
        nursery.cancel_scope.cancel()
