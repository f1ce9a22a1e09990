"""Frames over a trio stream: send pre-encoded frames, receive decoded values in batches."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, Protocol

import trio

from hakit.protocol import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, RemoteProtocolError
from hakit.protocol._codec import DecodeLimits


class ReceiveBudget:
    """Bytes of unfinished frames that several connections may hold at once, all counted.

    A peer that sends the first bytes of a large frame and then nothing more makes the
    receiver keep them; many such peers would add up without bound. Connections sharing a
    budget charge what they buffer, and one that would exceed the budget is refused.

    Args:
        limit: the most bytes all the connections may buffer together.
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a receive budget must be at least 1 byte")
        self.limit = limit
        #: The bytes charged now.
        self.used = 0


class _Watchable(Protocol):
    """A stream that reads without waiting and tells a watcher when to read (``mem:``)."""

    drained: bool

    def receive_nowait(self, max_bytes: int | None = None) -> bytes | None: ...

    def set_watcher(self, watcher: Callable[[], None] | None) -> None: ...

    def wait_readable(self) -> Awaitable[None]: ...

    @property
    def readable(self) -> bool: ...

    @property
    def next_due(self) -> float | None: ...


class FramedStream(trio.abc.AsyncResource):
    """A byte stream carrying length-prefixed msgpack frames (see `hakit.protocol`).

    Sending takes bytes that are already framed, so a sender can batch many frames into one
    write; receiving returns every complete frame that has arrived, so a busy link is read in
    batches rather than one value per call.

    Args:
        stream: the connected stream; the `FramedStream` owns it from now on.
        max_frame_size: the largest frame payload accepted from the peer.
        receive_size: how many bytes to ask the stream for per read.
        limits: bounds on what one frame may decode to (see `DecodeLimits`); its frame size
            is capped at `max_frame_size`.

    Attributes:
        stream: the underlying stream.
        receive_size: how many bytes to ask the stream for per read; may be changed between
            reads (a connection whose use is known after its first frame, say).
        partial_since: when the frame now half received began to arrive (trio time), or None
            when no frame is in progress; lets an owner time out a peer that stalls mid-frame.
        drained: set by each `receive_nowait` (a stream that `can_watch`): True when it left
            nothing to read — no bytes buffered or in flight on the stream, no end of
            stream, reset or bad frame waiting to be reported — so that a call now would
            return None. A reader woken through `set_watcher` can stop there without that
            call: anything arriving later calls the watcher again. False: call again. A
            plain attribute, not a property: a reader asks after every frame.
    """

    __slots__ = (
        "_budget", "_charged", "_decoder", "_send_nowait", "_watchable", "drained",
        "partial_since", "receive_size", "stream",
    )  # fmt: skip

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        receive_size: int = 256 * 1024,
        limits: DecodeLimits | None = None,
    ) -> None:
        if receive_size < 1:
            raise ValueError("receive_size must be at least 1")
        self.stream = stream
        # A stream whose sends never block (a simulated link) can send without a checkpoint.
        self._send_nowait: Callable[[bytes], None] | None = getattr(stream, "send_nowait", None)
        # A stream that can say when to read it (a simulated link) can be read by one task
        # among many, without a task parked on each.
        self._watchable: _Watchable | None = (
            stream if hasattr(stream, "set_watcher") else None  # type: ignore[assignment]
        )
        self._decoder = FrameDecoder(max_frame_size, limits=limits)
        self.receive_size = receive_size
        self.partial_since: float | None = None
        self._budget: ReceiveBudget | None = None
        self._charged = 0
        self.drained = False

    def __repr__(self) -> str:
        return f"<FramedStream over {self.stream!r}>"

    @property
    def limits(self) -> DecodeLimits:
        """The decoding limits in force."""
        return self._decoder.limits

    def set_limits(self, limits: DecodeLimits) -> None:
        """Decode the frames still to come within `limits` (capped at `max_frame_size`)."""
        self._decoder.set_limits(limits)

    def share_budget(self, budget: ReceiveBudget) -> None:
        """Charge the bytes of unfinished frames to `budget` from now on (see `ReceiveBudget`).

        Raises:
            hakit.protocol.RemoteProtocolError: what is buffered already exceeds it.
        """
        self._release()
        self._budget = budget
        self._charge()

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one frame, or several concatenated, with a single write.

        Args:
            data: complete frames, as made by `hakit.protocol.encode_frame`.
        """
        await self.stream.send_all(data)

    @property
    def can_send_nowait(self) -> bool:
        """Whether `try_send_nowait` sends (the stream never blocks a send)."""
        return self._send_nowait is not None

    def try_send_nowait(self, data: bytes) -> bool:
        """Send at once, without a checkpoint, if the stream never blocks on a send.

        For a caller whose loop has a schedule point elsewhere (it waits for work, or for
        the peer): on a simulated link this saves a trip through the scheduler per send.

        Returns:
            True if the data was sent; False if the stream may block, so the caller must
            `await send(data)` (with whatever timeout it applies) instead.

        Raises:
            The errors of the stream's ``send_all``, when it was tried.
        """
        send = self._send_nowait
        if send is None:
            return False
        send(data)
        return True

    async def receive(self) -> list[Any]:
        """Wait for at least one complete frame and return the values of all that arrived.

        Returns:
            The decoded values, in order; never empty.

        Raises:
            EOFError: the peer closed the connection between two frames.
            hakit.protocol.RemoteProtocolError: the peer closed the connection in the middle
                of a frame, sent an oversized or undecodable frame, or its unfinished frame
                would exceed the shared receive budget. The framing is lost for good: every
                later call raises it again.
        """
        values = self._leftover()
        size = self.receive_size
        stream = self._watchable
        if values or stream is None:
            receive_some = self.stream.receive_some
            while not values:
                values = self._absorb(await receive_some(size))
            return values
        # A simulated link: read without waiting, and park on trio's trap only when there
        # is nothing (no coroutine of the stream's in between: every replica of a large
        # cluster waits here once per commit). One schedule point per call, as receive_some
        # has: the wait, or else a checkpoint split around the taking, so that a
        # cancellation never comes after bytes were taken.
        if stream.readable:
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
        else:
            await stream.wait_readable()
            waited = True
        while True:
            data = stream.receive_nowait(size)
            if data is None:
                await stream.wait_readable()
                waited = True
                continue
            values = self._absorb(data)
            if values:
                break
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return values

    @property
    def can_watch(self) -> bool:
        """Whether the stream can tell a watcher when to read (`set_watcher`)."""
        return self._watchable is not None

    def set_watcher(self, watcher: Callable[[], None] | None) -> None:
        """Have `watcher()` called when a read may find something (a ``mem:`` stream only).

        For one task that reads many connections with `receive_nowait`, as a server does
        with ``epoll`` (see `MemoryStream.set_watcher` in hakit.transports._memory).
        """
        if self._watchable is None:
            raise TypeError(f"{self.stream!r} cannot be watched")
        self._watchable.set_watcher(watcher)

    @property
    def next_due(self) -> float | None:
        """When bytes in flight become readable (watchable streams; None: nothing coming)."""
        return None if self._watchable is None else self._watchable.next_due

    def receive_nowait(self) -> list[Any] | None:
        """Return the values of the complete frames that have arrived, or None if none has.

        Only for a stream that `can_watch`. No checkpoint; otherwise as `receive`. Sets
        `drained`: a reader that finds it True need not call again to hear None.

        Raises:
            The errors of `receive`.
        """
        watchable = self._watchable
        if watchable is None:
            raise TypeError(f"{self.stream!r} cannot be read without waiting")
        decoder = self._decoder
        if decoder.buffered or decoder.broken is not None:
            values = self._leftover()
            if values:
                self.drained = False  # not known without reading the stream: read on
                return values
        # The usual call finds the decoder empty: one read, one decode; and "nothing more"
        # is the stream's answer alone, no decoder call.
        size = self.receive_size
        while True:
            data = watchable.receive_nowait(size)
            if data is None:
                self.drained = watchable.drained
                return None
            if not data:
                self._ended()
            values = decoder.decode(data)
            if values and not decoder.buffered and self._budget is None:
                self.partial_since = None  # whole frames, nothing left: `_account` in short
            else:
                self._account(values)
            if values:
                # A bad frame after these is raised by the next call: it must be made.
                self.drained = watchable.drained and decoder.broken is None
                return values

    def _leftover(self) -> list[Any]:
        """What the decoder holds from the last read, before anything more is read.

        That is the error of a bad frame that followed the frames the last call returned
        (raised now); otherwise nothing, since every read is drained (a frame's start waits
        for the rest of it).
        """
        values = self._decoder.drain()
        if values:
            self._received()
        return values

    def _absorb(self, data: bytes | bytearray) -> list[Any]:
        """Decode bytes read from the stream; return the frames they complete (maybe none)."""
        if not data:
            self._ended()
        values = self._decoder.decode(data)
        self._account(values)
        return values

    def _ended(self) -> NoReturn:
        """The stream ended (a read returned no bytes): raise what that means here."""
        if self._decoder.buffered:
            raise RemoteProtocolError("connection closed in the middle of a frame")
        raise EOFError("connection closed by the peer")

    def _account(self, values: list[Any]) -> None:
        """Account for a read's frames (`_received`), or for the frame it began or went on."""
        if values:
            self._received()
            return
        if self.partial_since is None:
            self.partial_since = trio.current_time()
        if self._budget is not None:
            self._charge()

    def _received(self) -> None:
        """Account for the frames just returned (and the start of the next one, if any)."""
        if self._decoder.buffered:  # the start of the next frame came with these
            self.partial_since = trio.current_time()
        else:
            self.partial_since = None
        if self._budget is not None:
            self._charge()

    def _charge(self) -> None:
        budget = self._budget
        if budget is None:
            return
        buffered = self._decoder.buffered
        delta = buffered - self._charged
        if delta > 0 and budget.used + delta > budget.limit:
            self._release()
            self._budget = None
            raise RemoteProtocolError(
                f"an unfinished frame of {buffered} bytes would exceed the receive budget of "
                f"{budget.limit} bytes shared by this node's incoming connections"
            )
        budget.used += delta
        self._charged = buffered

    def _release(self) -> None:
        if self._budget is not None:
            self._budget.used -= self._charged
        self._charged = 0

    async def aclose(self) -> None:
        """Close the underlying stream, and free what was buffered of an unfinished frame."""
        self._forget()
        await self.stream.aclose()

    def close_nowait(self) -> None:
        """Close at once, without a checkpoint (a stream that `can_watch` only).

        What `aclose` does, for a reader that ends a link in the middle of a task step;
        a later `aclose` finds it closed.
        """
        close: Callable[[], None] | None = getattr(self.stream, "close_nowait", None)
        if close is None:
            raise TypeError(f"{self.stream!r} cannot be closed without waiting")
        self._forget()
        close()

    def _forget(self) -> None:
        self._release()
        self._budget = None
        # Whatever still refers to this object (a task's frame, a cycle not yet collected)
        # must not keep a partial frame of up to max_frame_size alive.
        self._decoder.clear()
        self.partial_since = None
