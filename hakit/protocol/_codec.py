"""Length-prefixed msgpack frames.

A frame is a 4-byte big-endian payload length followed by one msgpack value. The decoder is
fed arbitrary slices of a byte stream (it never sees sockets) and yields complete values; a
frame announced larger than ``max_frame_size`` is refused before it is buffered, so a hostile
peer cannot make us allocate without bound.

Decoding is bounded too (`DecodeLimits`): msgpack turns every byte of a frame into up to 64
bytes of Python objects (an empty array is one byte on the wire, a 56-byte list in memory), so
a 16 MiB frame of empty arrays would cost a gigabyte and seconds of CPU. A connection whose
peer is not trusted yet (a handshake, a channel) decodes with small limits on array and map
lengths and on the number of containers per frame, checked as msgpack builds them, so such a
frame is refused after a few thousand objects.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from ._errors import RemoteProtocolError

#: The largest frame payload accepted by default (16 MiB).
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024

_PREFIX = 4
#: A frame's length prefix, read in place: ``size_prefix(buffer, offset)[0]``. Cheaper than
#: ``int.from_bytes`` of a slice, which makes a bytes object per frame.
size_prefix = struct.Struct(">I").unpack_from


#: One reusable packer: `Packer.pack` is about 3x cheaper than `msgpack.packb`, which builds a
#: new packer per call. It resets itself after every value, and after an error too.
_pack = msgpack.Packer(use_bin_type=True).pack


def pack(value: Any) -> bytes:
    """Encode one value as msgpack (bytes stay bin, str stays str)."""
    return _pack(value)  # type: ignore[no-any-return]


def frame(payload: bytes) -> bytes:
    """Prefix an encoded msgpack payload with its length, making one frame."""
    return len(payload).to_bytes(_PREFIX, "big") + payload


def encode_frame(value: Any) -> bytes:
    """Encode one value as a complete frame."""
    return frame(pack(value))


def array_header(length: int) -> bytes:
    """Return the msgpack header of an array of `length` elements.

    Lets a sender splice already-packed elements into one array without re-encoding them,
    which is how batches of transactions are framed.
    """
    if length < 16:
        return bytes((0x90 | length,))
    if length < 0x10000:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """How much one frame may make the decoder allocate.

    Attributes:
        max_frame_size: the largest payload accepted, in bytes.
        max_array_len: the most elements one array may have (None: msgpack's own limit, the
            frame's length).
        max_map_len: the most pairs one map may have (None: msgpack's own limit).
        max_containers: the most arrays and maps one frame may hold, all levels counted
            (None: no limit). Without it, nesting defeats the per-array limits.
        raw_kinds: frames of messages of these kinds (the positive fixint that opens the
            message array) are not decoded: their payload is returned as `bytes`, for a
            receiver that decodes a large batch piece by piece and so never holds all of it
            decoded at once (see `hakit.protocol._messages.PackedTxns`). Only without array,
            map or container bounds: the receiver's own decoding then has msgpack's limits,
            as a whole frame would.
    """

    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_array_len: int | None = None
    max_map_len: int | None = None
    max_containers: int | None = None
    raw_kinds: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.max_frame_size <= 0:
            raise ValueError("max_frame_size must be positive")
        for name in ("max_array_len", "max_map_len", "max_containers"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
        if self.raw_kinds and (
            self.max_containers is not None
            or self.max_array_len is not None
            or self.max_map_len is not None
            or not all(type(k) is int and 0 <= k < 0x80 for k in self.raw_kinds)
        ):
            raise ValueError("raw_kinds are positive fixints, for limits without array bounds")

    def bounded(self, max_frame_size: int) -> DecodeLimits:
        """Return these limits with a frame size no larger than `max_frame_size`."""
        if self.max_frame_size <= max_frame_size:
            return self
        return DecodeLimits(
            max_frame_size, self.max_array_len, self.max_map_len, self.max_containers,
            self.raw_kinds,
        )  # fmt: skip


#: Limits of the first frame of an incoming connection (`Hello`, `Cancel`, `ChannelHello`) and
#: of what an attached replica sends its master (acks, keepalives, force-master requests): small
#: messages from a peer not trusted yet. The largest is a `Hello` with a full history (256
#: entries of two scalars, see `_history.MAX_HISTORY`); the 64 KiB frame size alone bounds a
#: decode to a few megabytes.
HANDSHAKE_LIMITS = DecodeLimits(
    max_frame_size=64 * 1024, max_array_len=1024, max_map_len=64, max_containers=1024
)

#: The most parts a channel message or answer may have.
MAX_CHANNEL_PARTS = 65_536

#: Limits of channel traffic: a message is a few scalars and one array of bytes parts, so a
#: frame needs few containers; parts are bin, which costs what it weighs. Worst case, a frame
#: of these limits holds 16 arrays of 65,536 small values: about 60 MB for one decode.
CHANNEL_LIMITS = DecodeLimits(max_array_len=MAX_CHANNEL_PARTS, max_map_len=64, max_containers=16)

_Unpack = Callable[[bytes | bytearray | memoryview], Any]


def _unpacker(limits: DecodeLimits) -> _Unpack:
    """Return a function decoding one payload within `limits`."""
    kwargs: dict[str, Any] = dict(raw=False, strict_map_key=False, use_list=True)
    if limits.max_array_len is not None:
        kwargs["max_array_len"] = limits.max_array_len
    if limits.max_map_len is not None:
        kwargs["max_map_len"] = limits.max_map_len
    unpackb = msgpack.unpackb
    budget = limits.max_containers
    raw = limits.raw_kinds
    if raw:

        def unpack_or_keep(payload: bytes | bytearray | memoryview) -> Any:
            # [kind, ...] opens with an array header (fixarray, array 16 or 32), then the
            # kind as a positive fixint (as `raw_kinds` must be).
            head = payload[0] if payload else 0
            at = 1 if head & 0xF0 == 0x90 else 3 if head == 0xDC else 5 if head == 0xDD else 0
            if at and len(payload) > at and payload[at] in raw:
                return bytes(payload)
            return unpackb(payload, **kwargs)

        return unpack_or_keep
    if budget is None:
        return lambda payload: unpackb(payload, **kwargs)

    def unpack(payload: bytes | bytearray | memoryview) -> Any:
        if len(payload) <= budget:
            # Every array or map takes at least one byte: a payload this short cannot hold
            # more than the budget, so it needs no counting (the usual, small frame).
            return unpackb(payload, **kwargs)
        # msgpack calls the hooks as it completes each array and map, so a frame of many
        # small containers is stopped once it passes the budget, not after it was built.
        left = budget

        def count(container: Any) -> Any:
            nonlocal left
            left -= 1
            if left < 0:
                raise ValueError(f"more than {budget} arrays and maps in one frame")
            return container

        return unpackb(payload, list_hook=count, object_hook=count, **kwargs)

    return unpack


class FrameDecoder:
    """Turn a byte stream, fed in pieces of any size, into decoded msgpack values.

    Args:
        max_frame_size: the largest payload accepted; a larger announced length raises
            `RemoteProtocolError` at once.
        limits: bounds on what one frame may decode to (default: only `max_frame_size`);
            its frame size is capped at `max_frame_size`.

    Attributes:
        buffered: how many received bytes are waiting for the rest of their frame (read
            only). A plain attribute, kept up to date, not a property: a reader looks at
            it after every frame.
        broken: the error that ended the framing, once a frame was oversized or undecodable
            (read only); `drain` raises it from then on. None while the stream is sound.
    """

    def __init__(
        self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, *, limits: DecodeLimits | None = None
    ) -> None:
        if max_frame_size <= 0:
            raise ValueError("max_frame_size must be positive")
        self._ceiling = max_frame_size
        # Bytes as received while they hold whole frames (no copy); a bytearray once a frame
        # is split across reads.
        self._buffer: bytes | bytearray = b""
        self.buffered = 0
        self.broken: RemoteProtocolError | None = None
        self.set_limits(limits or DecodeLimits(max_frame_size))

    @property
    def limits(self) -> DecodeLimits:
        """The limits in force."""
        return self._limits

    def set_limits(self, limits: DecodeLimits) -> None:
        """Change the limits for the frames still to come (capped at the decoder's maximum).

        A connection decodes its first frame with small limits, then raises them once the
        peer said what it is.
        """
        self._limits = limits.bounded(self._ceiling)
        self.max_frame_size = self._limits.max_frame_size
        self._unpack = _unpacker(self._limits)

    def clear(self) -> None:
        """Drop whatever is buffered (the connection is over: free its memory now)."""
        self._buffer = b""
        self.buffered = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        buf = self._buffer
        if not buf:
            # The usual read: whole frames. Kept as they are, to be decoded without a copy.
            self._buffer = buf = data if type(data) is bytes else bytes(data)
        elif type(buf) is bytes:
            self._buffer = buf = bytearray(buf) + data
        else:
            buf += data
        self.buffered = len(buf)

    def decode(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """`feed` the bytes of one read and `drain`: the values of the frames now complete.

        Raises:
            RemoteProtocolError: as `drain`.
        """
        if self._buffer or self.broken is not None or type(data) is not bytes:
            self.feed(data)
            return self.drain()
        end = len(data)
        if end >= _PREFIX:
            size = size_prefix(data)[0]
            if size + _PREFIX == end and size <= self.max_frame_size:
                # The usual read: exactly one frame, after nothing. Decoded as it is, not
                # buffered, copied or viewed (the general path pins the same values).
                try:
                    return [self._unpack(data[_PREFIX:])]
                except Exception as exc:  # msgpack raises several unrelated types
                    self.broken = RemoteProtocolError(f"frame is not valid msgpack: {exc}")
                    raise self.broken from None
        self._buffer = data
        self.buffered = end
        return self.drain()

    def drain(self) -> list[Any]:
        """Return the values of every complete frame now buffered, in order.

        Raises:
            RemoteProtocolError: a frame is oversized or its payload is not one valid
                msgpack value. Frames decoded before the bad one are returned first and the
                error is raised by the next call; the decoder stays broken afterwards, since a
                byte stream cannot be resynchronised once its framing is lost.
        """
        if self.broken is not None:
            raise self.broken
        buf = self._buffer
        end = len(buf)
        if end < _PREFIX:
            return []
        unpack = self._unpack
        if type(buf) is bytes:
            size = size_prefix(buf)[0]
            if size + _PREFIX == end and size <= self.max_frame_size:
                # Exactly one frame (fed whole, not through `decode`).
                self._buffer = b""
                self.buffered = 0
                try:
                    return [unpack(buf[_PREFIX:])]
                except Exception as exc:  # msgpack raises several unrelated types
                    self.broken = RemoteProtocolError(f"frame is not valid msgpack: {exc}")
                    raise self.broken from None
        out: list[Any] = []
        pos = 0
        with memoryview(buf) as view:  # payloads are decoded in place, not copied out
            while end - pos >= _PREFIX:
                size = size_prefix(view, pos)[0]
                if size > self.max_frame_size:
                    self.broken = RemoteProtocolError(
                        f"frame of {size} bytes exceeds the maximum of {self.max_frame_size}"
                    )
                    break
                if end - pos - _PREFIX < size:
                    break
                start = pos + _PREFIX
                pos = start + size
                try:
                    out.append(unpack(view[start:pos]))
                except Exception as exc:  # msgpack raises several unrelated types
                    self.broken = RemoteProtocolError(f"frame is not valid msgpack: {exc}")
                    break
        if self.broken is not None:
            self._buffer = b""
            self.buffered = 0
            if not out:
                raise self.broken
        elif pos == end:
            self._buffer = b""
            self.buffered = 0
        elif pos:
            if isinstance(buf, bytearray):
                del buf[:pos]
            else:
                self._buffer = buf = buf[pos:]
            self.buffered = len(buf)
        return out
