"""The master's per-replica work per commit, made cheaper, does what it did.

The flusher hands the frames one link was sent to the next link at the same position; an
acknowledgement of the usual kind is taken by the link machine's fast path
(`MasterLinkMachine.receive_value`, pinned against the generic path in
tests/protocol/test_master.py) and counted by `MasterSide.ack`. Here: every link still gets
exactly its own frames, and a replica that sends a bad acknowledgement (beyond what it was
sent, of another generation, malformed) still loses only its own link, with the words of the
generic path.
"""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

import hakit
from hakit import StopReason
from hakit._runtime._link import ReplicaLink, max_transaction_bytes
from hakit._runtime._master_side import _PendingCommit
from hakit._runtime._outbox import Outbox, txns_frames
from hakit.protocol import MasterLinkMachine, encode_frame, parse_message
from hakit.protocol import _messages as m
from hakit.transports import FramedStream

from .conftest import Nodes, commit, run_attach, wait_until
from .test_bad_input import healthy_pair, hello, raw

# -- the flusher's shared frames -------------------------------------------------------------


class _Sent:
    """A stream that never blocks: keeps what it is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def try_send_nowait(self, data: bytes) -> bool:
        self.sent.append(data)
        return True


class _Master:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox


def _entry(txid: int) -> bytes:
    return m.pack_entry(txid, 1, [[0, f"k{txid}", "v" * 40]])


def _direct_link(
    master: _Master, name: str, at: int, generation: int = 2, frame_size: int = 1 << 20
) -> ReplicaLink:
    machine = MasterLinkMachine(
        replica=name, generation=generation, sync_target=0, txid=at - 1, now=0.0
    )
    link = ReplicaLink(master, name, _Sent(), machine, m.SyncKind.INCREMENTAL, None)  # type: ignore[arg-type]
    link.max_frame_size = frame_size
    link.start_at(at)
    link._direct = True  # as its sender sets it once the initial sync is sent
    return link


def test_links_of_one_pass_share_frames_only_where_they_would_get_the_same() -> None:
    outbox = Outbox(1)
    entries = {txid: _entry(txid) for txid in range(1, 11)}
    for txid, entry in entries.items():
        outbox.append(txid, entry)
    master = _Master(outbox)
    small = 1024 + 2 * len(entries[1])  # two entries per frame
    links = [
        _direct_link(master, "a", 5),
        _direct_link(master, "b", 5),
        _direct_link(master, "c", 3),  # behind: its own range
        _direct_link(master, "d", 5),  # after one at another position
        _direct_link(master, "e", 5, generation=3),  # another generation
        _direct_link(master, "f", 5, frame_size=small),  # smaller frames
        _direct_link(master, "g", 11),  # up to date: nothing to send
    ]
    shared = None
    for link in links:
        shared = link.flush_direct(7.0, shared)
    for link, at, generation, frame_size in [
        (links[0], 5, 2, 1 << 20),
        (links[1], 5, 2, 1 << 20),
        (links[2], 3, 2, 1 << 20),
        (links[3], 5, 2, 1 << 20),
        (links[4], 5, 3, 1 << 20),
        (links[5], 5, 2, small),
    ]:
        expected = txns_frames(
            generation, [entries[t] for t in range(at, 11)], max_transaction_bytes(frame_size)
        )
        assert link.stream.sent == [b"".join(expected)], link.name  # type: ignore[attr-defined]
        assert (link.frames_sent, link.bytes_sent) == (len(expected), len(b"".join(expected)))
        assert link.machine.sent_txid == 10 and link.machine.last_sent == 7.0
        assert link.load_sent
    assert links[5].frames_sent > 1  # cut to its own frame size, sent in one send
    assert links[6].stream.sent == [] and links[6].machine.sent_txid == 10  # type: ignore[attr-defined]
    # The same bytes object, built once, for links in a row at one position.
    assert links[0].stream.sent[0] is links[1].stream.sent[0]  # type: ignore[attr-defined]
    # Nothing new: a second pass sends nothing, to anyone.
    shared = None
    for link in links:
        shared = link.flush_direct(8.0, shared)
    assert all(len(link.stream.sent) == (link is not links[6]) for link in links)  # type: ignore[attr-defined]


def test_a_pending_commit_is_decided_as_before() -> None:
    # check() was: len(acked) >= min(needed, len(acked) + len(required)).
    for needed in range(5):
        for acked in range(5):
            for required in range(5):
                pending = _PendingCommit(1, {f"r{i}" for i in range(required)}, needed, 0.0)
                pending.acked = [f"a{i}" for i in range(acked)]
                before = acked >= min(needed, acked + required)
                assert pending.check() is before is pending.done.is_set()
                if required:  # one more acknowledgement, counted by ack (check inline)
                    pending = _PendingCommit(1, {f"r{i}" for i in range(required)}, needed, 0.0)
                    pending.acked = [f"a{i}" for i in range(acked)]
                    after = acked + 1 >= min(needed, acked + required)
                    assert pending.ack("r0") is after is pending.done.is_set()
                    assert "r0" not in pending.required and pending.acked[-1] == "r0"


def test_an_ack_decides_a_commit_once_enough_replicas_acknowledged() -> None:
    pending = _PendingCommit(1, {"r0", "r1", "r2"}, 2, 0.0)
    assert not pending.ack("r1")
    assert pending.ack("r0")
    assert pending.done.is_set()
    assert pending.acked == ["r1", "r0"] and pending.required == {"r2"}


# -- bad acknowledgements from an attached replica ---------------------------------------------


async def _rogue(nodes: Nodes, master: hakit.Node) -> tuple[FramedStream, int]:
    """A replica of its own making, synced and streaming: returns its stream and generation."""
    framed = FramedStream(await raw(nodes, master.address))
    await framed.send(hello(node="rogue"))
    while True:
        for value in await framed.receive():
            msg = parse_message(value)
            if isinstance(msg, m.SnapshotEnd):
                await framed.send(m.Ack(msg.generation, msg.txid).encode())
                await wait_until(lambda: _synced(master))
                return framed, msg.generation


def _synced(master: hakit.Node) -> bool:
    return any(e.replica == "rogue" for e in master.events.of_type(hakit.ReplicaSynced))


def _commit_in_background(
    nursery: trio.Nursery, master: hakit.Node, **items: int
) -> list[hakit.CommitResult]:
    """Start a commit of `items`; its result lands in the returned list once it returns."""
    results: list[hakit.CommitResult] = []

    async def write() -> None:
        results.append(await commit(master, **items))

    nursery.start_soon(write)
    return results


def _frame(case: str, generation: int, txid: int) -> bytes:
    ack = int(m.Kind.ACK)
    return {
        "beyond-sent": encode_frame([ack, generation, txid + 1]),
        "going-back": encode_frame([ack, generation, 0]),
        "newer-generation": encode_frame([ack, generation + 1, txid]),
        "bool-txid": encode_frame([ack, generation, True]),
        "float-kind": encode_frame([float(ack), generation, txid]),
        "four-fields": encode_frame([ack, generation, txid, 0]),
        "garbage": b"\x00\x00\x00\x03\xc1\xc1\xc1",
    }[case]


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("beyond-sent", ["protocol error", "outside"]),
        ("going-back", ["protocol error", "ack for txid 0 outside"]),
        ("newer-generation", ["protocol error", "from generation"]),
        ("bool-txid", ["bad frame", "Ack.txid: unexpected value True"]),
        ("float-kind", ["bad frame", "unknown message kind"]),
        ("four-fields", ["bad frame", "Ack: expected 2 fields, got 3"]),
        ("garbage", ["bad frame", "msgpack"]),
    ],
)
async def test_a_bad_ack_from_a_streaming_replica_ends_only_its_link(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery, case: str, words: list[str]
) -> None:
    master, replica = await healthy_pair(nodes, nursery)
    framed, generation = await _rogue(nodes, master)
    async with framed:
        results = _commit_in_background(nursery, master, during=1)
        values = await framed.receive()  # the commit's transaction: the rogue must ack it
        assert any(isinstance(parse_message(v), m.Txns | m.PackedTxns) for v in values)
        await framed.send(_frame(case, generation, master.txid))
        await wait_until(lambda: bool(results))
    assert results[0].acked == ("r1",) and results[0].detached == ("rogue",)
    detached = [e for e in master.events.of_type(hakit.ReplicaDetached) if e.replica == "rogue"]
    assert detached and detached[-1].reason is StopReason.CONNECTION_ABORTED
    for word in words:
        assert word in detached[-1].detail, detached[-1].detail
    result = await commit(master, after=2)  # the master goes on serving the healthy one
    assert result.acked == ("r1",)
    assert dict(replica.items()) == dict(master.items()) == {"before": 1, "during": 1, "after": 2}


async def test_a_good_ack_from_a_replica_of_its_own_making_is_counted(
    nodes: Nodes, clock: MockClock, nursery: trio.Nursery
) -> None:
    master, _replica = await healthy_pair(nodes, nursery)
    framed, generation = await _rogue(nodes, master)
    async with framed:
        results = _commit_in_background(nursery, master, during=1)
        await framed.receive()
        await framed.send(m.Ack(generation, master.txid).encode())
        await wait_until(lambda: bool(results))
        assert sorted(results[0].acked) == ["r1", "rogue"] and results[0].detached == ()
        assert "rogue" in master.replicas


# -- one read per acknowledgement ---------------------------------------------------------------


async def test_the_master_reads_each_replicas_ack_once_per_commit(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read that took all there was (FramedStream.drained) is not followed by one that
    # would find nothing; with latency the acks still arrive, through next_due.
    async with hakit.open_cluster() as cluster, trio.open_nursery() as nursery:
        master = await cluster.add_node("m")
        master.set_master_params(hakit.MasterParams())
        replicas = [await cluster.add_node(f"r{i}") for i in range(4)]
        for replica in replicas:
            run_attach(nursery, replica, "mem:m", hakit.ReplicaParams())
            await master.attach_replica(timeout=5)
        await commit(master, warm=1)
        streams = {link.stream for link in master._master.links.values()}
        reads: list[object] = []
        receive_nowait = FramedStream.receive_nowait

        def counted(stream: FramedStream) -> list[object] | None:
            if stream in streams:
                reads.append(stream)
            return receive_nowait(stream)

        monkeypatch.setattr(FramedStream, "receive_nowait", counted)
        for i in range(5):
            result = await commit(master, **{f"k{i}": i})
            assert sorted(result.acked) == ["r0", "r1", "r2", "r3"]
        assert len(reads) == 5 * 4
        cluster.network.set_latency("r2", "m", 0.25)
        result = await commit(master, late=1)
        assert sorted(result.acked) == ["r0", "r1", "r2", "r3"]
        nursery.cancel_scope.cancel()
