"""Bare length-prefixed msgpack framing for the ceilings, written independently of hakit.

Same wire shape as hakit (4-byte big-endian length, one msgpack value), so a ceiling moves
the same bytes per transaction as hakit does, minus hakit's protocol and bookkeeping.
"""

from __future__ import annotations

from typing import Any

import msgpack
import trio

_packb = msgpack.packb
_unpackb = msgpack.unpackb
RECEIVE_SIZE = 256 * 1024


def frame(value: Any) -> bytes:
    payload: bytes = _packb(value, use_bin_type=True)
    return len(payload).to_bytes(4, "big") + payload


class FrameReader:
    """Reads every complete frame that has arrived, decoding each one."""

    __slots__ = ("_buf", "stream")

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self._buf = bytearray()

    async def receive(self) -> list[Any]:
        """Return at least one decoded value; raise EOFError at a clean end of stream."""
        while True:
            values = self._drain()
            if values:
                return values
            data = await self.stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise EOFError("peer closed the stream")
            self._buf += data

    def _drain(self) -> list[Any]:
        buf = self._buf
        end = len(buf)
        pos = 0
        out: list[Any] = []
        with memoryview(buf) as view:
            while end - pos >= 4:
                size = int.from_bytes(view[pos : pos + 4], "big")
                if end - pos - 4 < size:
                    break
                start = pos + 4
                pos = start + size
                out.append(_unpackb(view[start:pos], raw=False, strict_map_key=False))
        if pos:
            del buf[:pos]
        return out


class LineReader:
    """Reads text lines from a trio byte stream (the child-control pipes)."""

    __slots__ = ("_buf", "stream")

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self._buf = bytearray()

    async def readline(self) -> str:
        """Return the next line without its newline; raise EOFError when the pipe closes."""
        while True:
            index = self._buf.find(b"\n")
            if index >= 0:
                line = bytes(self._buf[:index])
                del self._buf[: index + 1]
                return line.decode()
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("pipe closed")
            self._buf += data
