"""Message channels end to end: on mem: and TCP (virtual time), unix sockets, another process."""

from __future__ import annotations

import io
import math
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import hakit
from hakit import EID_MASTER, ChannelMessage, MasterParams, StopReason
from hakit.protocol import _messages as m
from hakit.transports import FramedStream, connect

from .conftest import Nodes, commit, force_master, master_with_replicas, wait_until

ROOT = Path(__file__).resolve().parents[2]

Handler = Callable[[ChannelMessage], Awaitable[None]]


async def echo(msg: ChannelMessage) -> None:
    if msg.need_response:
        await msg.respond(*msg.parts)


class Recorder:
    """A handler that records every message and answers requests with ``f(parts)``."""

    def __init__(self, answer: Callable[[list[bytes]], list[bytes]] | None = None) -> None:
        self.seen: list[ChannelMessage] = []
        self.answer = answer or (lambda parts: parts)
        self.arrived = trio.Event()

    async def __call__(self, msg: ChannelMessage) -> None:
        self.seen.append(msg)
        self.arrived.set()
        if msg.need_response:
            await msg.respond(*self.answer(msg.parts))


def addr(node: hakit.Node) -> str:
    assert node.address is not None
    return node.address


# -- basics ------------------------------------------------------------------------------------


async def test_request_answer_and_one_way_message(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    a = await nodes.add("a")
    b = await nodes.add("b")
    recorder = Recorder(lambda parts: [b"re:" + p for p in parts])
    b.set_msg_dispatch(recorder)
    ch = a.channel(addr(b))
    assert ch.target == addr(b) and ch.timeout == 5.0

    assert await ch.send_request(b"ping") == b"re:ping"
    assert await ch.send_request("héllo") == "re:héllo".encode()
    assert await ch.send_request(["x", b"y"], multiple=True) == [b"re:x", b"re:y"]
    assert await ch.send_request([b"one"], 2.0, True) == [b"re:one"]

    await ch.send_msg([b"fire", "and forget"])
    await wait_until(lambda: len(recorder.seen) == 5)
    last = recorder.seen[-1]
    assert (last.parts, last.sender, last.need_response) == ([b"fire", b"and forget"], "a", False)
    first = recorder.seen[0]
    assert (first.parts, first.sender, first.need_response) == ([b"ping"], "a", True)
    assert not first.multiple and first.max_response_bytes is None
    assert recorder.seen[2].multiple
    assert "request from 'a'" in repr(first)
    await ch.aclose()


async def test_empty_request_and_empty_answer(nodes: Nodes, clock: trio.testing.MockClock) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")

    async def ack(msg: ChannelMessage) -> None:
        await msg.respond()

    b.set_msg_dispatch(ack)
    ch = a.channel(addr(b))
    assert await ch.send_request([]) == b""
    assert await ch.send_request([], multiple=True) == []


async def test_one_connection_per_target_shared_by_channels(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")
    b.set_msg_dispatch(echo)
    first, second = a.channel(addr(b)), a.channel(addr(b))
    assert await first.send_request(b"1") == b"1"
    assert await second.send_request(b"2") == b"2"
    stats = a.statistics().channels
    assert stats.outgoing_connections == 1
    assert b.statistics().channels.incoming_connections == 1
    assert len(a.events.of_type(hakit.ChannelConnected)) == 1


async def test_many_outstanding_requests_are_matched(
    nodes: Nodes, nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")

    all_in = trio.Event()
    order: list[int] = []

    async def slow_in_reverse(msg: ChannelMessage) -> None:
        n = int(msg.parts[0])
        if b.statistics().channels.requests_received == 200:
            all_in.set()
        await all_in.wait()  # every request is outstanding at once
        await trio.sleep(3 - n % 4)  # then later requests are answered first
        order.append(n)
        await msg.respond(b"%d" % (n * n), b"from b")

    b.set_msg_dispatch(slow_in_reverse)
    ch = a.channel(addr(b))
    answers: dict[int, list[bytes]] = {}

    async def ask(n: int) -> None:
        answers[n] = await ch.send_request(b"%d" % n, multiple=True)

    async with trio.open_nursery() as inner:
        for n in range(200):
            inner.start_soon(ask, n)
        await all_in.wait()
        assert a.statistics().channels.pending_requests == 200
    assert order[0] % 4 == 3 and order[-1] % 4 == 0
    assert answers == {n: [b"%d" % (n * n), b"from b"] for n in range(200)}
    stats = a.statistics().channels
    assert (stats.requests_sent, stats.answers_received, stats.pending_requests) == (200, 200, 0)
    assert stats.outgoing_connections == 1
    assert b.statistics().channels.requests_received == 200


# -- targets -----------------------------------------------------------------------------------


async def test_names_resolve_between_master_and_replicas(
    nodes: Nodes, nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    master, (r1, r2), runs = await master_with_replicas(nodes, nursery, "r1", "r2")
    for node in (master, r1, r2):
        node.set_msg_dispatch(Recorder(lambda parts: [b"ok"]))
    # The master knows its replicas by name (the address each announced), a replica its master.
    assert await master.channel("r1").send_request(b"hi") == b"ok"
    assert await r2.channel("m").send_request(b"hi") == b"ok"
    # A replica reaches another replica by address (by name too, inside a cluster).
    assert await r1.channel(addr(r2)).send_request(b"peer") == b"ok"
    if nodes.transport == "mem":
        assert await r1.channel("r2").send_request(b"peer") == b"ok"
    # A channel to the node itself calls its own handler, without a connection.
    assert await r1.channel("r1").send_request(b"me") == b"ok"
    assert await r1.channel(addr(r1)).send_request(b"me") == b"ok"
    assert r1.statistics().channels.outgoing_connections == 1  # to r2 only
    assert not any(run.done.is_set() for run in runs)  # replication went on meanwhile


async def test_bad_targets(nodes: Nodes) -> None:
    a = await nodes.add("a")
    for bad in ("", 42, None, b"mem:a", "not an address"):
        with pytest.raises(hakit.InvalidArgumentError):
            a.channel(bad)  # type: ignore[arg-type]
    if nodes.transport == "tcp":
        with pytest.raises(hakit.InvalidArgumentError, match="not in a cluster"):
            a.channel("mem:b")


async def test_a_name_that_stops_resolving_is_unavailable(
    nodes: Nodes, nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    master, (r1,), (run,) = await master_with_replicas(nodes, nursery, "r1")
    master.set_msg_dispatch(echo)
    ch = r1.channel("m")
    assert await ch.send_request(b"x") == b"x"
    r1.replica_stop()
    await run.wait()
    if nodes.transport == "mem":
        assert await ch.send_request(b"x") == b"x"  # still a cluster member
    else:
        with pytest.raises(hakit.UnavailableError, match="'m' is not known to 'r1'"):
            await ch.send_request(b"x")
        (event,) = r1.events.of_type(hakit.ChannelUnavailable)
        assert "not known" in event.describe()


# -- the master channel ------------------------------------------------------------------------


async def test_master_channel_follows_the_master(
    nodes: Nodes, nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    master, (r1, r2), (run1, run2) = await master_with_replicas(nodes, nursery, "r1", "r2")

    def answer_as(node: hakit.Node) -> Handler:
        async def handler(msg: ChannelMessage) -> None:
            if msg.need_response:
                await msg.respond(f"{node.name} for {msg.sender}")

        return handler

    for node in (master, r1, r2):
        node.set_msg_dispatch(answer_as(node))
    to_master = r2.channel(EID_MASTER)
    assert repr(to_master.target) == "hakit.EID_MASTER"
    assert await to_master.send_request(b"who") == b"m for r2"
    # On the master itself the local handler answers, with no connection.
    before = master.statistics().channels.outgoing_connections
    assert await master.channel(EID_MASTER).send_request(b"who") == b"m for m"
    assert master.statistics().channels.outgoing_connections == before

    killed = await force_master(nursery, master, r1, run1)
    await wait_until(lambda: bool(killed) and "r2" in r1.replicas)
    # The same channel object now reaches the new master; so does the old master's.
    assert await to_master.send_request(b"who") == b"r1 for r2"
    assert await master.channel(EID_MASTER).send_request(b"who") == b"r1 for m"
    assert await r1.channel(EID_MASTER).send_request(b"who") == b"r1 for r1"
    r2.replica_stop()
    assert await run2.wait() is StopReason.STOPPED_BY_LOCAL_REQUEST


async def test_master_channel_without_a_master(nodes: Nodes) -> None:
    a = await nodes.add("a")
    a.set_msg_dispatch(echo)
    ch = a.channel(EID_MASTER)
    with pytest.raises(hakit.UnavailableError, match="knows no master"):
        await ch.send_request(b"x")
    with pytest.raises(hakit.UnavailableError):
        await ch.send_msg(b"x")
    events = a.events.of_type(hakit.ChannelUnavailable)
    assert len(events) == 2 and "knows no master" in events[0].describe()


async def test_master_channel_on_the_master_one_way_and_no_handler(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    a = await nodes.add("a")
    a.set_master_params(MasterParams())
    ch = a.channel(EID_MASTER)
    with pytest.raises(hakit.NoServerError, match="no message handler"):
        await ch.send_msg(b"x")
    with pytest.raises(hakit.NoServerError):
        await ch.send_request(b"x")
    recorder = Recorder()
    a.set_msg_dispatch(recorder)
    await ch.send_msg(b"local")
    await recorder.arrived.wait()
    assert (recorder.seen[0].parts, recorder.seen[0].sender) == ([b"local"], "a")


async def test_handler_forwards_to_the_master_without_deadlock(
    nodes: Nodes, nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    master, (r1, r2), _ = await master_with_replicas(nodes, nursery, "r1", "r2")

    async def write_on_master(msg: ChannelMessage) -> None:
        key, value = (p.decode() for p in msg.parts)
        result = await commit(master, **{key: value})
        await msg.respond(b"%d" % result.txid)

    async def forward_to_master(msg: ChannelMessage) -> None:
        # A replica cannot write: forward the request to whoever is the master.
        answer = await r1.channel(EID_MASTER).send_request(msg.parts, multiple=True)
        await msg.respond(*answer)

    master.set_msg_dispatch(write_on_master)
    r1.set_msg_dispatch(forward_to_master)
    ch = r2.channel(addr(r1))
    async with trio.open_nursery() as inner:
        for i in range(10):
            inner.start_soon(ch.send_request, [f"k{i}", f"v{i}"])
    assert master.txid == 10
    await wait_until(lambda: r2.txid == 10)
    assert r2.get("k3") == "v3" and r1.get("k7") == "v7"


# -- replication is not held up ----------------------------------------------------------------


async def test_slow_handler_does_not_delay_replication(
    nodes: Nodes, nursery: trio.Nursery, clock: trio.testing.MockClock
) -> None:
    master, (r1,), _ = await master_with_replicas(nodes, nursery, "r1")
    release = trio.Event()
    started = trio.Event()

    async def slow(msg: ChannelMessage) -> None:
        if msg.parts == [b"slow"]:
            started.set()
            await release.wait()
        await msg.respond(b"done")

    r1.set_msg_dispatch(slow)
    ch = master.channel("r1")
    outcome: list[bytes] = []

    async def slow_request() -> None:
        outcome.append(await ch.send_request(b"slow", timeout=600))

    nursery.start_soon(slow_request)
    await started.wait()
    for i in range(20):
        result = await commit(master, **{f"k{i}": i})
        assert result.acked == ("r1",)
    assert r1.txid == 20
    # Other requests on the same connection are not held up either.
    assert await ch.send_request(b"quick") == b"done"
    assert not outcome and not release.is_set()
    release.set()
    await wait_until(lambda: bool(outcome))
    assert outcome == [b"done"]


# -- errors ------------------------------------------------------------------------------------


async def test_no_server(nodes: Nodes, clock: trio.testing.MockClock) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")
    ch = a.channel(addr(b))
    with pytest.raises(hakit.NoServerError, match="'b' has no message handler") as info:
        await ch.send_request(b"x")
    assert info.value.target == addr(b)
    await ch.send_msg(b"dropped")  # a one-way message is dropped, and counted
    await wait_until(lambda: b.statistics().channels.unhandled == 2)
    b.set_msg_dispatch(echo)
    assert await ch.send_request(b"x") == b"x"
    b.set_msg_dispatch(None)
    with pytest.raises(hakit.NoServerError):
        await ch.send_request(b"x")


async def test_buffer_small(nodes: Nodes, clock: trio.testing.MockClock) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")
    responder_errors: list[BaseException] = []

    async def answer_big(msg: ChannelMessage) -> None:
        try:
            await msg.respond(*msg.parts)
        except hakit.InvalidArgumentError as exc:
            responder_errors.append(exc)

    b.set_msg_dispatch(answer_big)
    ch = a.channel(addr(b))
    with pytest.raises(hakit.BufferSmallError, match="multiple=True"):
        await ch.send_request([b"1", b"2"])
    with pytest.raises(hakit.BufferSmallError, match="more than the request's") as info:
        await ch.send_request([b"12345"], max_response_bytes=4)
    assert info.value.limit == 4 and info.value.target == addr(b)
    with pytest.raises(hakit.BufferSmallError):
        await ch.send_request([b"12", b"345"], multiple=True, max_response_bytes=4)
    assert await ch.send_request([b"12", b"34"], multiple=True, max_response_bytes=4) == [
        b"12",
        b"34",
    ]
    assert await ch.send_request(b"", max_response_bytes=0) == b""
    assert len(responder_errors) == 3
    assert all(isinstance(e, hakit.InvalidArgumentError) for e in responder_errors)
    assert "accepts one" in str(responder_errors[0])
    seen: list[int | None] = []

    async def inspect_limit(msg: ChannelMessage) -> None:
        seen.append(msg.max_response_bytes)
        await msg.respond(b"ok")

    b.set_msg_dispatch(inspect_limit)
    await ch.send_request(b"x", max_response_bytes=10)
    assert seen == [10]


async def test_timeout_drops_the_late_answer(nodes: Nodes, clock: trio.testing.MockClock) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")
    answered = trio.Event()
    late: list[int] = []

    async def slow(msg: ChannelMessage) -> None:
        await trio.sleep(10)
        await msg.respond(b"late")
        late.append(1)
        if len(late) == 2:
            answered.set()

    b.set_msg_dispatch(slow)
    ch = a.channel(addr(b))
    with pytest.raises(hakit.ChannelTimeoutError, match=r"within 2 s") as info:
        await ch.send_request(b"x", timeout=2)
    assert isinstance(info.value, TimeoutError)
    assert (info.value.timeout, info.value.target) == (2.0, addr(b))
    ch.set_timeout(3)
    with pytest.raises(hakit.ChannelTimeoutError, match=r"within 3 s"):
        await ch.send_request(b"x", timeout=0)  # 0: the channel's default
    await answered.wait()
    await wait_until(lambda: a.statistics().channels.late_answers_dropped == 2)
    stats = a.statistics().channels
    assert (stats.requests_timed_out, stats.pending_requests) == (2, 0)
    events = a.events.of_type(hakit.ChannelRequestTimedOut)
    assert [e.timeout for e in events] == [2.0, 3.0]
    assert "timed out after 2 s" in events[0].describe()
    # The connection is still good.
    b.set_msg_dispatch(echo)
    assert await ch.send_request(b"again") == b"again"


async def test_timeout_on_the_local_master_channel(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    a = await nodes.add("a")
    a.set_master_params(MasterParams())

    answered = trio.Event()

    async def slow(msg: ChannelMessage) -> None:
        await trio.sleep(10)
        await msg.respond(b"late")
        answered.set()

    a.set_msg_dispatch(slow)
    with pytest.raises(hakit.ChannelTimeoutError):
        await a.channel(EID_MASTER).send_request(b"x", timeout=1)
    await answered.wait()
    assert a.statistics().channels.late_answers_dropped == 1


async def test_unreachable_peer(nodes: Nodes, clock: trio.testing.MockClock) -> None:
    a = await nodes.add("a")
    if nodes.transport == "mem":
        target = "mem:nobody"
    else:
        with socket.socket() as sock:  # a port nobody listens on
            sock.bind(("127.0.0.1", 0))
            target = f"127.0.0.1:{sock.getsockname()[1]}"
    ch = a.channel(target)
    with pytest.raises(hakit.UnavailableError, match=f"cannot reach {target}") as info:
        await ch.send_request(b"x")
    assert info.value.target == target
    with pytest.raises(hakit.UnavailableError):
        await ch.send_msg(b"x")
    assert len(a.events.of_type(hakit.ChannelUnavailable)) == 2


async def test_partition_then_heal(nodes: Nodes, clock: trio.testing.MockClock) -> None:
    if nodes.cluster is None:
        pytest.skip("partitions exist on the simulated network only")
    a, b = await nodes.add("a"), await nodes.add("b")
    b.set_msg_dispatch(echo)
    ch = a.channel("b")
    assert await ch.send_request(b"1") == b"1"
    nodes.cluster.network.partition("a", "b")
    with pytest.raises(hakit.ChannelTimeoutError):  # the bytes are held by the cut
        await ch.send_request(b"2", timeout=1)
    nodes.cluster.network.heal()
    assert await ch.send_request(b"3") == b"3"
    await wait_until(lambda: a.statistics().channels.late_answers_dropped == 1)


async def test_connection_dies_while_waiting(nodes: Nodes, clock: trio.testing.MockClock) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")

    async def never(msg: ChannelMessage) -> None:
        await trio.sleep_forever()

    b.set_msg_dispatch(never)
    ch = a.channel(addr(b))
    failures: list[BaseException] = []

    async def ask() -> None:
        try:
            await ch.send_request(b"x", timeout=60)
        except hakit.HakitError as exc:
            failures.append(exc)

    async with trio.open_nursery() as inner:
        for _ in range(3):
            inner.start_soon(ask)
        await wait_until(lambda: b.statistics().channels.requests_received == 3)
        await b.aclose()
    assert len(failures) == 3
    assert all(isinstance(f, hakit.UnavailableError) for f in failures)
    assert "connection was lost" in str(failures[0])
    (event,) = a.events.of_type(hakit.ChannelDisconnected)
    assert event.failed_requests == 3 and "3 request(s) failed" in event.describe()
    assert a.statistics().channels.outgoing_connections == 0


async def test_others_get_their_answers_when_the_reading_caller_leaves(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    # The first caller reads the connection for everyone while it waits; when it leaves
    # early (its own timeout, or its own cancel scope), the others' answers still come.
    a, b = await nodes.add("a"), await nodes.add("b")

    async def after(msg: ChannelMessage) -> None:
        await trio.sleep(float(msg.parts[0]))
        await msg.respond(msg.parts[0])

    b.set_msg_dispatch(after)
    ch = a.channel(addr(b))
    assert await ch.send_request(b"0") == b"0"  # connected, idle
    outcomes: dict[str, object] = {}

    async def ask(name: str, delay: bytes, timeout: float) -> None:
        try:
            outcomes[name] = (await ch.send_request(delay, timeout=timeout), trio.current_time())
        except hakit.ChannelTimeoutError as exc:
            outcomes[name] = exc

    async def ask_then_give_up(delay: bytes, after_s: float) -> None:
        with trio.move_on_after(after_s):
            await ch.send_request(delay, timeout=60)
        outcomes["cancelled"] = trio.current_time()

    start = trio.current_time()
    async with trio.open_nursery() as inner:
        inner.start_soon(ask, "times out", b"5", 2)  # first: it reads for the others
        await wait_until(lambda: b.statistics().channels.requests_received == 2)
        inner.start_soon(ask_then_give_up, b"8", 3)
        inner.start_soon(ask, "answered", b"4", 60)
        inner.start_soon(ask, "answered later", b"6", 60)
    assert isinstance(outcomes["times out"], hakit.ChannelTimeoutError)
    assert outcomes["cancelled"] == pytest.approx(start + 3.01, abs=0.05)
    assert outcomes["answered"] == (b"4", pytest.approx(start + 4.01, abs=0.1))
    assert outcomes["answered later"] == (b"6", pytest.approx(start + 6.01, abs=0.1))
    # The answers to the request that timed out and to the one cancelled come late: dropped.
    await wait_until(lambda: a.statistics().channels.late_answers_dropped == 2, step=0.5)
    assert await ch.send_request(b"0") == b"0"
    stats = a.statistics().channels
    assert (stats.requests_timed_out, stats.pending_requests, stats.outgoing_connections) == (
        1,
        0,
        1,
    )


async def test_a_peer_closing_an_idle_connection_is_seen_and_the_next_request_reconnects(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")
    b.set_msg_dispatch(echo)
    ch = a.channel(addr(b))
    assert await ch.send_request(b"1") == b"1"
    (incoming,) = list(b._channels._incoming)
    await incoming.framed.aclose()  # b drops the connection; a has nothing in flight
    with trio.fail_after(1):  # seen while idle, not at the next request
        await wait_until(lambda: len(a.events.of_type(hakit.ChannelDisconnected)) == 1)
    (event,) = a.events.of_type(hakit.ChannelDisconnected)
    assert event.failed_requests == 0
    assert a.statistics().channels.outgoing_connections == 0
    assert await ch.send_request(b"2") == b"2"  # on a new connection
    assert len(a.events.of_type(hakit.ChannelConnected)) == 2


async def test_no_response(nodes: Nodes, clock: trio.testing.MockClock) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")

    async def forgetful(msg: ChannelMessage) -> None:
        pass

    b.set_msg_dispatch(forgetful)
    with pytest.raises(hakit.NoResponseError, match="returned without answering"):
        await a.channel(addr(b)).send_request(b"x")
    (event,) = b.events.of_type(hakit.ChannelHandlerFailed)
    assert "without answering" in event.describe()
    assert b.statistics().channels.handler_errors == 1


async def test_handler_error_reaches_the_requester_and_the_node_carries_on(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")

    async def picky(msg: ChannelMessage) -> None:
        if msg.parts == [b"bad"]:
            raise KeyError("no such order")
        if msg.parts == [b"bad one-way"]:
            raise RuntimeError("boom")
        await msg.respond(b"fine")

    b.set_msg_dispatch(picky)
    ch = a.channel(addr(b))
    with pytest.raises(hakit.RemoteHandlerError) as info:
        await ch.send_request(b"bad")
    assert (info.value.exc_type, info.value.exc_message) == ("KeyError", "'no such order'")
    assert "raised KeyError: 'no such order'" in str(info.value)
    await ch.send_msg(b"bad one-way")
    assert await ch.send_request(b"good") == b"fine"
    await wait_until(lambda: len(b.events.of_type(hakit.ChannelHandlerFailed)) == 2)
    details = [e.detail for e in b.events.of_type(hakit.ChannelHandlerFailed)]
    assert details == ["KeyError: 'no such order'", "RuntimeError: boom"]
    assert b.statistics().channels.handler_errors == 2


async def test_answering_twice_or_a_one_way_message(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")
    errors: list[str] = []

    async def handler(msg: ChannelMessage) -> None:
        if msg.need_response:
            await msg.respond(b"first")
        for attempt in ([b"second"], [42]):
            try:
                await msg.respond(*attempt)  # type: ignore[arg-type]
            except hakit.InvalidArgumentError as exc:
                errors.append(str(exc))

    b.set_msg_dispatch(handler)
    ch = a.channel(addr(b))
    assert await ch.send_request(b"x") == b"first"
    await ch.send_msg(b"y")
    await wait_until(lambda: len(errors) == 4)
    assert "already answered" in errors[0] and "already answered" in errors[1]
    assert "expects no answer" in errors[2] and "expects no answer" in errors[3]


async def test_respond_checks_its_parts(nodes: Nodes, clock: trio.testing.MockClock) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")

    async def handler(msg: ChannelMessage) -> None:
        with pytest.raises(hakit.InvalidArgumentError, match="answer parts must be bytes"):
            await msg.respond(3.5)  # type: ignore[arg-type]
        await msg.respond([b"a", "b"])  # a single list is the list of parts

    b.set_msg_dispatch(handler)
    assert await a.channel(addr(b)).send_request(b"x", multiple=True) == [b"a", b"b"]


async def test_invalid_arguments(nodes: Nodes, clock: trio.testing.MockClock) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")
    b.set_msg_dispatch(echo)
    ch = a.channel(addr(b))
    bad_calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: ch.send_request(b"x", timeout=-1),
        lambda: ch.send_request(b"x", timeout=4295),
        lambda: ch.send_request(b"x", timeout=math.nan),
        lambda: ch.send_request(b"x", timeout="1"),  # type: ignore[arg-type]
        lambda: ch.send_request(42),  # type: ignore[arg-type]
        lambda: ch.send_request([b"x", None]),  # type: ignore[list-item]
        lambda: ch.send_request(b"x", multiple=1),  # type: ignore[call-overload]
        lambda: ch.send_request(b"x", max_response_bytes=-1),
        lambda: ch.send_request(b"x", max_response_bytes=2.5),  # type: ignore[arg-type]
        lambda: ch.send_msg(object()),  # type: ignore[arg-type]
    ]
    for call in bad_calls:
        with pytest.raises(hakit.InvalidArgumentError):
            await call()
    for bad in (0, -1, 5000, math.inf, None):
        with pytest.raises(hakit.InvalidArgumentError):
            ch.set_timeout(bad)  # type: ignore[arg-type]
    ch.set_timeout(4294.967295)
    assert ch.timeout == 4294.967295
    assert await ch.send_request(b"still fine", timeout=4294.967295) == b"still fine"
    assert a.statistics().channels.requests_sent == 1  # nothing was sent for bad calls

    def not_async(msg: ChannelMessage) -> None:
        pass

    with pytest.raises(hakit.InvalidArgumentError, match="async"):
        a.set_msg_dispatch(not_async)  # type: ignore[arg-type]
    with pytest.raises(hakit.InvalidArgumentError):
        a.set_msg_dispatch("echo")  # type: ignore[arg-type]


async def test_closed_channel(nodes: Nodes, clock: trio.testing.MockClock) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")
    release = trio.Event()

    async def held(msg: ChannelMessage) -> None:
        await release.wait()
        await msg.respond(b"finished")

    b.set_msg_dispatch(held)
    ch = a.channel(addr(b))
    results: list[bytes] = []
    closed = trio.Event()

    async def in_flight() -> None:
        results.append(await ch.send_request(b"x", timeout=60))

    async def close() -> None:
        await ch.aclose()  # waits for the request in flight
        assert results == [b"finished"]
        closed.set()

    async with trio.open_nursery() as inner:
        inner.start_soon(in_flight)
        await wait_until(lambda: b.statistics().channels.requests_received == 1)
        inner.start_soon(close)
        await trio.sleep(1)
        assert not closed.is_set()
        with pytest.raises(hakit.InvalidArgumentError, match="closed"):
            await ch.send_request(b"y")
        release.set()
    assert closed.is_set() and "closed" in repr(ch)
    # Another channel still uses the node's connection.
    b.set_msg_dispatch(echo)
    async with a.channel(addr(b)) as other:
        assert await other.send_request(b"z") == b"z"
    with pytest.raises(hakit.InvalidArgumentError):
        await other.send_msg(b"z")


async def test_requester_node_closing_fails_its_requests(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")

    async def never(msg: ChannelMessage) -> None:
        await trio.sleep_forever()

    b.set_msg_dispatch(never)
    a.set_master_params(MasterParams())
    a.set_msg_dispatch(never)
    failures: list[BaseException] = []

    async def ask(ch: hakit.Channel) -> None:
        try:
            await ch.send_request(b"x", timeout=60)
        except hakit.HakitError as exc:
            failures.append(exc)

    async with trio.open_nursery() as inner:
        inner.start_soon(ask, a.channel(addr(b)))
        inner.start_soon(ask, a.channel(EID_MASTER))  # the local handler
        await wait_until(lambda: a.statistics().channels.pending_requests == 2)
        await a.aclose()
    assert len(failures) == 2
    assert all(isinstance(f, hakit.NodeClosedError) for f in failures)
    with pytest.raises(hakit.NodeClosedError):
        await a.channel(addr(b)).send_request(b"x")


async def test_another_cluster_is_refused(nodes: Nodes, clock: trio.testing.MockClock) -> None:
    b = await nodes.add("b")
    b.set_msg_dispatch(echo)
    intruder = await nodes.open("intruder", cluster_name="elsewhere")
    with pytest.raises(hakit.UnavailableError, match="cluster 'elsewhere'"):
        await intruder.channel(addr(b)).send_request(b"x")
    (refused,) = b.events.of_type(hakit.ConnectionRefused)
    assert refused.peer == "intruder"


async def test_another_protocol_version_is_refused(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    b = await nodes.add("b")
    b.set_msg_dispatch(echo)
    stream = await connect(addr(b), network=nodes.cluster.network if nodes.cluster else None)
    framed = FramedStream(stream)
    newer = m.PROTOCOL_VERSION + 1
    await framed.send(m.ChannelHello(0, "future", "hakit", newer).encode())
    (answer,) = await framed.receive()
    refusal = m.parse_message(answer)
    assert isinstance(refusal, m.ChannelFail) and refusal.req_id == 0
    assert f"speaks protocol version {newer}" in refusal.detail
    with pytest.raises(EOFError):
        await framed.receive()
    await framed.aclose()
    (refused,) = b.events.of_type(hakit.ConnectionRefused)
    assert f"protocol version {newer}" in refused.describe()


async def test_protocol_violations_close_only_that_connection(
    nodes: Nodes, clock: trio.testing.MockClock
) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")
    b.set_msg_dispatch(echo)
    for bad in (m.ChannelReply(0, 1, [b"x"]), m.ChannelMsg(0, 1, 64, 0, [b"x"])):
        stream = await connect(addr(b), network=nodes.cluster.network if nodes.cluster else None)
        framed = FramedStream(stream)
        await framed.send(m.ChannelHello(0, "raw", "hakit", m.PROTOCOL_VERSION).encode())
        (hello,) = await framed.receive()
        assert m.parse_message(hello) == m.ChannelHello(
            b.generation, "b", "hakit", m.PROTOCOL_VERSION
        )
        await framed.send(bad.encode())
        with pytest.raises(EOFError):
            await framed.receive()
        await framed.aclose()
    assert await a.channel(addr(b)).send_request(b"ok") == b"ok"
    disconnected = b.events.of_type(hakit.ChannelDisconnected)
    assert len(disconnected) == 2
    assert "unexpected ChannelReply" in disconnected[0].describe()
    assert "unknown flags" in disconnected[1].describe()


# -- statistics and events ---------------------------------------------------------------------


async def test_statistics_and_events(nodes: Nodes, clock: trio.testing.MockClock) -> None:
    a, b = await nodes.add("a"), await nodes.add("b")
    b.set_msg_dispatch(echo)
    ch = a.channel(addr(b))
    zero = a.statistics().channels
    assert zero == hakit.ChannelStatistics()
    for i in range(3):
        await ch.send_request(b"%d" % i)
    await ch.send_msg(b"one-way")
    with pytest.raises(hakit.BufferSmallError):
        await ch.send_request([b"1", b"2"])
    await wait_until(lambda: b.statistics().channels.messages_received == 5)
    sa, sb = a.statistics().channels, b.statistics().channels
    assert (sa.messages_sent, sa.requests_sent, sa.answers_received, sa.requests_failed) == (
        5,
        4,
        3,
        1,
    )
    assert (sb.messages_received, sb.requests_received, sb.answers_sent) == (5, 4, 3)
    assert (sa.outgoing_connections, sb.incoming_connections) == (1, 1)
    (connected,) = a.events.of_type(hakit.ChannelConnected)
    assert connected.describe() == f"channel connection to b at {addr(b)}"
    (accepted,) = b.events.of_type(hakit.ChannelConnected)
    assert accepted.describe() == "channel connection from a"
    # Messages themselves are counted, not logged: the log holds connects and failures only.
    assert len(a.events) == 1
    if nodes.cluster is not None:
        names = [type(e).__name__ for e in nodes.cluster.events]
        assert names.count("ChannelConnected") == 2


# -- unix sockets and a separate process -------------------------------------------------------


@asynccontextmanager
async def unix_pair() -> AsyncIterator[tuple[hakit.Node, hakit.Node]]:
    directory = tempfile.mkdtemp(prefix="hk")
    try:
        async with (
            hakit.open_node("ua", address=os.path.join(directory, "a")) as a,
            hakit.open_node("ub", address=f"unix:{directory}/b") as b,
        ):
            yield a, b
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


@pytest.fixture
def unix_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)


async def test_unix_sockets(unix_clock: trio.testing.MockClock) -> None:
    async with unix_pair() as (a, b):
        recorder = Recorder(lambda parts: [b"".join(parts)])
        b.set_msg_dispatch(recorder)
        a.set_msg_dispatch(echo)
        ch = b.channel(addr(a))
        assert addr(b).startswith("/tmp/hk")  # "unix:/path" is shown in its canonical form
        assert await a.channel(addr(b)).send_request([b"un", b"ix"]) == b"unix"
        assert await ch.send_request(["x", "y"], multiple=True) == [b"x", b"y"]
        await a.channel(addr(b)).send_msg(b"note")
        await wait_until(lambda: len(recorder.seen) == 2)
        assert recorder.seen[1].sender == "ua"

        async def slow(msg: ChannelMessage) -> None:
            await trio.sleep(30)

        a.set_msg_dispatch(slow)
        with pytest.raises(hakit.ChannelTimeoutError):
            await ch.send_request(b"x", timeout=1)


async def test_unix_socket_with_nothing_listening(unix_clock: trio.testing.MockClock) -> None:
    async with unix_pair() as (a, _):
        with pytest.raises(hakit.UnavailableError):
            await a.channel("/nonexistent/hk/sock").send_request(b"x")


@pytest.fixture
def echo_process() -> Iterator[str]:
    """``python -m hakit node echoer --echo`` in another process; yields its address."""
    child = subprocess.Popen(
        [sys.executable, "-m", "hakit", "node", "echoer", "--listen", "127.0.0.1:0", "--echo"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith(b"echoer listening at "), line
        yield line.decode().split(" at ", 1)[1].strip()
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


async def test_between_processes(echo_process: str) -> None:
    # Real time: the other process runs on the real clock, so no MockClock here.
    async with hakit.open_node("asker") as node:
        ch = node.channel(echo_process)
        ch.set_timeout(30)
        assert await ch.send_request([b"across", "processes"], multiple=True) == [
            b"across",
            b"processes",
        ]
        answers: dict[int, bytes] = {}

        async def ask(n: int) -> None:
            answers[n] = await ch.send_request(b"%d" % n)

        async with trio.open_nursery() as inner:
            for n in range(100):
                inner.start_soon(ask, n)
        assert answers == {n: b"%d" % n for n in range(100)}
        with pytest.raises(hakit.BufferSmallError):
            await ch.send_request([b"two", b"parts"])
        (connected,) = node.events.of_type(hakit.ChannelConnected)
        assert connected.peer == "echoer"


async def test_the_demo_asks_the_master_over_a_channel() -> None:
    from hakit._demo import demo

    out = io.StringIO()
    with trio.fail_after(60):  # real TCP and the real clock, as `make demo` runs it
        await demo(out)
    text = out.getvalue()
    assert "master channel (EID_MASTER)" in text
    assert "gamma asked the master for order:4 and got: beta (master" in text
    assert "[gamma] channel connection to beta" in text
