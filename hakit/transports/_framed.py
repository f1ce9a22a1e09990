"""Frames over a trio stream: send pre-encoded frames, receive decoded values in batches."""

from __future__ import annotations

from typing import Any

import trio

from hakit.protocol import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, RemoteProtocolError


class FramedStream(trio.abc.AsyncResource):
    """A byte stream carrying length-prefixed msgpack frames (see `hakit.protocol`).

    Sending takes bytes that are already framed, so a sender can batch many frames into one
    write; receiving returns every complete frame that has arrived, so a busy link is read in
    batches rather than one value per call.

    Args:
        stream: the connected stream; the `FramedStream` owns it from now on.
        max_frame_size: the largest frame payload accepted from the peer.
        receive_size: how many bytes to ask the stream for per read.

    Attributes:
        stream: the underlying stream.
        receive_size: how many bytes to ask the stream for per read; may be changed between
            reads (a connection whose use is known after its first frame, say).
    """

    __slots__ = ("_decoder", "receive_size", "stream")

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        receive_size: int = 256 * 1024,
    ) -> None:
        if receive_size < 1:
            raise ValueError("receive_size must be at least 1")
        self.stream = stream
        self._decoder = FrameDecoder(max_frame_size)
        self.receive_size = receive_size

    def __repr__(self) -> str:
        return f"<FramedStream over {self.stream!r}>"

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one frame, or several concatenated, with a single write.

        Args:
            data: complete frames, as made by `hakit.protocol.encode_frame`.
        """
        await self.stream.send_all(data)

    async def receive(self) -> list[Any]:
        """Wait for at least one complete frame and return the values of all that arrived.

        Returns:
            The decoded values, in order; never empty.

        Raises:
            EOFError: the peer closed the connection between two frames.
            hakit.protocol.RemoteProtocolError: the peer closed the connection in the middle
                of a frame, or sent an oversized or undecodable frame. The framing is lost
                for good: every later call raises it again.
        """
        decoder = self._decoder
        # Raises the error of a bad frame that followed the frames returned by the last call.
        values = decoder.drain()
        receive_some = self.stream.receive_some
        size = self.receive_size
        while not values:
            data = await receive_some(size)
            if not data:
                if decoder.buffered:
                    raise RemoteProtocolError("connection closed in the middle of a frame")
                raise EOFError("connection closed by the peer")
            decoder.feed(data)
            values = decoder.drain()
        return values

    async def aclose(self) -> None:
        """Close the underlying stream."""
        await self.stream.aclose()
