"""A node's transaction log holds packed entries only, and a replica applies without garbage.

The log serves incremental resync (`generation_of`, `packed`) and what a diverged replica
discards (iteration). A replica keeps each entry as the master packed it. Applying a large
batch leaves nothing for the garbage collector: no container per transaction is kept, and
a batch is decoded a piece at a time.
"""

from __future__ import annotations

import gc

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import hakit
from hakit import MasterMode, MasterParams, ReplicaParams
from hakit._runtime._translog import TransLog
from hakit.protocol import DecodeLimits, FrameDecoder, ReplicaMachine, ReplicaState
from hakit.protocol import _messages as m
from hakit.protocol._replica import Apply
from hakit.storage import MemoryStorage

from .conftest import commit, run_attach, wait_until


def _packed(txid: int) -> bytes:
    return m.pack_entry(txid, 1, [[0, f"k{txid}", txid]])


def _blob(first: int, last: int) -> bytes:
    return b"".join(_packed(t) for t in range(first, last + 1))


def test_txids_are_positions_and_generations_runs() -> None:
    log = TransLog(5)
    assert (len(log), bool(log), log.first) == (0, False, 1)
    log.extend(3, 1, 2, _blob(3, 4))
    log.append(5, 2, _packed(5))
    log.extend(6, 2, 1, _blob(6, 6))
    assert (log.first, log.last, len(log)) == (3, 6, 4)
    assert [log.generation_of(t) for t in range(2, 8)] == [None, 1, 1, 2, 2, None]
    assert list(log) == [(3, 1, _packed(3)), (4, 1, _packed(4)), (5, 2, _packed(5)),
                         (6, 2, _packed(6))]  # fmt: skip
    assert log.packed(4, 6) == [_packed(4), _packed(5)]
    with pytest.raises(ValueError, match="not all in the log"):
        log.packed(2, 4)
    log.extend(7, (3, 3), 2, _blob(7, 8))  # past maxlen: the oldest go
    assert (log.first, log.last, len(log)) == (4, 8, 5)
    assert [log.generation_of(t) for t in (3, 4, 5, 7, 8)] == [None, 1, 2, 3, 3]
    assert log.packed(4, 9) == [_packed(t) for t in range(4, 9)]  # part of a batch kept
    log.append(9, 3, _packed(9))
    assert log.generation_of(4) is None and [g for _t, g, _p in log] == [2, 2, 3, 3, 3]
    log.append(10, 4, _packed(10))  # a new run: those wholly before the log are dropped
    assert list(log._runs) == [(5, 2), (7, 3), (10, 4)]


def test_a_batch_of_mixed_generations_keeps_each_ones() -> None:
    log = TransLog(100)
    log.extend(1, (1, 1, 2, 3), 4, _blob(1, 4))
    assert [log.generation_of(t) for t in range(1, 5)] == [1, 1, 2, 3]
    assert [t for t, _g, _p in log] == [1, 2, 3, 4]


def test_a_gap_restarts_the_log_and_resize_keeps_the_newest() -> None:
    log = TransLog(10)
    log.extend(1, 1, 5, _blob(1, 5))
    log.append(9, 1, _packed(9))
    assert (log.first, log.last, list(log)) == (9, 9, [(9, 1, _packed(9))])
    log.extend(10, 1, 4, _blob(10, 13))
    log.resize(2)
    assert (log.maxlen, log.first, log.last) == (2, 12, 13)
    assert log.packed(12, 14) == [_packed(12), _packed(13)]
    log.resize(1)
    assert list(log) == [(13, 1, _packed(13))]
    log.clear()
    assert not log and log.generation_of(13) is None
    empty = TransLog(0)  # trans_log_length=0 keeps nothing
    empty.append(1, 1, _packed(1))
    empty.extend(2, 1, 2, _blob(2, 3))
    assert (len(empty), empty.generation_of(1), list(empty)) == (0, None, [])


def test_applying_a_large_batch_promotes_nothing() -> None:
    # Decoded whole, 5,000 transactions are 15,000 lists alive at once: young collections
    # run in the middle and promote them. Read packed, a piece at a time, and kept packed in
    # the log, they are never more than the collector's first threshold.
    entries = [_packed(txid) for txid in range(1, 5001)]
    decoder = FrameDecoder(limits=DecodeLimits(raw_kinds=frozenset({int(m.Kind.TXNS)})))
    decoder.feed(m.encode_txns(1, entries))
    (value,) = decoder.drain()
    machine = ReplicaMachine(cluster="c", node="r", generation=1, txid=0, last_generation=0,
                             now=0.0)  # fmt: skip
    machine.state = ReplicaState.STREAMING
    storage, log = MemoryStorage(), TransLog(100_000)
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    try:
        for event in machine.receive_iter(m.parse_message(value), 0.0):
            assert isinstance(event, Apply) and event.packed is not None
            storage.apply(event.entries)
            log.extend(event.entries[0][0], 1, len(event.entries), event.packed)
    finally:
        gc.callbacks.remove(count)
    assert collections == []
    assert storage.txid == 5000 and list(log)[-1] == (5000, 1, entries[-1])


async def test_a_replica_logs_the_bytes_the_master_packed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # What a replica keeps for a later resync is what its master sent, byte for byte; once
    # promoted, it resyncs a third node from that log (incrementally).
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams(mode=MasterMode.ASYNC))
        r1, r2 = await cluster.add_node("r1"), await cluster.add_node("r2")
        first = run_attach(nursery, r1, "mem:m", ReplicaParams())
        await master.attach_replica(timeout=5)
        second = run_attach(nursery, r2, "mem:m", ReplicaParams())
        await master.attach_replica(timeout=5)
        for i in range(300):
            await commit(master, **{f"k{i}": [i, {"nested": i}]})
        await wait_until(lambda: r1.txid == r2.txid == master.txid)
        assert list(r1._log) == list(master._log)
        r2.replica_stop()
        await second.done.wait()
        for i in range(300, 320):
            await commit(master, **{f"k{i}": i})
        await wait_until(lambda: r1.txid == master.txid)
        await master.aclose()
        await first.done.wait()
        r1.set_master_params(MasterParams())
        run_attach(nursery, r2, "mem:r1", ReplicaParams())
        info = await r1.attach_replica(timeout=5)
        assert info.sync == "incremental"
        await wait_until(lambda: r2.txid == r1.txid)
        assert r2.get("k319") == 319 and r2.get("k5") == [5, {"nested": 5}]
        assert dict(r2.items()) == dict(r1.items())
        nursery.cancel_scope.cancel()


async def test_a_large_batch_is_applied_in_pieces_and_acknowledged_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 300 asynchronous commits leave in one Txns frame; the replica reads it packed, applies
    # it in pieces of 64 and acknowledges once, for all 300.
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master = await cluster.add_node("m")
        master.set_master_params(MasterParams(mode=MasterMode.ASYNC))
        replica = await cluster.add_node("r1")
        run_attach(nursery, replica, "mem:m", ReplicaParams())
        await master.attach_replica(timeout=5)
        for i in range(300):
            await commit(master, **{f"k{i}": i})
        await wait_until(lambda: replica.txid == master.txid)
        await trio.sleep(0.1)  # the ack reaches the master (well within a keep-alive interval)
        sent = [
            e for e in cluster.events if isinstance(e, hakit.MessageEvent) and e.action == "sent"
        ]
        txns = [e for e in sent if e.kind == "TXNS"]
        acks = [e for e in sent if e.kind == "ACK" and e.fields["txid"] > 0]
        entries = master._log.packed(master.txid - 299, master.txid + 1)
        assert len(txns) == 1 and txns[0].size > sum(map(len, entries))  # all in one frame
        assert [e.fields["txid"] for e in acks] == [master.txid]
        assert replica._log.packed(master.txid - 299, master.txid + 1) == entries
        nursery.cancel_scope.cancel()


@settings(max_examples=200, deadline=None)
@given(
    maxlen=st.integers(0, 12),
    steps=st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 4), st.booleans(), st.booleans()),
        max_size=30,
    ),
)
def test_the_log_keeps_what_a_list_of_entries_would(
    maxlen: int, steps: list[tuple[int, int, bool, bool]]
) -> None:
    # Every way of adding (a batch in the newest run's generation, which takes the short
    # path; a new generation; mixed generations; a gap) against the plainest model.
    log, model = TransLog(maxlen), []  # model: (txid, generation, packed), oldest first
    generation, txid = 1, 0
    for bump, count, mixed, gap in steps:
        generation += bump
        first = txid + (3 if gap else 1)
        txids = range(first, first + count)
        gens = tuple(generation + (i if mixed else 0) for i in range(count))
        if gap:
            model = []
        model.extend((t, g, _packed(t)) for t, g in zip(txids, gens, strict=True))
        log.extend(first, gens if mixed else generation, count, _blob(first, first + count - 1))
        generation, txid = gens[-1], txids[-1]
        model = model[-maxlen:] if maxlen else []
        assert list(log) == model
        assert len(log) == len(model) and log.last == txid
        held = {t: g for t, g, _ in model}
        assert [log.generation_of(t) for t in range(txid + 2)] == [
            held.get(t) for t in range(txid + 2)
        ]
