"""The simulated network's and the framed stream's fast paths: the same as their general ones.

A healthy link delivers a frame without the general path's tests and tuples, reading the
clock of the run that opened it; a framed read of one whole frame decodes it in one call;
a reader can learn that a read took everything (`drained`) without the call that would
answer None. Each test pins one of them against the path it short-cuts.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from hakit._runtime._cluster import _Tracer
from hakit._runtime._events import EventLog
from hakit.protocol import RemoteProtocolError, encode_frame
from hakit.protocol._codec import frame
from hakit.transports import FramedStream, SimulatedNetwork
from hakit.transports._memory import MemoryStream, Route


async def _pair(network: SimulatedNetwork, name: str = "b") -> tuple[MemoryStream, MemoryStream]:
    listener = network.listen(name)
    client = await network.connect(name, source="a")
    server = await listener.accept()
    await listener.aclose()
    assert isinstance(client, MemoryStream) and isinstance(server, MemoryStream)
    return client, server


class _Reader:
    """Reads a framed stream as a link reader does: when told to, with receive_nowait.

    `until_none` reads at every step, until the stream answers None (the reference).
    Otherwise it reads only when the watcher called or bytes it was told are in flight
    came due, stops once a read says the stream is `drained`, and asks `next_due` only
    when that read was not drained (nothing was in flight then).
    """

    def __init__(self, stream: MemoryStream, until_none: bool, receive_size: int) -> None:
        self.framed = FramedStream(stream, max_frame_size=64, receive_size=receive_size)
        self.until_none = until_none
        self.got: list[Any] = []
        self.error: str | None = None
        self.woken = True
        self.coming = False
        self.framed.set_watcher(self._wake)

    def _wake(self) -> None:
        self.woken = True

    def step(self) -> None:
        if self.error is not None:
            return
        if not (self.woken or self.until_none):
            if not self.coming:
                return
            due = self.framed.next_due
            if due is not None and due > trio.current_time():
                return
        self.woken = self.coming = False
        try:
            while True:
                values = self.framed.receive_nowait()
                if values is None:
                    break
                self.got += values
                if not self.until_none and self.framed.drained:
                    break
        except (EOFError, RemoteProtocolError, trio.BrokenResourceError) as exc:
            self.error = type(exc).__name__
            return
        self.coming = not self.framed.drained and self.framed.next_due is not None


async def _script(rng: random.Random, network: SimulatedNetwork, client: MemoryStream) -> bool:
    """One step of a random script: frames whole, split or batched, faults, time, an end.

    Returns:
        Whether the stream was ended (nothing more can be sent).
    """
    what = rng.random()
    if what < 0.45:
        frames = b"".join(encode_frame(rng.randrange(1000)) for _ in range(rng.randint(1, 3)))
        cut = rng.randint(0, len(frames)) if rng.random() < 0.3 else len(frames)
        client.send_nowait(frames[:cut])
        if cut < len(frames):
            client.send_nowait(frames[cut:])
    elif what < 0.55:
        mean = rng.choice([0.0, 0.0, 0.25])
        network.set_latency("a", "b", mean, mean / 2)
    elif what < 0.62:
        network.partition("a", "b") if rng.random() < 0.5 else network.heal()
    elif what < 0.9:
        await trio.sleep(rng.choice([0.0, 0.1, 0.3]))
    elif what < 0.94:
        client.send_nowait(frame(b"\xc1"))  # not msgpack: the framing breaks
    elif what < 0.97:
        client.send_nowait(encode_frame("x" * 100))  # over this reader's maximum
    else:
        await client.send_eof()
        return True
    return False


@pytest.mark.parametrize("receive_size", [5, 256 * 1024])
async def test_a_reader_that_stops_when_drained_reads_what_one_reading_until_none_reads(
    autojump_clock: trio.testing.MockClock, receive_size: int
) -> None:
    # Two networks, one seeded script each: after every step both readers have read the
    # same frames, and they end with the same error; the one that trusts `drained` reads
    # only when the watcher or a due time tells it to.
    for seed in range(60):
        rng_a, rng_b = random.Random(seed), random.Random(seed)
        net_a, net_b = SimulatedNetwork(seed), SimulatedNetwork(seed)
        (client_a, server_a), (client_b, server_b) = await _pair(net_a), await _pair(net_b)
        reference = _Reader(server_a, True, receive_size)
        reader = _Reader(server_b, False, receive_size)
        for _ in range(40):
            ended = await _script(rng_a, net_a, client_a)
            assert await _script(rng_b, net_b, client_b) == ended
            reference.step()
            reader.step()
            assert reader.got == reference.got, seed
            assert reader.error == reference.error, seed
            if ended or reference.error is not None:
                break
        net_a.heal()
        net_b.heal()
        await trio.sleep(1)
        reference.step()
        reader.step()
        assert (reader.got, reader.error) == (reference.got, reference.error), seed
        for stream in (client_a, server_a, client_b, server_b):
            await stream.aclose()


async def test_drained_says_what_a_further_call_would_find(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = SimulatedNetwork()
    client, server = await _pair(network)
    framed = FramedStream(server, receive_size=6)
    one, two = encode_frame(1), encode_frame(2)
    assert not framed.drained  # nothing known before a read
    client.send_nowait(one)
    assert framed.receive_nowait() == [1] and framed.drained
    assert server.drained and framed.receive_nowait() is None
    client.send_nowait(one)
    client.send_nowait(two * 3)  # more than one read of 6 bytes takes
    reads = [framed.receive_nowait()]  # 6 bytes: the first frame, a byte of the next
    while not framed.drained:
        reads.append(framed.receive_nowait())
    assert reads == [[1], [2], [2], [2]] and framed.receive_nowait() is None
    client.send_nowait(one + frame(b"\xc1"))  # a bad frame behind a good one
    assert framed.receive_nowait() == [1] and not framed.drained  # the error is to come
    with pytest.raises(RemoteProtocolError):
        framed.receive_nowait()

    client, server = await _pair(network, "c")
    framed = FramedStream(server)
    client.send_nowait(one)
    await client.send_eof()
    assert framed.receive_nowait() == [1] and not framed.drained  # the end is to come
    with pytest.raises(EOFError):
        framed.receive_nowait()

    client, server = await _pair(network, "d")
    framed = FramedStream(server)
    client.send_nowait(one)
    network.set_latency("a", "d", 0.5)
    client.send_nowait(two)
    assert framed.receive_nowait() == [1] and not framed.drained  # `two` is in flight
    assert framed.receive_nowait() is None and not framed.drained
    assert framed.next_due is not None
    await trio.sleep(0.5)
    assert framed.receive_nowait() == [2] and framed.drained


@pytest.mark.parametrize("max_bytes", [None, 1, 3, 6, 7, 100])
@pytest.mark.parametrize("chunks", [[b"abcdef"], [b"ab", b"cdef"], [b"a", b"b", b"cdefgh"]])
async def test_receive_nowait_takes_what_receive_some_takes(
    autojump_clock: trio.testing.MockClock, max_bytes: int | None, chunks: list[bytes]
) -> None:
    # The one-chunk read (taken whole, without `_take`) and the general one return the same
    # bytes as receive_some on a twin link, and `drained` says whether anything is left.
    results = []
    for nowait in (True, False):
        network = SimulatedNetwork()
        client, server = await _pair(network)
        for chunk in chunks:
            client.send_nowait(chunk)
        taken = []
        while server._in.buffered:
            if nowait:
                data = server.receive_nowait(max_bytes)
                assert data is not None
                assert server.drained == (not server._in.buffered)
            else:
                data = await server.receive_some(max_bytes)
            taken.append(data)
        results.append(taken)
    assert results[0] == results[1]
    assert b"".join(results[0]) == b"".join(chunks)


async def test_send_nowait_raises_as_send_all_does(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # send_nowait looks at the stream's state without `_check_can_send` unless something
    # is amiss; in every state, it raises what send_all raises, or sends as it does.
    async def outcome(stream: MemoryStream, nowait: bool) -> str:
        try:
            if nowait:
                stream.send_nowait(b"x")
            else:
                await stream.send_all(b"x")
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            return type(exc).__name__
        return "sent"

    seen: dict[bool, list[str]] = {}
    for nowait in (True, False):
        network = SimulatedNetwork(latency=(1.0, 0.0))
        client, server = await _pair(network)
        states = [await outcome(client, nowait)]
        await server.aclose()  # its close travels for a second
        states.append(await outcome(client, nowait))  # in flight: not known yet
        await trio.sleep(1)
        states.append(await outcome(client, nowait))  # arrived: settled by the send
        other, _ = await _pair(network, "c")
        await other.send_eof()
        states.append(await outcome(other, nowait))
        await other.aclose()
        states.append(await outcome(other, nowait))
        seen[nowait] = states
    assert seen[True] == seen[False]
    closed = "ClosedResourceError"
    assert seen[True] == ["sent", "sent", "BrokenResourceError", closed, closed]


async def test_a_parked_task_is_woken_before_the_watcher_is_called(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The healthy link's transmit calls the watcher itself, as wake() would: only when no
    # task is parked in receive_some (which is woken instead).
    network = SimulatedNetwork()
    client, server = await _pair(network)
    calls: list[int] = []
    server.set_watcher(lambda: calls.append(1))
    got: list[bytes] = []

    async def receive() -> None:
        got.append(await server.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        client.send_nowait(b"to the task")
    assert got == [b"to the task"] and calls == []
    client.send_nowait(b"to the watcher")
    assert calls == [1]
    assert server.receive_nowait() == b"to the watcher"


class _Recorder:
    """A tracer that keeps the times of what passed, with the run's own clock beside them."""

    def __init__(self) -> None:
        self.times: list[tuple[float, float]] = []

    def message(self, action: str, time: float, *args: Any) -> None:
        pass

    def passed(self, time: float, route: Route, seq: int, frames: Any) -> None:
        self.times.append((time, trio.current_time()))

    def fault(self, time: float, action: str, detail: str) -> None:
        pass


def test_a_link_reads_the_clock_of_the_run_that_opened_it() -> None:
    # The network outlives a run; each link reads its own run's clock, never an earlier
    # run's (each MockClock starts where it is told to).
    recorder = _Recorder()
    network = SimulatedNetwork(tracer=recorder)

    async def main(name: str) -> None:
        client, server = await _pair(network, name)
        client.send_nowait(b"x")
        await trio.sleep(1)
        client.send_nowait(b"y")
        await client.aclose()
        await server.aclose()

    for start, name in ((100.0, "b"), (5.0, "c")):
        clock = trio.testing.MockClock(autojump_threshold=0)
        clock.jump(start)
        trio.run(main, name, clock=clock)
    assert recorder.times == [(100.0, 100.0), (101.0, 101.0), (5.0, 5.0), (6.0, 6.0)]


def test_a_passed_frame_is_recorded_as_its_sent_and_delivered_messages() -> None:
    # `passed` (a healthy link's frame, with the kind memo looked at inline) against the
    # general path's two `message` calls: the same records, whichever frames alternate.
    from hakit.protocol import _messages as m

    frames = [m.Ack(1, 2).encode()[4:], m.KeepAlive(0, 0).encode()[4:], b"\xc1"]
    frames.append(bytes(frames[0]))  # equal bytes, another object
    route = Route("m", "r1", "m>r1#0", True)
    fast, slow = EventLog(canonical=True), EventLog(canonical=True)
    fast_tracer, slow_tracer = _Tracer(fast), _Tracer(slow)
    for i, payload in enumerate(frames + frames[::-1] + frames):
        t = float(i)
        fast_tracer.passed(t, route, i, (payload,))
        slow_tracer.message("sent", t, route, i, payload, "", t, t, 0, "")
        slow_tracer.message("delivered", t, route, i, payload, "", t, None, 0, "")
    t = float(len(frames) * 3)
    fast_tracer.passed(t, route, 100, tuple(frames))  # one chunk of several frames
    for seq, payload in enumerate(frames, 100):
        slow_tracer.message("sent", t, route, seq, payload, "", t, t, 0, "")
        slow_tracer.message("delivered", t, route, seq, payload, "", t, None, 0, "")
    fast.flush()
    slow.flush()
    assert list(fast._ring) == list(slow._ring)
    assert [e.kind for e in fast][:8:2] == ["ACK", "KEEPALIVE", "?", "ACK"]
    assert [e.seq for e in fast][-8:] == [100, 100, 101, 101, 102, 102, 103, 103]


class _Frames:
    """A tracer that keeps each link's frames as it was told of them when sent."""

    def __init__(self) -> None:
        self.sent: dict[str, list[tuple[int, bytes]]] = {}

    def message(
        self, action: str, time: float, route: Route, seq: int, frame: bytes | None, *rest: Any
    ) -> None:
        if action == "sent" and frame is not None and seq >= 0:
            self.sent.setdefault(route.link, []).append((seq, frame))

    def passed(self, time: float, route: Route, seq: int, frames: tuple[bytes, ...]) -> None:
        for number, payload in enumerate(frames, seq):
            self.sent.setdefault(route.link, []).append((number, payload))

    def fault(self, time: float, action: str, detail: str) -> None:
        pass


def _cut_as_the_reference_does(writes: list[bytes], limit: int) -> list[tuple[int, bytes]]:
    # Frame by frame over the whole stream: the payload of each complete frame, numbered;
    # once a length is over `limit` the bytes are not frames: the rest, then each write.
    out: list[tuple[int, bytes]] = []
    buf, unframed = b"", False
    for write in writes:
        if unframed:
            out.append((len(out), write))
            continue
        buf += write
        while len(buf) >= 4:
            size = int.from_bytes(buf[:4], "big")
            if size > limit:
                out.append((len(out), buf))
                buf, unframed = b"", True
                break
            if len(buf) - 4 < size:
                break
            out.append((len(out), buf[4 : 4 + size]))
            buf = buf[4 + size :]
    return out


@pytest.mark.parametrize("seed", range(8))
async def test_the_tracer_is_told_each_frame_as_a_reference_cutter_cuts_them(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    # Writes of whole frames, several frames, pieces of frames, and (past a lowered limit)
    # bytes that are no frames, each written to two links as the same object (a master's
    # shared chunk: cut once, then taken from the memo), one link healthy (`passed`), one
    # with latency (`message`): both are told the reference's frames and numbers.
    import hakit.transports._memory as memory

    monkeypatch.setattr(memory, "_TRACE_MAX_FRAME", 200)
    rng = random.Random(seed)
    stream = b"".join(encode_frame("v" * rng.randrange(60)) for _ in range(30))
    if seed % 2:
        stream += (1000).to_bytes(4, "big") + b"no frame"  # over the limit: unframed
    cuts = sorted(rng.sample(range(1, len(stream)), 25))
    writes = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    writes += [b"after"] * 2
    frames = _Frames()
    network = SimulatedNetwork(seed, tracer=frames)
    (healthy, _), (slow, _) = await _pair(network, "b"), await _pair(network, "c")
    network.set_latency("a", "c", 0.1, 0.05)
    for write in writes:
        healthy.send_nowait(write)
        slow.send_nowait(write)
    expected = _cut_as_the_reference_does(writes, 200)
    assert frames.sent["a>b#0"] == expected
    assert frames.sent["a>c#0"] == expected


async def test_receive_some_and_wait_readable_refuse_each_other(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Both park on the pipe: a second task must be refused, whichever came first, or it
    # would take the first one's place and that one would never be woken.
    network = SimulatedNetwork()
    client, server = await _pair(network)
    got: list[bytes | None] = []

    async def wait_then_take() -> None:
        await server.wait_readable()
        got.append(server.receive_nowait())

    async def receive() -> None:
        got.append(await server.receive_some())

    for first, second in ((wait_then_take, receive), (receive, wait_then_take)):
        with trio.fail_after(10):  # a task never woken
            async with trio.open_nursery() as nursery:
                nursery.start_soon(first)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await second()
                client.send_nowait(b"x")
        assert got == [b"x"]
        got.clear()
