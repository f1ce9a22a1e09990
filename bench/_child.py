"""Entry point of the benchmark's child processes: ``python -m bench._child ROLE [ARGS]``.

Roles (the parent drives them over stdin/stdout, one JSON object per output line):

* ``sink``: ceiling receiver. Listens on 127.0.0.1; decodes every frame and stores its put in
  a dict; on the end frame ``[-1, n]`` it answers ``[count]``.
* ``echo``: ceiling RPC server. Decodes every request, stores its put, and answers each one
  with ``[txid]``; all answers to one read leave in one ``send_all``.
* ``snaprx``: ceiling snapshot receiver. On ``GO host port`` it connects, says hello, rebuilds
  a dict from the flat chunks, acks the end, and reports its t0.
* ``handrx``: ceiling handover client. On ``GO host port deadline`` it spins until the
  deadline, then connects and does three request/response round trips.
* ``msgecho plain|shaped``: message-channel ceiling server. Answers each ``[id, payload]``
  request with the same value, decoded and encoded again. ``plain``: all answers to one read
  leave in one ``send_all``. ``shaped``: in the task shape of hakit's channel server, the
  task that read a request hands the next read to another task, then answers (1 outstanding
  only: two answers must not be sent at once).
* ``responder``: a hakit node on 127.0.0.1 whose message handler answers every request with
  the request's parts.
* ``replica NAME``: a hakit node on 127.0.0.1 that attaches to a master on ``ATTACH addr``,
  stops on ``STOP``, reports on ``STATS``, and on ``FORCE addr deadline`` re-attaches with
  ``FORCE_MASTER`` and times the handover up to its first accepted write.

A child exits when its stdin closes, and dies with its parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._frames import FrameReader, LineReader, frame
from ._util import now, spin, spin_until

_PR_SET_PDEATHSIG = 1
#: Roles that take no commands: they serve until their stdin closes.
SERVERS = ("sink", "echo", "msgecho", "responder")


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def _listen() -> tuple[trio.SocketListener, str]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    host, port = listener.socket.getsockname()[:2]
    return listener, f"{host}:{port}"


async def _serve(handler: Callable[[trio.SocketStream], Awaitable[None]]) -> None:
    listener, address = await _listen()
    emit("ready", address=address)
    await trio.serve_listeners(handler, [listener])


# -- ceiling servers --------------------------------------------------------------------------
async def _sink_handler(stream: trio.SocketStream) -> None:
    reader = FrameReader(stream)
    data: dict[Any, Any] = {}
    count = 0
    async with stream:
        while True:
            try:
                values = await reader.receive()
            except EOFError:
                return
            for value in values:
                txid = value[0]
                if txid == -1:
                    await stream.send_all(frame([count]))
                    count = 0
                    continue
                for op in value[2]:
                    data[op[1]] = op[2]
                count += 1


async def _echo_handler(stream: trio.SocketStream) -> None:
    reader = FrameReader(stream)
    data: dict[Any, Any] = {}
    async with stream:
        while True:
            try:
                values = await reader.receive()
            except EOFError:
                return
            answers = []
            for value in values:
                for op in value[2]:
                    data[op[1]] = op[2]
                answers.append(frame([value[0]]))
            await stream.send_all(b"".join(answers))


async def _msgecho_plain(stream: trio.SocketStream) -> None:
    reader = FrameReader(stream)
    async with stream:
        while True:
            try:
                values = await reader.receive()
            except EOFError:
                return
            await stream.send_all(b"".join(frame(value) for value in values))


async def _msgecho_shaped(stream: trio.SocketStream) -> None:
    """Two tasks take turns reading: the one that read a request hands the next read to
    the other, then answers and parks until its turn comes back."""
    reader = FrameReader(stream)
    parked: list[trio.lowlevel.Task] = []

    async def worker() -> None:
        while True:
            try:
                values = await reader.receive()
            except EOFError:
                nursery.cancel_scope.cancel()
                return
            if parked:
                trio.lowlevel.reschedule(parked.pop())
            else:
                nursery.start_soon(worker)
            await stream.send_all(b"".join(frame(value) for value in values))
            parked.append(trio.lowlevel.current_task())
            await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.SUCCEEDED)

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(worker)


async def _msgecho_main(mode: str) -> None:
    if mode not in ("plain", "shaped"):
        raise ValueError(f"msgecho mode must be plain or shaped, not {mode!r}")
    await _serve(_msgecho_shaped if mode == "shaped" else _msgecho_plain)


async def _snaprx(host: str, port: int) -> None:
    t0 = now()
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(frame(["hello"]))
        reader = FrameReader(stream)
        data: dict[Any, Any] = {}
        done = False
        while not done:
            for value in await reader.receive():
                if value[0] == 5:
                    it = iter(value[1])
                    data.update(zip(it, it, strict=False))
                elif value[0] == 6:
                    done = True
        t_loaded = now()
        await stream.send_all(frame(["ack"]))
    emit("snap", t0=t0, t_loaded=t_loaded, keys=len(data))


async def _handrx(host: str, port: int, deadline: float) -> None:
    spin_until(deadline)
    t0 = now()
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        reader = FrameReader(stream)
        for i in range(3):
            await stream.send_all(frame([i, "round trip"]))
            await reader.receive()
        t1 = now()
    emit("hand", t0=t0, t1=t1)


async def _client(run: Callable[[list[str]], Awaitable[None]]) -> None:
    emit("ready")
    lines = LineReader(trio.lowlevel.FdStream(os.dup(0)))
    while True:
        try:
            words = (await lines.readline()).split()
        except EOFError:
            return
        await run(words)


async def _snaprx_main() -> None:
    async def run(words: list[str]) -> None:
        await _snaprx(words[1], int(words[2]))

    await _client(run)


async def _handrx_main() -> None:
    async def run(words: list[str]) -> None:
        await _handrx(words[1], int(words[2]), float(words[3]))

    await _client(run)


# -- hakit nodes ------------------------------------------------------------------------------
def security() -> dict[str, Any]:
    """The `open_node` security keywords `bench._security` passes in the environment."""
    import hakit

    secret = os.environ.get("HAKIT_BENCH_SECRET")
    if secret:
        return {"secret": secret}
    tls = os.environ.get("HAKIT_BENCH_TLS")
    if tls:
        cert, key, ca = tls.split(":")
        server = hakit.TlsConfig.from_files(cert=cert, key=key).server
        client = hakit.TlsConfig.from_files(ca=ca).client
        return {"tls": hakit.TlsConfig(server=server, client=client)}
    return {}


async def _responder_main() -> None:
    import hakit

    async def echo(msg: hakit.ChannelMessage) -> None:
        if msg.need_response:
            await msg.respond(*msg.parts)

    async with hakit.open_node("responder", address="127.0.0.1:0", **security()) as node:
        node.set_msg_dispatch(echo)
        emit("ready", address=node.address)
        await trio.sleep_forever()


async def _replica_main(name: str) -> None:
    import hakit

    times: dict[str, float] = {}

    def on_notification(what: hakit.Notification, detail: str) -> None:
        times.setdefault(what.value, now())

    async with (
        hakit.open_node(name, address="127.0.0.1:0", **security()) as node,
        trio.open_nursery() as nursery,
    ):
        emit("ready", address=node.address)
        attached = trio.Event()
        attached.set()

        async def attach(address: str) -> None:
            nonlocal attached
            attached = trio.Event()
            times.clear()
            times["attach"] = now()
            emit("attaching", t0=times["attach"])
            try:
                params = hakit.ReplicaParams(on_notification=on_notification)
                reason = await node.attach_master(address, params, timeout=30)
                emit("stopped", reason=reason.name)
            finally:
                attached.set()

        async def force(address: str, deadline: float) -> None:
            await attached.wait()
            spin_until(deadline)
            t0 = now()
            params = hakit.ReplicaParams(mode=hakit.ReplicaMode.FORCE_MASTER)
            reason = await node.attach_master(address, params, timeout=10)
            t_promoted = now()
            async with node.transaction() as tx:
                tx.put("first write", b"after force master")
            t_write = now()
            emit(
                "force",
                t0=t0,
                t_promoted=t_promoted,
                t_write=t_write,
                reason=reason.name,
                role=node.role.value,
                generation=node.generation,
                txid=tx.result.txid,
            )

        lines = LineReader(trio.lowlevel.FdStream(os.dup(0)))
        while True:
            try:
                words = (await lines.readline()).split()
            except EOFError:
                break
            command = words[0] if words else ""
            if command == "ATTACH":
                nursery.start_soon(attach, words[1])
            elif command == "STOP":
                node.replica_stop()
            elif command == "FORCE":
                nursery.start_soon(force, words[1], float(words[2]))
            elif command == "SPIN":
                spin(float(words[1]))
                emit("spun")
            elif command == "STATS":
                stats = node.statistics()
                emit(
                    "stats",
                    txid=stats.txid,
                    keys=stats.keys,
                    applied=stats.applied,
                    role=stats.role,
                    generation=stats.generation,
                    times=times,
                )
            else:
                emit("error", detail=f"unknown command {words!r}")
        nursery.cancel_scope.cancel()


def main(argv: list[str]) -> int:
    _die_with_parent()
    role = argv[0] if argv else ""
    mains: dict[str, Callable[[], Awaitable[None]]] = {
        "sink": lambda: _serve(_sink_handler),
        "echo": lambda: _serve(_echo_handler),
        "msgecho": lambda: _msgecho_main(argv[1]),
        "responder": _responder_main,
        "snaprx": _snaprx_main,
        "handrx": _handrx_main,
        "replica": lambda: _replica_main(argv[1]),
    }
    if role not in mains:
        emit("error", detail=f"unknown role {role!r}")
        return 2

    async def run() -> None:
        # The servers run until killed or until stdin closes.
        async with trio.open_nursery() as nursery:

            async def watch_stdin() -> None:
                if role in SERVERS:
                    stream = trio.lowlevel.FdStream(os.dup(0))
                    while await stream.receive_some(4096):
                        pass
                    nursery.cancel_scope.cancel()

            nursery.start_soon(watch_stdin)
            await mains[role]()
            nursery.cancel_scope.cancel()

    try:
        trio.run(run)
    except KeyboardInterrupt:
        return 130
    except BaseException:
        emit("error", detail=traceback.format_exc())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
