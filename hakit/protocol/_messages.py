"""Wire messages of the replication protocol.

Every message is a frozen, slotted dataclass whose first field is the sender's ``generation``
(the fencing counter, carried in every frame). On the wire a message is the msgpack array
``[kind, generation, *fields]``; `Kind` maps tags to classes in one place. Transactions travel
in batches (`Txns`) whose entries are packed once by the master and spliced into every
replica's frame without re-encoding.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import msgpack

from ._codec import array_header, frame, pack
from ._errors import RemoteProtocolError

#: The replication protocol version; a peer with another version is refused at the handshake.
#: Version 2 added history ids to `Hello` and `Welcome`.
PROTOCOL_VERSION = 2

#: The largest counter (generation, txid) a frame may carry: SQLite's largest integer, so that
#: whatever a peer sends can be persisted. Larger values are refused where frames are parsed.
MAX_COUNTER = 2**63 - 1

#: A transaction entry on the wire: ``[txid, generation, ops]``; an op is ``[0, key, value]``
#: (put) or ``[1, key]`` (delete), a key being ``str`` or ``bytes``.
Entry = list[Any]
#: The op tags of an entry (the same values as `hakit.storage.PUT` and `DELETE`).
OP_PUT = 0
OP_DELETE = 1


def op_error(op: Any) -> str | None:
    """Return why `op` is not a well-formed put or delete, or None if it is one."""
    if not isinstance(op, list) or not op:
        return f"an op must be a non-empty array, not {_short(op)}"
    tag = op[0]
    if type(tag) is not int or tag not in (OP_PUT, OP_DELETE):
        return f"unknown op {_short(tag)}"
    if len(op) != (3 if tag == OP_PUT else 2):
        return f"{'put' if tag == OP_PUT else 'delete'} op of {len(op)} items"
    if not isinstance(op[1], str | bytes):
        return f"key {_short(op[1])} is neither str nor bytes"
    return None


class Kind(enum.IntEnum):
    """Message type tags."""

    HELLO = 1
    WELCOME = 2
    REJECT = 3
    SNAPSHOT_BEGIN = 4
    SNAPSHOT_CHUNK = 5
    SNAPSHOT_END = 6
    TXNS = 7
    ACK = 8
    KEEPALIVE = 9
    DETACH = 10
    BYE = 11
    PROMOTE_REQUEST = 12
    PROMOTE_READY = 13
    KILL_MASTER = 14
    MASTER_KILLED = 15
    MASTER_CHANGED = 16
    CANCEL = 17
    CHANNEL_HELLO = 20
    CHANNEL_MSG = 21
    CHANNEL_REPLY = 22
    CHANNEL_FAIL = 23


_ACK = int(Kind.ACK)
_TXNS = int(Kind.TXNS)
#: Bytes after the tag of msgpack's uint 8, 16, 32 and 64.
_UINT_WIDTHS = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}


class HelloFlags(enum.IntFlag):
    """Flags a replica sends in its `Hello`."""

    NONE = 0
    FORCE_MASTER = 1
    FORCE_SYNC = 2


class SyncKind(enum.IntEnum):
    """How the master brings a connecting replica up to date."""

    EQUAL = 0  #: same history, same txid: nothing to load
    INCREMENTAL = 1  #: replay the missed transactions from the master's log
    FULL = 2  #: load a full snapshot, then the transactions committed after it


@dataclass(frozen=True, slots=True)
class Message:
    """Base class of the wire messages."""

    KIND: ClassVar[Kind]
    generation: int

    def to_wire(self) -> list[Any]:
        """Return the msgpack-ready array form ``[kind, generation, *fields]``."""
        return [self.KIND, *(getattr(self, name) for name in _FIELDS[type(self)])]

    def encode(self) -> bytes:
        """Return this message as one complete frame."""
        return frame(pack(self.to_wire()))


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Replica -> master: who I am and what I hold."""

    KIND = Kind.HELLO
    version: int
    cluster: str
    node: str
    txid: int
    last_generation: int  #: generation of the replica's last transaction (its history)
    flags: int
    address: str | None  #: where the replica would serve replicas if it became master
    #: the replica's history, ``[[history_id, first_txid], ...]`` (see `hakit.protocol._history`)
    history: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Welcome(Message):
    """Master -> replica: handshake accepted, and how the replica will be synced."""

    KIND = Kind.WELCOME
    master: str
    txid: int
    sync: int  #: a `SyncKind`
    keepalive_interval: float
    history: list[Any] = field(default_factory=list)  #: the master's history
    #: the last txid the replica shares with the master: a `FULL` sync discards its later ones
    common: int = 0


@dataclass(frozen=True, slots=True)
class Reject(Message):
    """Master -> replica: handshake refused; the connection closes after it."""

    KIND = Kind.REJECT
    stop_reason: int
    detail: str


@dataclass(frozen=True, slots=True)
class SnapshotBegin(Message):
    """Master -> replica: a full load starts; it reflects the database at `txid`."""

    KIND = Kind.SNAPSHOT_BEGIN
    txid: int
    last_generation: int
    count: int


@dataclass(frozen=True, slots=True)
class SnapshotChunk(Message):
    """Master -> replica: part of the snapshot, as a flat ``[k1, v1, k2, v2, ...]`` list."""

    KIND = Kind.SNAPSHOT_CHUNK
    items: list[Any]


@dataclass(frozen=True, slots=True)
class SnapshotEnd(Message):
    """Master -> replica: the snapshot is complete."""

    KIND = Kind.SNAPSHOT_END
    txid: int
    count: int


@dataclass(frozen=True, slots=True)
class Txns(Message):
    """Master -> replica: committed transactions, in txid order."""

    KIND = Kind.TXNS
    entries: list[Entry]

    def to_wire(self) -> list[Any]:  # entries are spread, not nested
        return [self.KIND, self.generation, *self.entries]


def _entry_unpacker(payload: bytes) -> Any:
    # The same options (and so the same msgpack limits, from the payload's length) as the
    # frame decoder's unpackb.
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=False, use_list=True, max_buffer_size=max(len(payload), 1)
    )
    unpacker.feed(payload)
    return unpacker


@dataclass(frozen=True, slots=True)
class PackedTxns(Message):
    """A `Txns` message received with its entries still packed (`DecodeLimits.raw_kinds`).

    `batches` decodes the entries a few at a time and hands them over with their packed
    bytes: a receiver applies a large batch without ever holding all of it decoded (a
    batch decoded whole is thousands of lists alive at once, which the garbage collector
    promotes and then sweeps in full collections), and keeps the entries as the master
    packed them instead of packing them again.
    """

    KIND = Kind.TXNS
    payload: bytes  #: the message's msgpack payload (no length prefix)
    start: int  #: the offset of the first entry in `payload`
    count: int  #: how many entries follow

    @property
    def entries(self) -> list[Entry]:
        """Every entry, decoded (all at once)."""
        return [entry for batch, _blob, _last in self.batches(self.count or 1) for entry in batch]

    def to_wire(self) -> list[Any]:
        return [self.KIND, self.generation, *self.entries]

    def encode(self) -> bytes:
        return frame(self.payload)

    def decode(self) -> tuple[list[Any], bytes]:
        """Every entry, and their bytes back to back (for a batch small enough to decode whole).

        Raises:
            RemoteProtocolError: an entry is not valid msgpack, or bytes follow the last one.
        """
        blob = self.payload[self.start :]
        return decode_entries(blob, self.count), blob

    def batches(self, size: int) -> Iterator[tuple[list[Any], bytes, bool]]:
        """Yield ``(entries, packed, last)`` for up to `size` entries at a time, in order.

        Each batch is decoded only when asked for; `packed` is its entries' bytes, back to
        back, as the master packed them.

        Raises:
            RemoteProtocolError: an entry is not valid msgpack, or bytes follow the last one.
        """
        payload = self.payload
        if self.count <= size:
            yield *self.decode(), True
            return
        try:
            unpacker = _entry_unpacker(payload)
            unpacker.read_array_header()
            unpacker.skip()  # kind
            unpacker.skip()  # generation
            unpack = unpacker.unpack
            pos, left = self.start, self.count
            while True:
                entries = [unpack() for _ in range(min(size, left))]
                end = unpacker.tell()
                left -= len(entries)
                if not left and end != len(payload):
                    raise ValueError(f"{len(payload) - end} bytes after the last entry")
                yield entries, payload[pos:end], not left
                if not left:
                    return
                pos = end
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            # Unpacker raises OutOfData (an UnpackException), ValueError and others.
            raise RemoteProtocolError(f"Txns frame is not valid msgpack: {exc}") from None


def txns_head(payload: bytes) -> tuple[int, int, int] | None:
    """Read the usual head of a `Txns` payload: ``(generation, start, count)``, or None.

    The usual head is an array header, the kind (a fixint) and the generation as
    msgpack-python packs a non-negative int (fixint or uint 8/16/32/64); `start` is the
    offset of the first entry and `count` how many follow. None for anything else, which
    `parse_packed_txns` reads with msgpack (and refuses if it is no `Txns`).
    """
    size = len(payload)
    head = payload[0] if size else 0
    at = 1 if head & 0xF0 == 0x90 else 3 if head == 0xDC else 5 if head == 0xDD else 0
    if at and size > at + 1 and payload[at] == _TXNS:
        length = head & 0x0F if at == 1 else int.from_bytes(payload[1:at], "big")
        first = payload[at + 1]
        width = 0 if first < 0x80 else _UINT_WIDTHS.get(first, -1)
        start = at + 2 + width
        if length >= 2 and width >= 0 and size >= start:
            generation = first if not width else int.from_bytes(payload[at + 2 : start], "big")
            if generation <= MAX_COUNTER:
                return generation, start, length - 2
    return None


def decode_entries(blob: bytes, count: int) -> list[Any]:
    """Decode `count` entries packed back to back in `blob` (which holds nothing else).

    Raises:
        RemoteProtocolError: an entry is not valid msgpack, or bytes follow the last one.
    """
    # One C call, decoding the entries' bytes as an array; a commit's frame is usually one
    # entry, which needs no array header (and no copy of the bytes to put one in front).
    try:
        if count == 1:
            return [msgpack.unpackb(blob, raw=False, strict_map_key=False)]
        entries = msgpack.unpackb(array_header(count) + blob, raw=False, strict_map_key=False)
    except msgpack.ExtraData as exc:
        detail = f"{len(exc.extra)} bytes after the last entry"
        raise RemoteProtocolError(f"Txns frame is not valid msgpack: {detail}") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise RemoteProtocolError(f"Txns frame is not valid msgpack: {exc}") from None
    return entries  # type: ignore[no-any-return]


def parse_packed_txns(payload: bytes) -> PackedTxns:
    """Read the head of a `Txns` payload left undecoded; its entries stay packed.

    Raises:
        RemoteProtocolError: the payload is no `Txns` message.
    """
    head = txns_head(payload)
    if head is not None:
        return PackedTxns(head[0], payload, head[1], head[2])
    # Anything else (another encoder's choices, or not a Txns at all) is read by msgpack.
    try:
        unpacker = _entry_unpacker(payload)
        length = unpacker.read_array_header()
        kind = unpacker.unpack() if length > 0 else None
        value = unpacker.unpack() if length > 1 else None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise RemoteProtocolError(f"frame is not valid msgpack: {exc}") from None
    if length < 2:
        raise RemoteProtocolError(f"frame is not a message array of 2 items or more ({length})")
    if type(kind) is not int or kind != Kind.TXNS:
        raise RemoteProtocolError(f"only Txns messages are read packed, not kind {_short(kind)}")
    if type(value) is not int or not 0 <= value <= MAX_COUNTER:
        raise RemoteProtocolError(f"Txns: bad generation {_short(value)}")
    return PackedTxns(value, payload, unpacker.tell(), length - 2)


@dataclass(frozen=True, slots=True)
class Ack(Message):
    """Replica -> master: every transaction up to `txid` is applied (cumulative)."""

    KIND = Kind.ACK
    txid: int

    def encode(self) -> bytes:
        """Return this message as one complete frame."""
        return encode_ack(self.generation, self.txid)


# A packer of its own, called directly: `pack` would be one more call per ack.
_pack_ack = msgpack.Packer(use_bin_type=True).pack


def encode_ack(generation: int, txid: int) -> bytes:
    """The frame of ``Ack(generation, txid)``, made without the message object.

    Every replica sends one per commit: packed directly, not through `to_wire`.
    """
    payload: bytes = _pack_ack([_ACK, generation, txid])
    return len(payload).to_bytes(4, "big") + payload


@dataclass(frozen=True, slots=True)
class KeepAlive(Message):
    """Master -> replica: I am alive; my last txid is `txid`. The replica answers with an Ack."""

    KIND = Kind.KEEPALIVE
    txid: int


@dataclass(frozen=True, slots=True)
class Detach(Message):
    """Master -> replica: the master ends this replica's replication."""

    KIND = Kind.DETACH
    detail: str


@dataclass(frozen=True, slots=True)
class Bye(Message):
    """Replica -> master: the replica stops (`stop_reason`) and closes the link."""

    KIND = Kind.BYE
    stop_reason: int
    detail: str


@dataclass(frozen=True, slots=True)
class PromoteRequest(Message):
    """Replica -> master: begin force master: pause commits and tell me the final txid."""

    KIND = Kind.PROMOTE_REQUEST


@dataclass(frozen=True, slots=True)
class PromoteReady(Message):
    """Master -> replica: commits are paused; every committed transaction is <= `txid`."""

    KIND = Kind.PROMOTE_READY
    txid: int


@dataclass(frozen=True, slots=True)
class KillMaster(Message):
    """Replica -> master: I hold everything; step down. `generation` is the new generation."""

    KIND = Kind.KILL_MASTER
    node: str
    address: str | None


@dataclass(frozen=True, slots=True)
class MasterKilled(Message):
    """Master -> promoting replica: I stepped down; you are the master of `generation`."""

    KIND = Kind.MASTER_KILLED


@dataclass(frozen=True, slots=True)
class MasterChanged(Message):
    """Old master -> its other replicas: follow the new master at `address`."""

    KIND = Kind.MASTER_CHANGED
    node: str
    address: str | None


@dataclass(frozen=True, slots=True)
class Cancel(Message):
    """Anyone -> a replica's cancel point: stop replication now."""

    KIND = Kind.CANCEL
    node: str


_CHANNEL_MSG = int(Kind.CHANNEL_MSG)
_CHANNEL_REPLY = int(Kind.CHANNEL_REPLY)
# Requests and answers are framed once each, on every round trip: one Packer serves them all,
# where `pack` (msgpack.packb) builds a new one per call, which costs as much as the packing.
_channel_pack = msgpack.Packer(use_bin_type=True).pack


def encode_channel_msg(
    generation: int, req_id: int, flags: int, limit: int, parts: list[Any]
) -> bytes:
    """The frame of ``ChannelMsg(generation, req_id, flags, limit, parts)``, built directly."""
    payload: bytes = _channel_pack([_CHANNEL_MSG, generation, req_id, flags, limit, parts])
    return len(payload).to_bytes(4, "big") + payload


def encode_channel_reply(generation: int, req_id: int, parts: list[Any]) -> bytes:
    """The frame of ``ChannelReply(generation, req_id, parts)``, built directly."""
    payload: bytes = _channel_pack([_CHANNEL_REPLY, generation, req_id, parts])
    return len(payload).to_bytes(4, "big") + payload


@dataclass(frozen=True, slots=True)
class ChannelHello(Message):
    """First frame of a message channel connection, both ways: who I am, where, how.

    `node` and `cluster` name the sender; `version` is the `PROTOCOL_VERSION` it speaks. The
    connecting node sends it; the accepting node answers with its own, or refuses with
    a `ChannelFail` of request id 0 and closes. Channel connections are separate from
    replication links (Berkeley DB's APP_CONNECTION), so application traffic never queues
    behind transactions.
    """

    KIND = Kind.CHANNEL_HELLO
    node: str
    cluster: str
    version: int


@dataclass(frozen=True, slots=True)
class ChannelMsg(Message):
    """An application message: one-way when `req_id` is 0, else a request to answer.

    `flags` are `hakit.protocol.ChannelFlags` (MULTIPLE: a multi-part answer is accepted;
    LIMIT: the answer may hold at most `limit` bytes), so the responder can check an answer
    before sending it, as Berkeley DB does.
    """

    KIND = Kind.CHANNEL_MSG
    req_id: int
    flags: int
    limit: int
    parts: list[Any]

    def to_wire(self) -> list[Any]:  # once per request: skip the generic field walk
        return [_CHANNEL_MSG, self.generation, self.req_id, self.flags, self.limit, self.parts]

    def encode(self) -> bytes:
        return encode_channel_msg(self.generation, self.req_id, self.flags, self.limit, self.parts)


@dataclass(frozen=True, slots=True)
class ChannelReply(Message):
    """The answer to request `req_id`."""

    KIND = Kind.CHANNEL_REPLY
    req_id: int
    parts: list[Any]

    def to_wire(self) -> list[Any]:  # once per answer: skip the generic field walk
        return [_CHANNEL_REPLY, self.generation, self.req_id, self.parts]

    def encode(self) -> bytes:
        return encode_channel_reply(self.generation, self.req_id, self.parts)


@dataclass(frozen=True, slots=True)
class ChannelFail(Message):
    """Request `req_id` failed on the responder (`code` is a `ChannelFailCode`).

    With `req_id` 0 it refuses the whole connection (handshake failed).
    """

    KIND = Kind.CHANNEL_FAIL
    req_id: int
    code: int
    detail: str


_CLASSES: dict[int, type[Message]] = {
    cls.KIND: cls
    for cls in (
        Hello, Welcome, Reject, SnapshotBegin, SnapshotChunk, SnapshotEnd, Txns, Ack,
        KeepAlive, Detach, Bye, PromoteRequest, PromoteReady, KillMaster, MasterKilled,
        MasterChanged, Cancel, ChannelHello, ChannelMsg, ChannelReply, ChannelFail,
    )
}  # fmt: skip
_FIELDS: dict[type[Message], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in _CLASSES.values()
}


_WIRE_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "str": (str,),
    "float": (int, float),
    "str | None": (str, type(None)),
    "list[Any]": (list,),
    "list[Entry]": (list,),
}
_TYPES: dict[type[Message], tuple[tuple[type, ...], ...]] = {
    cls: tuple(_WIRE_TYPES[str(f.type)] for f in fields(cls)) for cls in _CLASSES.values()
}


def parse_message(value: Any) -> Message:
    """Turn one decoded frame into a `Message`.

    A payload left undecoded (`bytes`, see `DecodeLimits.raw_kinds`) must be a `Txns`
    message: it becomes a `PackedTxns`.

    Raises:
        RemoteProtocolError: the value is not a known message with the right fields.
    """
    if type(value) is bytes:
        return parse_packed_txns(value)
    if not isinstance(value, list) or len(value) < 2:
        raise RemoteProtocolError(f"frame is not a message array: {_short(value)}")
    kind, generation = value[0], value[1]
    cls = _CLASSES.get(kind) if type(kind) is int else None  # a bool is not a kind
    if cls is None:
        raise RemoteProtocolError(f"unknown message kind {_short(kind)}")
    if type(generation) is not int or not 0 <= generation <= MAX_COUNTER:
        raise RemoteProtocolError(f"{cls.__name__}: bad generation {_short(generation)}")
    if cls is Txns:
        return Txns(generation, value[2:])
    if cls is Ack and len(value) == 3:
        # The message a master reads most (one per replica per commit): its one field is
        # checked here as the general loop below would; anything else gets the loop's verdict.
        txid = value[2]
        if type(txid) is int and 0 <= txid <= MAX_COUNTER:
            return Ack(generation, txid)
    types = _TYPES[cls]
    if len(value) != len(types) + 1:
        raise RemoteProtocolError(
            f"{cls.__name__}: expected {len(types)} fields, got {len(value) - 1}"
        )
    for name, accepted, field_value in zip(_FIELDS[cls], types, value[1:], strict=True):
        if (
            not isinstance(field_value, accepted)
            or isinstance(field_value, bool)
            or (type(field_value) is int and not 0 <= field_value <= MAX_COUNTER)
        ):
            raise RemoteProtocolError(
                f"{cls.__name__}.{name}: unexpected value {_short(field_value)}"
            )
    return cls(*value[1:])


def pack_entry(txid: int, generation: int, ops: list[Any]) -> bytes:
    """Pack one transaction entry once, to be spliced into many `Txns` frames."""
    return pack([txid, generation, ops])


def encode_txns(generation: int, packed_entries: list[bytes]) -> bytes:
    """Frame a `Txns` message from entries already packed with `pack_entry`."""
    payload = b"".join(
        (array_header(len(packed_entries) + 2), pack(int(Kind.TXNS)), pack(generation),
         *packed_entries)
    )  # fmt: skip
    return frame(payload)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
