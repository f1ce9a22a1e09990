"""Transaction batches read packed: decoded a piece at a time, each entry with its own bytes.

A replica's decoder may leave `Txns` frames undecoded (`DecodeLimits.raw_kinds`); the machine
then checks and hands out their entries `APPLY_BATCH` at a time, as they are applied, with the
bytes the master packed. The checks are the same as for a decoded batch.
"""

from __future__ import annotations

from typing import Any

import pytest

from hakit.protocol import (
    DecodeLimits,
    FrameDecoder,
    RemoteProtocolError,
    ReplicaMachine,
    ReplicaState,
    StopReason,
    SyncKind,
)
from hakit.protocol import _messages as m
from hakit.protocol._codec import frame, pack
from hakit.protocol._replica import APPLY_BATCH, Apply, Stopped, Synced

from .test_replica import OPS, make_replica, streaming, welcome

RAW = DecodeLimits(raw_kinds=frozenset({int(m.Kind.TXNS)}))


def packed_txns(generation: int, entries: list[Any]) -> m.PackedTxns:
    """A Txns frame as the replica's decoder hands it over, parsed."""
    frame_ = m.encode_txns(generation, [pack(entry) for entry in entries])
    decoder = FrameDecoder(limits=RAW)
    decoder.feed(frame_)
    (value,) = decoder.drain()
    assert type(value) is bytes
    msg = m.parse_message(value)
    assert isinstance(msg, m.PackedTxns)
    return msg


def run(first: int, last: int, generation: int = 2) -> list[Any]:
    return [[txid, generation, [[0, f"k{txid}", txid]]] for txid in range(first, last + 1)]


def test_the_decoder_leaves_only_the_raw_kinds_undecoded() -> None:
    batch = [pack(entry) for entry in run(1, 40)]  # array 16 header: 42 items
    decoder = FrameDecoder(limits=RAW)
    decoder.feed(m.Ack(2, 5).encode() + m.encode_txns(2, batch) + m.encode_txns(2, batch[:3]))
    ack, big, small = decoder.drain()
    assert ack == [int(m.Kind.ACK), 2, 5]
    assert big == m.encode_txns(2, batch)[4:] and type(big) is bytes
    assert small == m.encode_txns(2, batch[:3])[4:]  # fixarray header
    msg = m.parse_message(big)
    assert isinstance(msg, m.PackedTxns)
    assert (msg.generation, msg.count, msg.entries) == (2, 40, run(1, 40))
    assert msg.encode() == m.encode_txns(2, batch)
    assert msg.to_wire() == m.Txns(2, run(1, 40)).to_wire()


@pytest.mark.parametrize(
    "limits",
    [
        {"max_containers": 10},
        {"max_array_len": 10},
        {"max_map_len": 10},
        {"raw_kinds": frozenset({200})},
    ],
)
def test_raw_kinds_are_fixints_for_unbounded_decoding(limits: dict[str, Any]) -> None:
    limits.setdefault("raw_kinds", frozenset({7}))
    with pytest.raises(ValueError, match="raw_kinds"):
        DecodeLimits(**limits)


def test_limits_keep_their_raw_kinds_when_bounded() -> None:
    assert RAW.bounded(1024).raw_kinds == RAW.raw_kinds


def test_batches_hand_out_each_entry_with_its_own_bytes() -> None:
    entries = run(1, 7)
    msg = packed_txns(2, entries)
    pieces = list(msg.batches(3))
    assert [(len(e), last) for e, _p, last in pieces] == [(3, False), (3, False), (1, True)]
    assert [e for batch, _p, _l in pieces for e in batch] == entries
    assert [p for _e, p, _l in pieces] == [
        b"".join(pack(e) for e in entries[i : i + 3]) for i in (0, 3, 6)
    ]


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (frame(b"\x93\x07\x02\x93")[4:], "not valid msgpack"),  # an entry cut short
        (m.encode_txns(2, [pack(run(6, 6)[0])])[4:] + b"\xc0", "1 bytes after the last entry"),
    ],
)
def test_a_broken_packed_batch_stops_the_session(payload: bytes, words: str) -> None:
    replica = streaming()
    msg = m.parse_message(payload)
    (stopped,) = replica.receive(msg, 1.0)
    assert isinstance(stopped, Stopped) and stopped.reason is StopReason.CONNECTION_ABORTED
    assert words in stopped.detail
    assert replica.txid == 5 and replica.state is ReplicaState.STOPPED


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (pack([int(m.Kind.ACK), 2, 5]), "only Txns"),
        (pack([int(m.Kind.TXNS), -1]), "bad generation"),
        (pack([int(m.Kind.TXNS)]), "2 items or more"),
        (b"\x92\x07", "not valid msgpack"),
        (pack({"not": "an array"}), "not valid msgpack"),
    ],
)
def test_a_payload_left_packed_must_be_a_txns_message(payload: bytes, words: str) -> None:
    with pytest.raises(RemoteProtocolError, match=words):
        m.parse_message(payload)


def test_a_large_batch_is_handed_out_in_pieces_and_acknowledged_once() -> None:
    replica = streaming()
    count = 2 * APPLY_BATCH + 22
    msg = packed_txns(2, run(6, 5 + count))
    events = replica.receive_iter(msg, 1.0)
    first = next(events)
    # Only what was handed out counts: the ack at this point covers the first piece.
    assert isinstance(first, Apply) and len(first.entries) == APPLY_BATCH and not first.ack
    assert replica.txid == 5 + APPLY_BATCH and replica.ack().txid == 5 + APPLY_BATCH
    assert first.packed == b"".join(pack(e) for e in run(6, 5 + APPLY_BATCH))
    rest = list(events)
    assert [(len(e.entries), e.ack) for e in rest if isinstance(e, Apply)] == [
        (APPLY_BATCH, False),
        (22, True),
    ]
    assert len(rest) == 2 and replica.txid == 5 + count


def test_a_bad_entry_stops_after_the_pieces_handed_out_before_it() -> None:
    replica = streaming()
    batch = run(6, 5 + APPLY_BATCH + 10)
    batch[APPLY_BATCH + 3][0] += 1  # a gap in the second piece
    events = replica.receive(packed_txns(2, batch), 1.0)
    assert [type(e) for e in events] == [Apply, Stopped]
    assert "does not follow" in events[1].detail  # type: ignore[union-attr]
    assert replica.txid == 5 + APPLY_BATCH and replica.state is ReplicaState.STOPPED


@pytest.mark.parametrize(
    "entry",
    [[6, 2], [6, 2, "ops"], [True, 2, OPS], [6, 2.0, OPS], [6, 2, [[9, "k"]]], [6, 2, [[0, 5, 1]]]],
)
def test_malformed_entries_are_refused_as_in_a_decoded_batch(entry: Any) -> None:
    replica = streaming(txid=0 if entry[0] is True else 5)
    (stopped,) = replica.receive(packed_txns(2, [entry]), 1.0)
    assert isinstance(stopped, Stopped) and replica.txid == replica.ack().txid
    assert replica.state is ReplicaState.STOPPED


def test_the_batch_that_completes_a_resync_is_followed_by_synced() -> None:
    replica = make_replica()
    replica.receive(welcome(10, SyncKind.INCREMENTAL), 0.0)
    events = replica.receive(packed_txns(2, run(6, 10)), 1.0)
    assert [type(e) for e in events] == [Apply, Synced]
    assert events[0] == Apply(run(6, 10), b"".join(pack(e) for e in run(6, 10)), ack=True)


def test_an_empty_packed_batch_is_acknowledged() -> None:
    replica = streaming()
    assert replica.receive(packed_txns(2, []), 1.0) == [Apply([], b"", ack=True)]


def test_a_stale_packed_batch_is_refused() -> None:
    replica = streaming()
    (stopped,) = replica.receive(packed_txns(1, run(6, 6, generation=1)), 1.0)
    assert isinstance(stopped, Stopped) and "stale master" in stopped.detail


def test_nothing_more_is_handed_out_once_stopped_meanwhile() -> None:
    replica: ReplicaMachine = streaming()
    events = replica.receive_iter(packed_txns(2, run(6, 5 + 3 * APPLY_BATCH)), 1.0)
    next(events)
    replica.stop(StopReason.STOPPED_BY_LOCAL_REQUEST, "replica_stop() called")
    assert list(events) == []
    assert replica.txid == 5 + APPLY_BATCH


@pytest.mark.parametrize(
    ("head", "generation"),
    [
        (b"\x94\x07\x05", 5),  # fixarray, fixint generation
        (b"\x94\x07\xcd\x01\x2c", 300),  # uint 16
        (b"\xdc\x00\x04\x07\xcf" + (2**40).to_bytes(8, "big"), 2**40),  # array 16, uint 64
        (b"\xdd\x00\x00\x00\x04\x07\xce\x00\x01\x00\x00", 65536),  # array 32, uint 32
        (b"\x94\x07\xd0\x05", 5),  # int 8: another encoder's choice, read by msgpack
        (b"\x94\x07\xd1\x01\x2c", 300),  # int 16
    ],
)
def test_the_head_is_read_as_any_encoder_may_write_it(head: bytes, generation: int) -> None:
    entries = run(6, 7, generation=generation)
    msg = m.parse_message(head + b"".join(pack(e) for e in entries))
    assert isinstance(msg, m.PackedTxns)
    assert (msg.generation, msg.count, msg.entries) == (generation, 2, entries)


def test_a_generation_past_the_largest_counter_is_refused_packed() -> None:
    with pytest.raises(RemoteProtocolError, match="bad generation"):
        m.parse_message(b"\x92\x07\xcf" + (2**63).to_bytes(8, "big"))


def _either_way(machine: ReplicaMachine, payload: bytes, now: float) -> list[Any]:
    """What a replica does with `payload`: `take_txns` first, `receive_iter` if declined."""
    taken = machine.take_txns(payload, now)
    if taken is not None:
        return [Apply(*taken)]
    return list(machine.receive_iter(m.parse_message(payload), now))


def _payload(generation: Any, entries: list[Any]) -> bytes:
    return m.encode_txns(generation, [pack(entry) for entry in entries])[4:]


_FRAMES = [
    _payload(2, run(6, 6)),  # the usual frame
    _payload(3, run(6, 6)),  # a newer master generation
    _payload(2, run(6, 8)),
    _payload(2, run(6, 6, generation=1)),  # an entry older than last_generation
    _payload(2, run(6, 6, generation=3)),  # an entry newer than the master's generation
    _payload(1, run(6, 6)),  # a stale master
    _payload(2, run(7, 7)),  # a gap
    _payload(2, run(5, 5)),  # a repeat
    _payload(2, []),
    _payload(2, run(6, 6 + APPLY_BATCH)),  # more than one batch
    _payload(2, [[6, 2, [[1, "k"]]]]),  # a delete: not the usual kind, still valid
    _payload(2, [[6, 2, [[0, b"k", 1]]]]),  # a bytes key
    _payload(2, [[6, 2, [[9, "k", 1]]]]),  # an unknown op
    _payload(2, [[6, 2, "ops"]]),
    _payload(2, [[6, 2]]),
    _payload(2, run(6, 6))[:-1],  # cut short
    _payload(2, run(6, 6)) + b"\x00",  # a byte after the last entry
    _payload(2**40, run(6, 6)),  # a wide generation
    bytes((0x93, int(m.Kind.TXNS), 2)) + b"\xc1",  # a usual head, then no msgpack
]


@pytest.mark.parametrize("payload", _FRAMES)
@pytest.mark.parametrize("state", ["synced", "promoting", "loading"])
def test_taking_a_frame_in_one_call_is_what_receiving_it_does(payload: bytes, state: str) -> None:
    # take_txns is the follower's short path; whatever it declines goes the long way. Both
    # ways must leave the machine in the same state with the same events, for every frame.
    def machine() -> ReplicaMachine:
        if state == "loading":
            replica = make_replica()
            replica.receive(welcome(9, SyncKind.FULL), 0.0)
            return replica
        return streaming(force_master=state == "promoting")

    fast, slow = machine(), machine()
    got = _either_way(fast, payload, 7.0)
    want = list(slow.receive_iter(m.parse_message(payload), 7.0))
    assert got == want
    assert vars(fast) == vars(slow)


def test_the_usual_frame_is_taken_in_one_call() -> None:
    replica = streaming()
    entries = run(6, 7)
    taken = replica.take_txns(_payload(2, entries), 3.0)
    assert taken == (entries, b"".join(pack(entry) for entry in entries))
    assert (replica.txid, replica.next_deadline) == (7, 13.0)
