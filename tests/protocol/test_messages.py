"""Wire messages: every class round-trips, and malformed frames are refused clearly."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from hakit.protocol import Kind, Message, RemoteProtocolError, parse_message
from hakit.protocol import _messages as m
from hakit.protocol._codec import FrameDecoder, encode_frame

SAMPLES: list[Message] = [
    m.Hello(3, m.PROTOCOL_VERSION, "hakit", "r1", 41, 2, int(m.HelloFlags.FORCE_MASTER), "mem:r1"),
    m.Hello(0, m.PROTOCOL_VERSION, "c", "r2", 0, 0, 0, None),
    m.Welcome(3, "m", 42, int(m.SyncKind.INCREMENTAL), 1.5),
    m.Welcome(3, "m", 42, int(m.SyncKind.FULL), 2),  # an int interval is a valid float
    m.Reject(3, 2, "no"),
    m.SnapshotBegin(3, 42, 2, 2),
    m.SnapshotChunk(3, ["a", 1, b"b", [1, {"x": None}]]),
    m.SnapshotEnd(3, 42, 2),
    m.Txns(3, [[43, 3, [[0, "k", "v"], [1, b"old"]]], [44, 3, []]]),
    m.Txns(3, []),
    m.Ack(3, 44),
    m.KeepAlive(3, 44),
    m.Detach(3, "bye now"),
    m.Bye(3, 3, "replica_stop"),
    m.PromoteRequest(3),
    m.PromoteReady(3, 44),
    m.KillMaster(4, "r1", "mem:r1"),
    m.KillMaster(4, "r1", None),
    m.MasterKilled(4),
    m.MasterChanged(4, "r1", "10.0.0.1:7000"),
    m.Cancel(0, "r1"),
]


def decode(data: bytes) -> list[Any]:
    decoder = FrameDecoder()
    decoder.feed(data)
    return decoder.drain()


#: The replication protocol's tags (DESIGN 4); message channels add their own after these.
REPLICATION_KINDS = {
    "HELLO": 1,
    "WELCOME": 2,
    "REJECT": 3,
    "SNAPSHOT_BEGIN": 4,
    "SNAPSHOT_CHUNK": 5,
    "SNAPSHOT_END": 6,
    "TXNS": 7,
    "ACK": 8,
    "KEEPALIVE": 9,
    "DETACH": 10,
    "BYE": 11,
    "PROMOTE_REQUEST": 12,
    "PROMOTE_READY": 13,
    "KILL_MASTER": 14,
    "MASTER_KILLED": 15,
    "MASTER_CHANGED": 16,
    "CANCEL": 17,
}

#: A valid value for each wire field type, to build a sample of any message class.
FIELD_SAMPLES: dict[str, Any] = {
    "int": 7,
    "str": "text",
    "float": 0.25,
    "str | None": None,
    "list[Any]": ["a", b"b", [1, {"c": None}]],
    "list[Entry]": [[1, 1, [[0, "k", "v"]]]],
}


def generated_sample(cls: type[Message]) -> Message:
    return cls(*(FIELD_SAMPLES[str(f.type)] for f in dataclasses.fields(cls)))


def test_every_kind_has_a_class() -> None:
    assert set(m._CLASSES) == set(Kind)
    for kind, cls in m._CLASSES.items():
        assert cls.KIND is kind


def test_samples_cover_every_replication_kind() -> None:
    assert {msg.KIND.name for msg in SAMPLES} == set(REPLICATION_KINDS)


@pytest.mark.parametrize(
    "msg",
    [*SAMPLES, *(generated_sample(cls) for cls in m._CLASSES.values())],
    ids=lambda msg: type(msg).__name__,
)
def test_round_trip(msg: Message) -> None:
    (value,) = decode(msg.encode())
    assert value[:2] == [int(msg.KIND), msg.generation]
    parsed = parse_message(value)
    assert type(parsed) is type(msg)
    assert parsed == msg


def test_one_stream_of_every_message() -> None:
    data = b"".join(msg.encode() for msg in SAMPLES)
    assert [parse_message(v) for v in decode(data)] == SAMPLES


def test_messages_are_frozen() -> None:
    msg = m.Ack(1, 2)
    with pytest.raises(AttributeError):
        msg.txid = 3  # type: ignore[misc]


def test_hello_flags_combine() -> None:
    flags = int(m.HelloFlags.FORCE_MASTER | m.HelloFlags.FORCE_SYNC)
    hello = m.Hello(0, m.PROTOCOL_VERSION, "c", "r", 0, 0, flags, None)
    parsed = parse_message(decode(hello.encode())[0])
    assert isinstance(parsed, m.Hello)
    assert m.HelloFlags(parsed.flags) == m.HelloFlags.FORCE_MASTER | m.HelloFlags.FORCE_SYNC


# -- Txns built from pre-packed entries ------------------------------------------------------


def test_encode_txns_parses_as_txns() -> None:
    entries = [[5, 2, [[0, "a", 1]]], [6, 2, [[1, "a"], [0, b"b", [1, 2]]]], [7, 3, []]]
    data = m.encode_txns(3, [m.pack_entry(*entry) for entry in entries])
    (value,) = decode(data)
    assert parse_message(value) == m.Txns(3, entries)
    # Splicing gives the very bytes a Txns message encodes to.
    assert data == m.Txns(3, entries).encode()


def test_encode_txns_with_many_entries() -> None:
    entries = [[i, 1, [[0, f"k{i}", i]]] for i in range(1, 70_001)]  # array32 header
    (value,) = decode(m.encode_txns(1, [m.pack_entry(*e) for e in entries]))
    parsed = parse_message(value)
    assert isinstance(parsed, m.Txns)
    assert parsed.entries == entries


def test_encode_txns_without_entries() -> None:
    (value,) = decode(m.encode_txns(9, []))
    assert parse_message(value) == m.Txns(9, [])


# -- malformed values ------------------------------------------------------------------------

HELLO = [int(Kind.HELLO), 0, m.PROTOCOL_VERSION, "c", "r", 0, 0, 0, None, []]


def with_field(index: int, value: Any) -> list[Any]:
    wire = list(HELLO)
    wire[index] = value
    return wire


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"kind": 1}, "not a message array"),
        ("hello", "not a message array"),
        (7, "not a message array"),
        (None, "not a message array"),
        ([], "not a message array"),
        ([int(Kind.ACK)], "not a message array"),
        ([0, 0], "unknown message kind 0"),
        ([99, 0, 1], "unknown message kind 99"),
        (["HELLO", 0], "unknown message kind 'HELLO'"),
        ([1.0, 0, 1], "unknown message kind 1.0"),
        ([True, *HELLO[1:]], "unknown message kind True"),
        ([int(Kind.ACK), -1, 5], r"Ack: bad generation -1"),
        ([int(Kind.ACK), True, 5], r"Ack: bad generation True"),
        ([int(Kind.ACK), "1", 5], r"Ack: bad generation '1'"),
        ([int(Kind.ACK), 1.0, 5], r"Ack: bad generation 1.0"),
        ([int(Kind.ACK), None, 5], r"Ack: bad generation None"),
        ([int(Kind.TXNS), -3], r"Txns: bad generation -3"),
        ([int(Kind.ACK), 0], r"Ack: expected 2 fields, got 1"),
        ([int(Kind.ACK), 0, 1, 2], r"Ack: expected 2 fields, got 3"),
        ([int(Kind.PROMOTE_REQUEST), 0, "extra"], r"PromoteRequest: expected 1 fields, got 2"),
        (HELLO[:-1], r"Hello: expected 9 fields, got 8"),
        (with_field(2, "1"), r"Hello\.version: unexpected value '1'"),
        (with_field(2, 1.0), r"Hello\.version: unexpected value 1\.0"),
        (with_field(3, b"c"), r"Hello\.cluster: unexpected value b'c'"),
        (with_field(4, None), r"Hello\.node: unexpected value None"),
        (with_field(5, True), r"Hello\.txid: unexpected value True"),
        (with_field(7, False), r"Hello\.flags: unexpected value False"),
        (with_field(8, 5), r"Hello\.address: unexpected value 5"),
        ([int(Kind.WELCOME), 0, "m", 1, 0, "2", [], 0], r"Welcome\.keepalive_interval"),
        ([int(Kind.WELCOME), 0, "m", 1, 0, True, [], 0], r"Welcome\.keepalive_interval"),
        ([int(Kind.WELCOME), 0, "m", 1, 0, 1.0, {}, 0], r"Welcome\.history"),
        ([int(Kind.WELCOME), 0, "m", 1, 0, 1.0, [], -1], r"Welcome\.common"),
        # Counters beyond what a storage can hold are refused where frames enter.
        ([int(Kind.ACK), 2**63, 5], r"Ack: bad generation 9223372036854775808"),
        ([int(Kind.ACK), 2**64 - 1, 5], r"Ack: bad generation"),
        ([int(Kind.ACK), 1, 2**64 - 1], r"Ack\.txid: unexpected value"),
        (with_field(1, 2**64 - 1), r"Hello: bad generation"),
        (with_field(6, 2**63), r"Hello\.last_generation: unexpected value"),
        ([int(Kind.SNAPSHOT_CHUNK), 0, {"a": 1}], r"SnapshotChunk\.items"),
        ([int(Kind.REJECT), 0, 2, None], r"Reject\.detail"),
        ([int(Kind.KILL_MASTER), 1, "r", b"addr"], r"KillMaster\.address"),
    ],
)
def test_malformed_values_are_refused(value: Any, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        parse_message(value)


def test_malformed_value_after_a_round_trip_through_msgpack() -> None:
    # What a peer actually sends: msgpack turns a tuple into a list and keeps bools as bools.
    (value,) = decode(encode_frame((int(Kind.ACK), 0, True)))
    with pytest.raises(RemoteProtocolError, match=r"Ack\.txid"):
        parse_message(value)


def test_long_values_are_shortened_in_the_message() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(with_field(3, ["x" * 1000]))
    assert len(str(info.value)) < 200
    assert str(info.value).startswith("Hello.cluster: unexpected value [")


def test_kind_tags_are_stable() -> None:
    # The wire format: changing a tag breaks every deployed peer.
    assert {k.name: k.value for k in Kind if k.value in REPLICATION_KINDS.values()} == (
        REPLICATION_KINDS
    )
    assert msgpack.unpackb(m.Ack(0, 1).encode()[4:]) == [8, 0, 1]
