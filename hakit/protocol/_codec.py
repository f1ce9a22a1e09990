"""Length-prefixed msgpack frames.

A frame is a 4-byte big-endian payload length followed by one msgpack value. The decoder is
fed arbitrary slices of a byte stream (it never sees sockets) and yields complete values; a
frame announced larger than ``max_frame_size`` is refused before it is buffered, so a hostile
peer cannot make us allocate without bound.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ._errors import RemoteProtocolError

#: The largest frame payload accepted by default (16 MiB).
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024

_PREFIX = 4


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


def _unpack(payload: bytes | bytearray | memoryview) -> Any:
    return msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=True)


class FrameDecoder:
    """Turn a byte stream, fed in pieces of any size, into decoded msgpack values.

    Args:
        max_frame_size: the largest payload accepted; a larger announced length raises
            `RemoteProtocolError` at once.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size <= 0:
            raise ValueError("max_frame_size must be positive")
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._broken: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """How many received bytes are waiting for the rest of their frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        self._buffer += data

    def drain(self) -> list[Any]:
        """Return the values of every complete frame now buffered, in order.

        Raises:
            RemoteProtocolError: a frame is oversized or its payload is not one valid
                msgpack value. Frames decoded before the bad one are returned first and the
                error is raised by the next call; the decoder stays broken afterwards, since a
                byte stream cannot be resynchronised once its framing is lost.
        """
        if self._broken is not None:
            raise self._broken
        buf = self._buffer
        out: list[Any] = []
        pos = 0
        end = len(buf)
        while end - pos >= _PREFIX:
            size = int.from_bytes(buf[pos : pos + _PREFIX], "big")
            if size > self.max_frame_size:
                self._broken = RemoteProtocolError(
                    f"frame of {size} bytes exceeds the maximum of {self.max_frame_size}"
                )
                break
            if end - pos - _PREFIX < size:
                break
            start = pos + _PREFIX
            pos = start + size
            try:
                out.append(_unpack(buf[start:pos]))
            except Exception as exc:  # msgpack raises several unrelated types
                self._broken = RemoteProtocolError(f"frame is not valid msgpack: {exc}")
                break
        if self._broken is not None:
            buf.clear()
            if not out:
                raise self._broken
        elif pos:
            del buf[:pos]
        return out
