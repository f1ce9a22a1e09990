"""Ceilings: the same work over the same path with a bare trio framed-msgpack stream.

Everything runs over TCP on 127.0.0.1 with the receiver in a separate process. The
replication ceilings move the same record hakit replicates:
``[txid, generation, [[0, key, value]]]``, a ``"k<n>"`` key and a 100-byte value (about
120 bytes framed); the message-channel ceilings send ``[id, payload]`` with a 100-byte
payload and get the same value back. No hakit code is involved.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from itertools import chain, islice
from typing import Any

import trio

from . import _proc
from ._frames import FrameReader, frame
from ._load import repetitions
from ._util import Figure, latency_us, log, now, spin_until

VALUE = b"x" * 100
KEYSPACE = 100_000
#: Frames per ``send_all`` in the batched one-way ceiling.
ONEWAY_BATCH = 64
#: Requests kept in flight by the windowed RPC ceiling (the group-commit analogue).
RPC_WINDOW = 16
#: Snapshot chunking, the same as hakit's (pairs per frame, frames per send).
CHUNK_ITEMS = 2000
CHUNKS_PER_SEND = 8
#: A message channel request's payload (hakit's channel figures send the same).
MSG_PAYLOAD = b"x" * 100
#: Requests in flight in the windowed message ceiling and in hakit's 64-outstanding figure.
MSG_WINDOW = 64


@dataclass
class Config:
    reps: int
    duration: float
    warmup: float
    snapshot_keys: int
    handover_reps: int


def _record(n: int) -> bytes:
    return frame([n, 1, [[0, f"k{n % KEYSPACE}", VALUE]]])


def _split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


async def _connect(address: str) -> trio.SocketStream:
    host, port = _split(address)
    return await trio.open_tcp_stream(host, port)


async def _oneway_once(
    streams: list[trio.SocketStream], readers: list[FrameReader], duration: float, start: int
) -> tuple[float, int]:
    n = start
    t0 = now()
    deadline = t0 + duration
    while True:
        parts = []
        for _ in range(ONEWAY_BATCH):
            n += 1
            parts.append(_record(n))
        data = b"".join(parts)
        for stream in streams:
            await stream.send_all(data)
        if now() >= deadline:
            break
    end = frame([-1, n])
    for stream in streams:
        await stream.send_all(end)
    for reader in readers:
        (count,) = (await reader.receive())[0]
        if count != n - start:
            raise RuntimeError(f"sink counted {count} frames, {n - start} were sent")
    return (n - start) / (now() - t0), n


async def oneway(cfg: Config, receivers: int) -> Figure:
    """One-way batched frames/s to `receivers` processes, each decoding and storing every
    frame; timed until every receiver confirmed the last frame."""
    fig = Figure("frames/s", extra={"receivers": receivers, "batch": ONEWAY_BATCH})
    async with _proc.children("sink", [[] for _ in range(receivers)]) as sinks:
        streams = [await _connect(s.ready["address"]) for s in sinks]
        readers = [FrameReader(s) for s in streams]
        try:
            _, n = await _oneway_once(streams, readers, cfg.warmup, 0)
            async for _ in repetitions(fig, cfg.reps):
                rate, n = await _oneway_once(streams, readers, cfg.duration, n)
                fig.add(rate)
        finally:
            for stream in streams:
                await stream.aclose()
    log(f"ceiling one-way x{receivers}: {fig.median:,.0f} frames/s {fig.samples}")
    return fig


Make = Callable[[int], bytes]
#: One timed run of a request/response loop: (duration, last request id, latencies or None)
#: -> (requests/s, new last request id).
Once = Callable[[float, int, list[float] | None], Awaitable[tuple[float, int]]]


async def _rpc_once(
    stream: trio.SocketStream,
    reader: FrameReader,
    make: Make,
    duration: float,
    start: int,
    lat: list[float] | None,
    after_answer: Callable[[], None] | None = None,
) -> tuple[float, int]:
    """1 outstanding: send request n, wait for its answer (whose first item is n), then call
    `after_answer` if given."""
    n = start
    t0 = now()
    deadline = t0 + duration
    while True:
        n += 1
        t = now()
        await stream.send_all(make(n))
        values = await reader.receive()
        if after_answer is not None:
            after_answer()
        t1 = now()
        if values[0][0] != n:
            raise RuntimeError(f"request {n} was answered with {values!r:.80}")
        if lat is not None:
            lat.append(t1 - t)
        if t1 >= deadline:
            break
    return (n - start) / (now() - t0), n


async def _window_once(
    stream: trio.SocketStream,
    reader: FrameReader,
    make: Make,
    window: int,
    duration: float,
    start: int,
    lat: list[float] | None,
) -> tuple[float, int]:
    """`window` requests in flight from one task; each read's answers are replaced by as
    many new requests in one ``send_all`` until the deadline, then the window drains."""
    n = start
    t0 = now()
    deadline = t0 + duration
    parts = []
    for _ in range(window):
        n += 1
        parts.append(make(n))
    await stream.send_all(b"".join(parts))
    outstanding = window
    while outstanding:
        answered = len(await reader.receive())
        outstanding -= answered
        if now() < deadline:
            parts = []
            for _ in range(answered):
                n += 1
                parts.append(make(n))
            await stream.send_all(b"".join(parts))
            outstanding += answered
    return (n - start) / (now() - t0), n


async def _shaped_once(
    stream: trio.SocketStream,
    reader: FrameReader,
    make: Make,
    duration: float,
    start: int,
    lat: list[float] | None,
) -> tuple[float, int]:
    """1 outstanding in the task shape of hakit's channels: the caller reads its answer
    itself, then wakes a watcher task (which reads while no caller does) that yields once
    and parks again."""
    parked: list[trio.lowlevel.Task] = []

    async def watcher() -> None:
        while True:
            parked.append(trio.lowlevel.current_task())
            await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.SUCCEEDED)
            await trio.lowlevel.cancel_shielded_checkpoint()

    def wake_watcher() -> None:
        if parked:
            trio.lowlevel.reschedule(parked.pop())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher)
        result = await _rpc_once(stream, reader, make, duration, start, lat, wake_watcher)
        nursery.cancel_scope.cancel()
    return result


async def _measure(fig: Figure, cfg: Config, once: Once, n: int, latency: bool) -> int:
    """An untimed warm-up, then `cfg.reps` timed repetitions of `once` into `fig` (with
    latency percentiles if `latency`); return the last request id."""
    _, n = await once(cfg.warmup, n, None)
    async for _ in repetitions(fig, cfg.reps):
        lat: list[float] | None = [] if latency else None
        rate, n = await once(cfg.duration, n, lat)
        fig.add(rate, **(latency_us(lat) if lat else {}))
    return n


async def rpc(cfg: Config) -> tuple[Figure, Figure]:
    """Request/response with 1 outstanding (rate, latency percentiles), and with a window of
    `RPC_WINDOW` requests in flight from one task; the `echo` server answers ``[txid]``."""
    one = Figure("req/s")
    window = Figure("req/s", extra={"window": RPC_WINDOW})
    async with _proc.child("echo") as echo:
        stream = await _connect(echo.ready["address"])
        reader = FrameReader(stream)
        async with stream:
            n = await _measure(one, cfg, partial(_rpc_once, stream, reader, _record), 0, True)
            once = partial(_window_once, stream, reader, _record, RPC_WINDOW)
            await _measure(window, cfg, once, n, False)
    log(f"ceiling rpc 1-outstanding: {one.median:,.0f} req/s p50 {one.side('p50_us'):.0f} us")
    log(f"ceiling rpc window {RPC_WINDOW}: {window.median:,.0f} req/s")
    return one, window


def _msg(n: int) -> bytes:
    return frame([n, MSG_PAYLOAD])


async def msg_rpc(cfg: Config) -> tuple[Figure, Figure]:
    """The message-channel ceilings measured on their own: ``[id, 100 B]`` requests echoed
    whole by a bare trio server process (`msgecho`), in hakit's channel task shape with 1
    outstanding, and with a window of `MSG_WINDOW`. (The plain 1-outstanding ceiling is
    measured in alternation with hakit's figure: `msg_rpc_1_connection`.)

    Returns (shaped, window of `MSG_WINDOW`). Each connection is opened before its figure's
    warm-up.
    """
    shaped = Figure("req/s", extra={"outstanding": 1})
    window = Figure("req/s", extra={"window": MSG_WINDOW})
    async with _proc.children("msgecho", [["shaped"], ["plain"]]) as (shaped_srv, plain_srv):
        stream = await _connect(shaped_srv.ready["address"])
        async with stream:
            once = partial(_shaped_once, stream, FrameReader(stream), _msg)
            await _measure(shaped, cfg, once, 0, True)
        stream = await _connect(plain_srv.ready["address"])
        async with stream:
            once = partial(_window_once, stream, FrameReader(stream), _msg, MSG_WINDOW)
            await _measure(window, cfg, once, 0, False)
    log(
        f"ceiling msg rpc: shaped 1-outstanding {shaped.median:,.0f} req/s;"
        f" window {MSG_WINDOW}: {window.median:,.0f} req/s"
    )
    return shaped, window


@asynccontextmanager
async def msg_rpc_1_connection() -> AsyncIterator[Once]:
    """A connection to a bare `msgecho` server process, as a 1-outstanding `Once` loop."""
    async with _proc.child("msgecho", "plain") as server:
        stream = await _connect(server.ready["address"])
        async with stream:
            yield partial(_rpc_once, stream, FrameReader(stream), _msg)


def snapshot_data(keys: int) -> dict[Any, Any]:
    """The database both the ceiling and hakit's initial sync move: ``k<i>`` -> 100 bytes."""
    return {f"k{i}": VALUE for i in range(keys)}


async def _serve_snapshot(listener: trio.SocketListener, data: dict[Any, Any]) -> float:
    stream = await listener.accept()
    async with stream:
        reader = FrameReader(stream)
        await reader.receive()  # hello
        view = data.copy()  # what a consistent snapshot costs in a dict-based store
        pairs = iter(view.items())
        batch = []
        while items := list(chain.from_iterable(islice(pairs, CHUNK_ITEMS))):
            batch.append(frame([5, items]))
            if len(batch) >= CHUNKS_PER_SEND:
                await stream.send_all(b"".join(batch))
                batch = []
        batch.append(frame([6, len(view)]))
        await stream.send_all(b"".join(batch))
        await reader.receive()  # ack: the receiver holds every key
        return now()


async def snapshot(cfg: Config, data: dict[Any, Any]) -> Figure:
    """Full-database transfer to a fresh receiver process (as hakit's replica is fresh):
    from the receiver starting to connect until the sender has its ack (the receiver
    rebuilt the whole dict)."""
    fig = Figure("s", extra={"keys": len(data)})
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    host, port = listener.socket.getsockname()[:2]

    async def once() -> float:
        # A new process each time: a process that already held the data once would reuse
        # its freed memory and skip the page faults that a real new replica pays.
        async with _proc.child("snaprx") as rx:
            await rx.send("GO", host, port)
            t_end = await _serve_snapshot(listener, data)
            report = await rx.expect("snap")
        if report["keys"] != len(data):
            raise RuntimeError(f"snapshot receiver holds {report['keys']} keys")
        return float(t_end - report["t0"])

    async with listener:
        await once()  # warm-up
        async for _ in repetitions(fig, cfg.reps):
            fig.add(await once())
    fig.extra["keys_per_s"] = len(data) / fig.median
    log(f"ceiling snapshot {len(data):,} keys: {fig.median:.3f} s {fig.samples}")
    return fig


async def handover(cfg: Config) -> Figure:
    """What any force-master handshake of this shape costs: a fresh TCP connect plus three
    framed request/response round trips, timed in the connecting process."""
    fig = Figure("ms", extra={"round_trips": 3})
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    host, port = listener.socket.getsockname()[:2]
    async with listener, _proc.child("handrx") as rx:

        async def once() -> float:
            deadline = now() + 0.2
            await rx.send("GO", host, port, deadline)
            spin_until(deadline)  # both processes warm when the clock starts
            stream = await listener.accept()
            async with stream:
                reader = FrameReader(stream)
                for _ in range(3):
                    values = await reader.receive()
                    await stream.send_all(frame([values[0][0], "answer"]))
            report = await rx.expect("hand")
            return float(report["t1"] - report["t0"]) * 1e3

        await once()  # warm-up
        async for _ in repetitions(fig, cfg.handover_reps):
            fig.add(await once())
    log(f"ceiling handover (connect + 3 RTT): {fig.median:.3f} ms {fig.samples}")
    return fig
