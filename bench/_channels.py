"""Message channel round trips between processes, beside a bare trio request/response ceiling.

``run(quick)`` measures, over TCP on 127.0.0.1 with the responder in a separate process:

* ``ceiling_rpc_1``: a bare trio framed-msgpack RPC (4-byte length + msgpack ``[id, payload]``,
  echoed by a trio TCP server in a child process), 1 request outstanding. No hakit code.
* ``shaped_rpc_1`` (context, no goal): the same bare RPC in the task shape hakit's channels
  have by design: the responder starts a task per request, the requester's answers are read
  by a receiver task that wakes the waiting caller (both yield twice after a read, as hakit
  does). The gap ceiling -> shaped is the cost of that shape; shaped -> channel is hakit's.
* ``channel_request_1``: ``await ch.send_request(payload)`` in a loop from one task, to a
  child node whose handler answers with the request's parts (1 outstanding).
* ``channel_request_64``: the same from 64 tasks sharing one channel (64 outstanding).

Payload: 100 bytes. Each repetition runs the three back to back (ceiling first), so drift on
a noisy machine hits them alike; figures are medians over the repetitions. Latency is per
request, measured around the call. Children are ``python -m bench._channels serve KIND``,
print their address on stdout, exit when their stdin closes, and are killed by PID on exit.

Standalone: ``python -m bench._channels [--quick]`` prints the figures as JSON. From inside a
trio run, ``await measure(quick)`` does what ``run(quick)`` does.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import msgpack
import trio

import hakit

PAYLOAD = b"x" * 100
WINDOW = 64
GOAL_RATIO_1 = 0.8
GOAL_RATE_64 = 30_000.0

_ROOT = Path(__file__).resolve().parent.parent
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# -- children ------------------------------------------------------------------------------------


def _kill(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        with suppress(ProcessLookupError):
            os.kill(popen.pid, signal.SIGKILL)
        popen.wait()
    _CHILDREN.pop(popen.pid, None)


@atexit.register
def _kill_all() -> None:
    for popen in list(_CHILDREN.values()):
        _kill(popen)


@contextmanager
def _child(kind: str) -> Iterator[str]:
    """Start ``python -m bench._channels serve KIND``; yield the address it printed."""
    popen = subprocess.Popen(
        [sys.executable, "-m", "bench._channels", "serve", kind],
        cwd=_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    _CHILDREN[popen.pid] = popen
    try:
        assert popen.stdout is not None
        line = popen.stdout.readline().decode().strip()
        if not line:
            raise RuntimeError(f"bench child {kind!r} exited before printing its address")
        yield line
    finally:
        _kill(popen)


def _frame(value: Any) -> bytes:
    body: bytes = msgpack.packb(value, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def _unframe(buf: bytearray) -> list[Any]:
    """Remove and decode every complete frame at the front of `buf`."""
    out = []
    while len(buf) >= 4:
        size = int.from_bytes(buf[:4], "big")
        if len(buf) < 4 + size:
            break
        out.append(msgpack.unpackb(buf[4 : 4 + size]))
        del buf[: 4 + size]
    return out


async def _yield_twice() -> None:
    await trio.lowlevel.cancel_shielded_checkpoint()
    await trio.lowlevel.cancel_shielded_checkpoint()


async def _serve_ceiling(shaped: bool) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        buf = bytearray()
        async with trio.open_nursery() as nursery:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
                requests = _unframe(buf)
                if not shaped:
                    await stream.send_all(b"".join(_frame(r) for r in requests))
                    continue
                for request in requests:  # one at a time (1 outstanding): no send overlaps
                    nursery.start_soon(stream.send_all, _frame(request))
                await _yield_twice()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    print(f"127.0.0.1:{port}", flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        await _wait_stdin_closed()
        nursery.cancel_scope.cancel()


async def _serve_hakit() -> None:
    async def echo(msg: hakit.ChannelMessage) -> None:
        if msg.need_response:
            await msg.respond(*msg.parts)

    async with hakit.open_node("bench-responder", address="127.0.0.1:0") as node:
        node.set_msg_dispatch(echo)
        print(node.address, flush=True)
        await _wait_stdin_closed()


async def _wait_stdin_closed() -> None:
    # The parent holds our stdin open; when it exits (even killed) we read EOF and leave.
    await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)


# -- clients ---------------------------------------------------------------------------------------


async def _ceiling_once(address: str, duration: float) -> tuple[float, list[float]]:
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    lat: list[float] = []
    try:
        buf = bytearray()
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + duration
        while True:
            n += 1
            t = time.perf_counter()
            await stream.send_all(_frame([n, PAYLOAD]))
            answers = _unframe(buf)
            while not answers:
                data = await stream.receive_some(65536)
                if not data:
                    raise RuntimeError("ceiling server closed the connection")
                buf += data
                answers = _unframe(buf)
            if answers != [[n, PAYLOAD]]:
                raise RuntimeError(f"ceiling answered {answers!r:.60} to request {n}")
            t1 = time.perf_counter()
            lat.append(t1 - t)
            if t1 >= deadline:
                break
        return n / (time.perf_counter() - t0), lat
    finally:
        await stream.aclose()


async def _shaped_once(address: str, duration: float) -> tuple[float, list[float]]:
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    waiting: dict[int, trio.Event] = {}
    lat: list[float] = []

    async def receiver() -> None:
        buf = bytearray()
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise RuntimeError("shaped server closed the connection")
            buf += data
            for req_id, _ in _unframe(buf):
                waiting.pop(req_id).set()
            await _yield_twice()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            n = 0
            t0 = time.perf_counter()
            deadline = t0 + duration
            while True:
                n += 1
                t = time.perf_counter()
                done = waiting[n] = trio.Event()
                await stream.send_all(_frame([n, PAYLOAD]))
                await done.wait()
                t1 = time.perf_counter()
                lat.append(t1 - t)
                if t1 >= deadline:
                    break
            rate = n / (time.perf_counter() - t0)
            nursery.cancel_scope.cancel()
        return rate, lat
    finally:
        await stream.aclose()


async def _channel_once(
    channel: hakit.Channel, duration: float, *, tasks: int
) -> tuple[float, list[float]]:
    lat: list[float] = []
    count = [0]
    t0 = time.perf_counter()
    deadline = t0 + duration

    async def worker() -> None:
        send = channel.send_request
        while True:
            t = time.perf_counter()
            answer = await send(PAYLOAD)
            t1 = time.perf_counter()
            if answer != PAYLOAD:
                raise RuntimeError("the echo answered something else")
            lat.append(t1 - t)
            count[0] += 1
            if t1 >= deadline:
                return

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)
    return count[0] / (time.perf_counter() - t0), lat


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


def _figure(name: str, rates: list[float], lat: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "unit": "req/s",
        "rate": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "samples": [round(r) for r in rates],
        "p50_us": round(_pct(lat, 0.50), 1),
        "p99_us": round(_pct(lat, 0.99), 1),
        **extra,
    }


@asynccontextmanager
async def _client_node() -> AsyncIterator[hakit.Node]:
    async with hakit.open_node("bench-requester") as node:
        yield node


async def measure(quick: bool) -> list[dict[str, Any]]:
    """`run`, for a caller already inside `trio.run`."""
    reps, duration, warmup = (1, 0.5, 0.2) if quick else (3, 2.0, 0.5)
    names = ("ceiling", "shaped", "one", "window")
    rates: dict[str, list[float]] = {name: [] for name in names}
    lats: dict[str, list[float]] = {name: [] for name in names}
    with (
        _child("ceiling") as ceiling_address,
        _child("shaped") as shaped_address,
        _child("hakit") as hakit_address,
    ):
        async with _client_node() as node:
            channel = node.channel(hakit_address)
            runs: dict[str, Callable[[float], Awaitable[tuple[float, list[float]]]]] = {
                "ceiling": partial(_ceiling_once, ceiling_address),
                "shaped": partial(_shaped_once, shaped_address),
                "one": partial(_channel_once, channel, tasks=1),
                "window": partial(_channel_once, channel, tasks=WINDOW),
            }
            for name in names:
                await runs[name](warmup)
            for _ in range(reps):
                for name in names:
                    rate, lat = await runs[name](duration)
                    rates[name].append(rate)
                    lats[name] += lat
            stats = node.statistics().channels
    ceiling = _figure("ceiling_rpc_1", rates["ceiling"], lats["ceiling"], outstanding=1)
    shaped = _figure("shaped_rpc_1", rates["shaped"], lats["shaped"], outstanding=1)
    shaped["x_ceiling"] = round(shaped["rate"] / ceiling["rate"], 3)
    one = _figure("channel_request_1", rates["one"], lats["one"], outstanding=1)
    one["x_ceiling"] = round(one["rate"] / ceiling["rate"], 3)
    one["goal"] = f">= {GOAL_RATIO_1} x ceiling_rpc_1"
    one["met"] = one["x_ceiling"] >= GOAL_RATIO_1
    window = _figure("channel_request_64", rates["window"], lats["window"], outstanding=WINDOW)
    window["x_ceiling"] = round(window["rate"] / ceiling["rate"], 3)
    window["goal"] = f">= {GOAL_RATE_64:,.0f} req/s"
    window["met"] = window["rate"] >= GOAL_RATE_64
    if stats.requests_failed or stats.requests_timed_out:
        raise RuntimeError(f"channel requests failed during the benchmark: {stats}")
    return [ceiling, shaped, one, window]


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure message channel round trips; see the module docstring.

    Returns:
        One dict per figure: ``name``, ``unit``, ``rate`` (median), ``min``, ``max``,
        ``samples``, ``p50_us``, ``p99_us``, ``outstanding``; ``x_ceiling`` (rate over
        ``ceiling_rpc_1``'s) on the others, and ``goal`` and ``met`` on the two hakit ones.
    """
    return trio.run(measure, quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._channels", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="(internal) run a responder child")
    serve.add_argument("kind", choices=["ceiling", "shaped", "hakit"])
    parser.add_argument("--quick", action="store_true", help="1 short repetition")
    args = parser.parse_args(argv)
    if args.command == "serve":
        if args.kind == "hakit":
            trio.run(_serve_hakit)
        else:
            trio.run(_serve_ceiling, args.kind == "shaped")
        return 0
    print(json.dumps(run(args.quick), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
