"""Message channels, sans-I/O: `ChannelMachine` and the responder's checks, without I/O or clock."""

from __future__ import annotations

import math
from typing import Any

import pytest

from hakit.protocol import (
    DEFAULT_CHANNEL_TIMEOUT,
    MAX_CHANNEL_TIMEOUT,
    BufferSmallError,
    ChannelError,
    ChannelFailCode,
    ChannelFlags,
    ChannelMachine,
    ChannelState,
    ChannelTimeoutError,
    InvalidArgumentError,
    LocalProtocolError,
    NoResponseError,
    NoServerError,
    RemoteHandlerError,
    RemoteProtocolError,
    UnavailableError,
    check_answer,
    decide_channel_hello,
    parse_message,
)
from hakit.protocol import _channel as ch
from hakit.protocol import _messages as m
from hakit.protocol._codec import FrameDecoder

TARGET = "10.0.0.2:7000"


def open_machine(**overrides: Any) -> ChannelMachine:
    """A machine whose peer 'b' accepted the connection."""
    fields: dict[str, Any] = {"node": "a", "cluster": "hakit", "target": TARGET, "generation": 3}
    fields.update(overrides)
    machine = ChannelMachine(**fields)
    assert machine.receive(m.ChannelHello(3, "b", fields["cluster"], m.PROTOCOL_VERSION)) == [
        ch.Opened("b")
    ]
    return machine


def wire(msg: m.Message) -> m.Message:
    """Send a message through the codec, as the peer would receive it."""
    decoder = FrameDecoder()
    decoder.feed(msg.encode())
    (value,) = decoder.drain()
    return parse_message(value)


def fail(req_id: int, code: ChannelFailCode, detail: str = "why") -> m.ChannelFail:
    return m.ChannelFail(3, req_id, int(code), detail)


# -- handshake ---------------------------------------------------------------------------------


def test_handshake_opens_and_names_the_peer() -> None:
    machine = ChannelMachine(node="a", cluster="hakit", target=TARGET, generation=2)
    hello = wire(machine.hello())
    assert hello == m.ChannelHello(2, "a", "hakit", m.PROTOCOL_VERSION)
    assert machine.state is ChannelState.CONNECTING
    assert isinstance(hello, m.ChannelHello)
    answer = decide_channel_hello(hello, node="b", cluster="hakit", generation=5)
    assert answer == m.ChannelHello(5, "b", "hakit", m.PROTOCOL_VERSION)
    assert machine.receive(wire(answer)) == [ch.Opened("b")]
    assert machine.state is ChannelState.OPEN and machine.peer == "b"


def test_responder_refuses_another_cluster_and_the_requester_closes() -> None:
    hello = m.ChannelHello(0, "intruder", "elsewhere", m.PROTOCOL_VERSION)
    answer = decide_channel_hello(hello, node="b", cluster="hakit", generation=1)
    assert isinstance(answer, m.ChannelFail)
    assert (answer.req_id, answer.code) == (0, ChannelFailCode.REFUSED)
    assert "'elsewhere'" in answer.detail and "'hakit'" in answer.detail
    machine = ChannelMachine(node="intruder", cluster="elsewhere", target=TARGET)
    (refused,) = machine.receive(wire(answer))
    assert isinstance(refused, ch.Refused) and "refused the channel connection" in refused.detail
    assert machine.state is ChannelState.CLOSED
    with pytest.raises(LocalProtocolError, match="closed"):
        machine.message([b"x"])


def test_responder_refuses_a_nameless_node() -> None:
    answer = decide_channel_hello(
        m.ChannelHello(0, "", "hakit", m.PROTOCOL_VERSION), node="b", cluster="hakit", generation=1
    )
    assert isinstance(answer, m.ChannelFail) and "no name" in answer.detail


def test_another_protocol_version_is_refused_both_ways() -> None:
    newer = m.PROTOCOL_VERSION + 1
    answer = decide_channel_hello(
        m.ChannelHello(0, "a", "hakit", newer), node="b", cluster="hakit", generation=1
    )
    assert isinstance(answer, m.ChannelFail)
    assert (answer.req_id, answer.code) == (0, ChannelFailCode.REFUSED)
    assert answer.detail == (
        f"node 'a' speaks protocol version {newer}, node 'b' speaks version {m.PROTOCOL_VERSION}"
    )
    machine = ChannelMachine(node="a", cluster="hakit", target=TARGET)
    (refused, *failed) = machine.receive(m.ChannelHello(0, "b", "hakit", newer))
    assert isinstance(refused, ch.Refused) and f"protocol version {newer}" in refused.detail
    assert failed == [] and machine.state is ChannelState.CLOSED


def test_requester_checks_the_peers_cluster_too() -> None:
    machine = ChannelMachine(node="a", cluster="hakit", target=TARGET)
    (refused,) = machine.receive(m.ChannelHello(0, "b", "other", m.PROTOCOL_VERSION))
    assert isinstance(refused, ch.Refused)
    assert machine.state is ChannelState.CLOSED


def test_anything_but_a_hello_first_is_a_protocol_error() -> None:
    machine = ChannelMachine(node="a", cluster="hakit", target=TARGET)
    with pytest.raises(RemoteProtocolError, match="expected a ChannelHello"):
        machine.receive(m.ChannelReply(0, 1, [b"x"]))


def test_unexpected_messages_on_an_open_connection() -> None:
    machine = open_machine()
    with pytest.raises(RemoteProtocolError, match="unexpected ChannelMsg"):
        machine.receive(m.ChannelMsg(0, 1, 0, 0, []))
    with pytest.raises(RemoteProtocolError, match="unexpected ChannelHello"):
        machine.receive(m.ChannelHello(0, "b", "hakit", m.PROTOCOL_VERSION))


# -- requests and answers ----------------------------------------------------------------------


def test_requests_are_numbered_and_answers_matched_in_any_order() -> None:
    machine = open_machine()
    requests = [machine.request([b"q%d" % i], now=0.0, timeout=5.0) for i in range(5)]
    assert [r.req_id for r in requests] == [1, 2, 3, 4, 5]
    assert all(r.flags == 0 and r.limit == 0 and r.generation == 3 for r in requests)
    assert machine.pending == 5
    for req in reversed(requests):
        (event,) = machine.receive(wire(m.ChannelReply(3, req.req_id, [b"a" + req.parts[0]])))
        assert event == ch.Answered(req.req_id, b"a" + req.parts[0])
    assert machine.pending == 0


def test_one_way_messages_have_request_id_zero() -> None:
    machine = open_machine()
    msg = machine.message([b"x", b"y"])
    assert (msg.req_id, msg.flags, msg.limit, msg.parts) == (0, 0, 0, [b"x", b"y"])
    assert machine.pending == 0


def test_single_and_empty_answers() -> None:
    machine = open_machine()
    one = machine.request([b"q"], now=0.0, timeout=1.0)
    assert machine.receive(m.ChannelReply(0, one.req_id, [])) == [ch.Answered(one.req_id, b"")]
    many = machine.request([b"q"], now=0.0, timeout=1.0, multiple=True)
    assert many.flags == ChannelFlags.MULTIPLE
    assert machine.receive(m.ChannelReply(0, many.req_id, [])) == [ch.Answered(many.req_id, [])]
    many = machine.request([b"q"], now=0.0, timeout=1.0, multiple=True)
    (event,) = machine.receive(m.ChannelReply(0, many.req_id, [b"1", b"2"]))
    assert event == ch.Answered(many.req_id, [b"1", b"2"])


def test_requester_refuses_a_multi_part_answer_it_did_not_accept() -> None:
    machine = open_machine()
    req = machine.request([b"q"], now=0.0, timeout=1.0)
    (event,) = machine.receive(m.ChannelReply(0, req.req_id, [b"1", b"2"]))
    assert isinstance(event, ch.Failed) and isinstance(event.error, BufferSmallError)
    assert (event.error.parts, event.error.size, event.error.target) == (2, 2, TARGET)
    assert "multiple=True" in str(event.error)


def test_size_limit_travels_with_the_request_and_is_enforced() -> None:
    machine = open_machine()
    req = machine.request([b"q"], now=0.0, timeout=1.0, limit=3)
    assert req.flags == ChannelFlags.LIMIT and req.limit == 3
    assert machine.receive(m.ChannelReply(0, req.req_id, [b"abc"])) == [
        ch.Answered(req.req_id, b"abc")
    ]
    req = machine.request([b"q"], now=0.0, timeout=1.0, limit=3, multiple=True)
    assert req.flags == ChannelFlags.LIMIT | ChannelFlags.MULTIPLE
    (event,) = machine.receive(m.ChannelReply(0, req.req_id, [b"ab", b"cd"]))
    assert isinstance(event, ch.Failed) and isinstance(event.error, BufferSmallError)
    assert (event.error.size, event.error.limit) == (4, 3)
    zero = machine.request([b"q"], now=0.0, timeout=1.0, limit=0)
    assert zero.flags == ChannelFlags.LIMIT  # a limit of 0 is a limit, not "none"
    assert machine.receive(m.ChannelReply(0, zero.req_id, [])) == [ch.Answered(zero.req_id, b"")]


def test_answers_must_be_bytes() -> None:
    machine = open_machine()
    req = machine.request([b"q"], now=0.0, timeout=1.0)
    with pytest.raises(RemoteProtocolError, match="a part is str, not bytes"):
        machine.receive(m.ChannelReply(0, req.req_id, ["text"]))
    assert machine.pending == 1  # the caller closes the connection, failing it


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (ChannelFailCode.NO_SERVER, NoServerError),
        (ChannelFailCode.BUFFER_SMALL, BufferSmallError),
        (ChannelFailCode.NO_RESPONSE, NoResponseError),
    ],
)
def test_failures_become_errors(code: ChannelFailCode, error: type[ChannelError]) -> None:
    machine = open_machine()
    req = machine.request([b"q"], now=0.0, timeout=1.0, limit=10)
    (event,) = machine.receive(wire(fail(req.req_id, code, "in plain words")))
    assert isinstance(event, ch.Failed) and type(event.error) is error
    assert str(event.error) == "in plain words" and event.error.target == TARGET
    if isinstance(event.error, BufferSmallError):
        assert event.error.limit == 10


def test_handler_failure_carries_the_exception_type_and_message() -> None:
    machine = open_machine()
    req = machine.request([b"q"], now=0.0, timeout=1.0)
    (event,) = machine.receive(fail(req.req_id, ChannelFailCode.HANDLER_FAILED, "KeyError: 'k'"))
    assert isinstance(event, ch.Failed) and isinstance(event.error, RemoteHandlerError)
    assert (event.error.exc_type, event.error.exc_message) == ("KeyError", "'k'")
    assert str(event.error) == f"the message handler at {TARGET} raised KeyError: 'k'"
    req = machine.request([b"q"], now=0.0, timeout=1.0)
    (event,) = machine.receive(fail(req.req_id, ChannelFailCode.HANDLER_FAILED, "StopIteration"))
    assert isinstance(event, ch.Failed) and isinstance(event.error, RemoteHandlerError)
    assert (event.error.exc_type, event.error.exc_message) == ("StopIteration", "")


def test_an_unknown_failure_code_is_still_an_error() -> None:
    machine = open_machine()
    req = machine.request([b"q"], now=0.0, timeout=1.0)
    (event,) = machine.receive(m.ChannelFail(0, req.req_id, 99, "from the future"))
    assert isinstance(event, ch.Failed) and type(event.error) is ChannelError
    assert "code 99" in str(event.error) and "from the future" in str(event.error)


# -- time --------------------------------------------------------------------------------------


def test_deadlines_expire_with_tick_and_late_answers_are_dropped() -> None:
    machine = open_machine()
    assert machine.next_deadline == math.inf
    first = machine.request([b"1"], now=10.0, timeout=5.0)
    second = machine.request([b"2"], now=11.0, timeout=1.0)
    assert machine.next_deadline == 12.0
    assert machine.tick(11.999) == []
    (expired,) = machine.tick(12.0)
    assert expired.req_id == second.req_id
    assert isinstance(expired.error, ChannelTimeoutError) and isinstance(
        expired.error, TimeoutError
    )
    assert (expired.error.timeout, expired.error.target) == (1.0, TARGET)
    assert str(expired.error) == f"no answer from node 'b' at {TARGET} within 1 s"
    assert machine.next_deadline == 15.0
    assert machine.receive(m.ChannelReply(0, second.req_id, [b"late"])) == [
        ch.LateAnswer(second.req_id)
    ]
    assert machine.receive(fail(second.req_id, ChannelFailCode.NO_RESPONSE)) == [
        ch.LateAnswer(second.req_id)
    ]
    assert [e.req_id for e in machine.tick(100.0)] == [first.req_id]
    assert machine.pending == 0 and machine.next_deadline == math.inf


def test_abandoned_requests_get_late_answers() -> None:
    machine = open_machine()
    req = machine.request([b"q"], now=0.0, timeout=5.0)
    machine.abandon(req.req_id)
    assert machine.pending == 0
    assert machine.receive(m.ChannelReply(0, req.req_id, [b"a"])) == [ch.LateAnswer(req.req_id)]
    machine.abandon(12345)  # unknown ids are ignored


def test_request_needs_a_positive_timeout() -> None:
    machine = open_machine()
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(InvalidArgumentError):
            machine.request([b"q"], now=0.0, timeout=bad)


# -- connection loss ---------------------------------------------------------------------------


def test_connection_lost_fails_every_waiting_request() -> None:
    machine = open_machine()
    ids = [machine.request([b"q"], now=0.0, timeout=5.0).req_id for _ in range(3)]
    failed = machine.connection_lost("the peer closed the connection")
    assert [f.req_id for f in failed] == ids
    for event in failed:
        assert isinstance(event.error, UnavailableError)
        assert "the peer closed the connection" in str(event.error)
    assert machine.state is ChannelState.CLOSED and machine.pending == 0
    assert machine.connection_lost("again") == []
    assert machine.receive(m.ChannelReply(0, ids[0], [b"a"])) == []  # closed: ignored
    with pytest.raises(LocalProtocolError):
        machine.request([b"q"], now=0.0, timeout=1.0)


def test_refusal_of_an_open_connection_fails_its_requests() -> None:
    machine = open_machine()
    req = machine.request([b"q"], now=0.0, timeout=5.0)
    events = machine.receive(fail(0, ChannelFailCode.REFUSED, "shutting down"))
    assert isinstance(events[0], ch.Refused) and "shutting down" in events[0].detail
    assert isinstance(events[1], ch.Failed) and events[1].req_id == req.req_id
    assert isinstance(events[1].error, UnavailableError)


# -- argument checks shared with the runtime ---------------------------------------------------


def test_to_parts() -> None:
    assert ch.to_parts(b"x") == [b"x"]
    assert ch.to_parts("é") == ["é".encode()]
    assert ch.to_parts([b"a", "b", bytearray(b"c"), memoryview(b"d")]) == [b"a", b"b", b"c", b"d"]
    assert ch.to_parts(("a",)) == [b"a"]
    assert ch.to_parts([]) == []
    with pytest.raises(InvalidArgumentError, match="bytes or str, got int"):
        ch.to_parts(5)
    with pytest.raises(InvalidArgumentError, match=r"got NoneType \(part 1\)"):
        ch.to_parts([b"a", None])
    with pytest.raises(InvalidArgumentError, match="answer parts"):
        ch.to_parts([[b"nested"]], what="answer")


def test_check_timeout() -> None:
    assert ch.check_timeout(None) is None
    assert ch.check_timeout(0) is None  # the channel's default
    assert ch.check_timeout(2) == 2.0
    assert ch.check_timeout(MAX_CHANNEL_TIMEOUT) == MAX_CHANNEL_TIMEOUT
    assert MAX_CHANNEL_TIMEOUT == 4294.967295 and DEFAULT_CHANNEL_TIMEOUT == 5.0
    for bad in (-0.5, math.nan, MAX_CHANNEL_TIMEOUT + 0.001, math.inf, "1", True):
        with pytest.raises(InvalidArgumentError):
            ch.check_timeout(bad)
    with pytest.raises(InvalidArgumentError, match="must be positive"):
        ch.check_timeout(0, zero_means_default=False)


def test_check_limit() -> None:
    assert ch.check_limit(None) is None
    assert ch.check_limit(0) == 0
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(InvalidArgumentError):
            ch.check_limit(bad)


def test_check_answer_is_the_responders_local_check() -> None:
    check_answer([b"a"], 0, 0)
    check_answer([], 0, 0)
    check_answer([b"a", b"b"], int(ChannelFlags.MULTIPLE), 0)
    with pytest.raises(InvalidArgumentError, match="2 parts but the request accepts one"):
        check_answer([b"a", b"b"], 0, 0)
    check_answer([b"abc"], int(ChannelFlags.LIMIT), 3)
    with pytest.raises(InvalidArgumentError, match=r"4 bytes, more than .* of 3"):
        check_answer([b"ab", b"cd"], int(ChannelFlags.LIMIT | ChannelFlags.MULTIPLE), 3)
    check_answer([b"abcdef"], 0, 3)  # without the LIMIT flag the limit field means nothing


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (m.ChannelMsg(0, -1, 0, 0, []), "negative request id"),
        (m.ChannelMsg(0, 1, 8, 0, []), "unknown flags"),
        (m.ChannelMsg(0, 1, -1, 0, []), "unknown flags"),
        (m.ChannelMsg(0, 1, 2, -5, []), "negative size limit"),
        (m.ChannelMsg(0, 1, 0, 0, [b"a", 1]), "a part is int"),
    ],
)
def test_check_request_refuses_a_malformed_request(msg: m.ChannelMsg, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        ch.check_request(msg)


def test_check_request_accepts_good_ones() -> None:
    ch.check_request(m.ChannelMsg(0, 0, 0, 0, []))
    ch.check_request(m.ChannelMsg(0, 9, 3, 100, [b"a", b""]))


def test_wire_messages_round_trip() -> None:
    for msg in (
        m.ChannelHello(1, "a", "hakit", m.PROTOCOL_VERSION),
        m.ChannelMsg(1, 7, 3, 10, [b"a", b""]),
        m.ChannelReply(1, 7, [b"x"]),
        m.ChannelFail(1, 7, int(ChannelFailCode.NO_SERVER), "none"),
    ):
        assert wire(msg) == msg
