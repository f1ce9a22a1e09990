"""The master side: `decide_handshake`, `plan_sync` and `MasterLinkMachine`, without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from hakit.protocol import (
    FrameDecoder,
    LinkState,
    LocalProtocolError,
    MasterLinkMachine,
    MasterView,
    StopReason,
    SyncKind,
    decide_handshake,
    encode_frame,
    plan_sync,
)
from hakit.protocol import _messages as m
from hakit.protocol._master import (
    Acked,
    KillRequested,
    LinkSynced,
    PromoteRequested,
    ReplicaLeft,
)

# The master's history: txids 1-5 were committed under generation 1, 6-10 under generation 2.
HISTORY = {txid: (1 if txid <= 5 else 2) for txid in range(1, 11)}


def make_view(*, log_from: int = 1, **overrides: Any) -> MasterView:
    """A master at generation 2, txid 10, whose log holds txids `log_from`..10."""
    log = {txid: gen for txid, gen in HISTORY.items() if txid >= log_from}
    fields: dict[str, Any] = {
        "cluster": "hakit",
        "node": "m",
        "generation": 2,
        "txid": 10,
        "last_generation": 2,
        "generation_of": log.get,
        "stateful": True,
        "accepting": True,
        "names_in_use": frozenset({"other"}),
        "keepalive_interval": 1.5,
    }
    fields.update(overrides)
    return MasterView(**fields)


def make_hello(**overrides: Any) -> m.Hello:
    fields: dict[str, Any] = {
        "generation": 2,
        "version": m.PROTOCOL_VERSION,
        "cluster": "hakit",
        "node": "r1",
        "txid": 10,
        "last_generation": 2,
        "flags": 0,
        "address": "mem:r1",
    }
    fields.update(overrides)
    return m.Hello(**fields)


# -- decide_handshake: refusals ------------------------------------------------------------


@pytest.mark.parametrize(
    ("hello", "view", "named"),
    [
        (make_hello(version=m.PROTOCOL_VERSION + 1), make_view(), ["protocol version", "2"]),
        (make_hello(cluster="prod"), make_view(), ["'prod'", "'hakit'"]),
        (make_hello(node="m"), make_view(), ["'m'", "master's own name"]),
        (make_hello(), make_view(accepting=False), ["maximum number of replicas"]),
        (make_hello(generation=3), make_view(), ["generation 3", "does not continue", "refused"]),
    ],
    ids=["version", "cluster", "master-name", "max-replicas", "newer-generation"],
)
def test_handshake_refusals(hello: m.Hello, view: MasterView, named: list[str]) -> None:
    reply, _ = decide_handshake(hello, view)
    assert isinstance(reply, m.Reject)
    assert reply.stop_reason == StopReason.HANDSHAKE_FAILED
    assert reply.generation == view.generation
    for word in named:
        assert word in reply.detail


def test_a_name_already_attached_is_refused_for_now_not_for_good() -> None:
    # Usually the same replica back after a restart, before the master saw its old link end:
    # not HANDSHAKE_FAILED, so the replica waits and tries again (the old link stays).
    reply, _ = decide_handshake(make_hello(node="other"), make_view())
    assert isinstance(reply, m.Reject)
    assert reply.stop_reason == StopReason.CONNECTION_ABORTED
    assert "'other'" in reply.detail and "already attached" in reply.detail


def test_newer_generation_is_refused_even_when_everything_else_matches() -> None:
    # A stale master must never serve (and so never overwrite) a replica of a newer history.
    reply, _ = decide_handshake(make_hello(generation=5, txid=3, last_generation=1), make_view())
    assert isinstance(reply, m.Reject)


def test_a_newer_branch_is_loaded_in_full_when_the_replica_gives_it_up() -> None:
    # torture F5: a node promoted by hand beside this master (a branch of its own) comes
    # back only when its operator asks for FORCE_SYNC; the master's generation stays.
    view = make_view(history=(("h-m", 1),))
    hello = make_hello(
        generation=5, txid=7, history=[["h-r", 1]], flags=int(m.HelloFlags.FORCE_SYNC)
    )
    reply, sync = decide_handshake(hello, view)
    assert reply == m.Welcome(2, "m", 10, int(SyncKind.FULL), 1.5, [["h-m", 1]], 0)
    assert sync is SyncKind.FULL
    refused, _ = decide_handshake(make_hello(generation=5, txid=7, history=[["h-r", 1]]), view)
    assert isinstance(refused, m.Reject) and "attach with FORCE_SYNC" in refused.detail


def test_proof_of_a_newer_history_is_refused_even_with_force_sync() -> None:
    # The replica holds this master's history and a newer one after it: this master is stale,
    # and a stale master must never overwrite it, whatever the replica asks.
    view = make_view(history=(("h-m", 1),))
    hello = make_hello(
        generation=3, history=[["h-m", 1], ["h-r", 11]], flags=int(m.HelloFlags.FORCE_SYNC)
    )
    reply, _ = decide_handshake(hello, view)
    assert isinstance(reply, m.Reject) and "this master is stale" in reply.detail


def test_older_generation_is_welcomed() -> None:
    reply, sync = decide_handshake(make_hello(generation=1, txid=5, last_generation=1), make_view())
    assert reply == m.Welcome(2, "m", 10, int(SyncKind.INCREMENTAL), 1.5, [], 5)
    assert sync is SyncKind.INCREMENTAL


# -- decide_handshake / plan_sync: the sync plan ---------------------------------------------


def welcome_for(hello: m.Hello, view: MasterView) -> SyncKind:
    reply, sync = decide_handshake(hello, view)
    assert isinstance(reply, m.Welcome)
    assert (reply.generation, reply.master, reply.txid) == (view.generation, view.node, view.txid)
    assert reply.sync == sync
    assert reply.keepalive_interval == view.keepalive_interval
    assert plan_sync(hello.txid, hello.last_generation, view) is sync
    return sync


def test_equal() -> None:
    assert welcome_for(make_hello(), make_view()) is SyncKind.EQUAL
    assert welcome_for(make_hello(), make_view(stateful=False)) is SyncKind.EQUAL


def test_equal_empty_databases() -> None:
    view = make_view(txid=0, last_generation=0, generation=1)
    hello = make_hello(generation=0, txid=0, last_generation=0)
    assert welcome_for(hello, view) is SyncKind.EQUAL


@pytest.mark.parametrize(
    ("txid", "last_generation", "log_from"),
    [
        (7, 2, 1),  # a few transactions behind, same generation
        (5, 1, 1),  # behind across a promotion: 5 is generation 1 on the master too
        (3, 1, 3),  # the log holds exactly the replica's last txid and everything after
        (9, 2, 9),
    ],
)
def test_incremental(txid: int, last_generation: int, log_from: int) -> None:
    hello = make_hello(txid=txid, last_generation=last_generation)
    assert welcome_for(hello, make_view(log_from=log_from)) is SyncKind.INCREMENTAL


@pytest.mark.parametrize(
    ("txid", "last_generation", "overrides"),
    [
        (7, 2, {"stateful": False}),  # no incremental resync without STATEFUL
        (2, 1, {"log_from": 4}),  # the log was truncated past the replica's position
        (3, 1, {"log_from": 4}),  # the log no longer holds the replica's own last txid
        (7, 1, {}),  # another history: the master's txid 7 is generation 2
        (10, 1, {}),  # same txid, another history
        (5, 2, {}),  # the replica's 5 claims generation 2, the master's is 1
        (12, 2, {}),  # the replica is ahead of the master
        (12, 2, {"stateful": False}),
        (0, 0, {}),  # an empty replica: a snapshot ships a whole database best
    ],
)
def test_full(txid: int, last_generation: int, overrides: dict[str, Any]) -> None:
    hello = make_hello(txid=txid, last_generation=last_generation)
    assert welcome_for(hello, make_view(**overrides)) is SyncKind.FULL


def test_force_sync_flag_asks_for_a_full_load() -> None:
    hello = make_hello(flags=int(m.HelloFlags.FORCE_SYNC))
    reply, sync = decide_handshake(hello, make_view())
    assert isinstance(reply, m.Welcome)
    assert sync is SyncKind.FULL
    assert reply.sync == SyncKind.FULL


def test_force_master_flag_does_not_change_the_plan() -> None:
    hello = make_hello(txid=7, flags=int(m.HelloFlags.FORCE_MASTER))
    assert welcome_for(hello, make_view()) is SyncKind.INCREMENTAL


# -- MasterLinkMachine -----------------------------------------------------------------------


def make_link(**overrides: Any) -> MasterLinkMachine:
    fields: dict[str, Any] = {
        "replica": "r1",
        "generation": 2,
        "sync_target": 10,
        "txid": 7,
        "keepalive_interval": 1.0,
        "detach_timeout": 5.0,
        "now": 100.0,
    }
    fields.update(overrides)
    return MasterLinkMachine(**fields)


def streaming_link(**overrides: Any) -> MasterLinkMachine:
    link = make_link(**overrides)
    link.sent(100.0, 10)
    assert link.receive(m.Ack(2, 10), 100.0) == LinkSynced(10)
    return link


def assert_left(event: object, reason: StopReason, *words: str) -> None:
    assert isinstance(event, ReplicaLeft), event
    assert event.reason is reason
    for word in words:
        assert word in event.detail


def test_initial_state() -> None:
    link = make_link()
    assert link.state is LinkState.SYNCING
    assert link.acked == link.sent_txid == 7


def test_sync_target_reached() -> None:
    link = make_link()
    link.sent(100.1, 10)
    assert link.receive(m.Ack(2, 8), 100.2) == Acked(8)
    assert link.state is LinkState.SYNCING
    assert link.receive(m.Ack(2, 10), 100.3) == LinkSynced(10)
    assert link.state is LinkState.STREAMING
    link.sent(100.4, 12)
    assert link.receive(m.Ack(2, 12), 100.5) == Acked(12)
    assert link.state is LinkState.STREAMING


def test_sync_target_overshot_by_one_cumulative_ack() -> None:
    link = make_link()
    link.sent(100.1, 15)
    assert link.receive(m.Ack(2, 15), 100.2) == LinkSynced(15)
    assert link.acked == 15


def test_acks_are_cumulative_and_may_repeat() -> None:
    link = streaming_link()
    link.sent(101.0, 20)
    assert link.receive(m.Ack(2, 14), 101.0) == Acked(14)
    assert link.receive(m.Ack(2, 14), 101.0) == Acked(14)
    assert link.receive(m.Ack(2, 20), 101.0) == Acked(20)
    assert link.acked == 20


@pytest.mark.parametrize("txid", [6, 11])
def test_ack_outside_the_window_ends_the_link(txid: int) -> None:
    link = make_link()  # acked 7
    link.sent(100.0, 10)
    event = link.receive(m.Ack(2, txid), 100.0)
    assert_left(event, StopReason.CONNECTION_ABORTED, f"ack for txid {txid}", "[7, 10]")
    assert link.state is LinkState.CLOSED
    assert link.acked == 7
    with pytest.raises(LocalProtocolError):
        link.receive(m.Ack(2, 10), 100.0)


def test_ack_going_back_ends_the_link() -> None:
    link = streaming_link()
    assert_left(link.receive(m.Ack(2, 9), 101.0), StopReason.CONNECTION_ABORTED, "outside")


def test_bye_ends_the_link_with_the_replicas_reason() -> None:
    link = streaming_link()
    event = link.receive(m.Bye(2, int(StopReason.STOPPED_BY_LOCAL_REQUEST), "replica_stop"), 1.0)
    assert event == ReplicaLeft(StopReason.STOPPED_BY_LOCAL_REQUEST, "replica_stop")
    assert link.state is LinkState.CLOSED
    assert link.next_deadline == float("inf")
    assert link.tick(1e9) is None


def test_bye_during_sync() -> None:
    link = make_link()
    event = link.receive(m.Bye(2, int(StopReason.ITERATOR_ERROR), "callback raised"), 100.0)
    assert event == ReplicaLeft(StopReason.ITERATOR_ERROR, "callback raised")


def test_bye_with_an_unknown_reason() -> None:
    link = streaming_link()
    event = link.receive(m.Bye(2, 99, "?"), 101.0)
    assert event == ReplicaLeft(StopReason.CONNECTION_ABORTED, "?")


@pytest.mark.parametrize(
    "msg",
    [
        make_hello(),
        m.Txns(2, []),
        m.Welcome(2, "x", 1, 0, 1.0),
        m.KeepAlive(2, 10),
        m.MasterKilled(2),
        m.PromoteReady(2, 10),
    ],
    ids=lambda msg: type(msg).__name__,
)
def test_unexpected_messages_end_the_link(msg: m.Message) -> None:
    link = streaming_link()
    event = link.receive(msg, 101.0)
    assert_left(event, StopReason.CONNECTION_ABORTED, f"unexpected {type(msg).__name__}")
    assert link.state is LinkState.CLOSED


@pytest.mark.parametrize("msg", [m.Ack(3, 10), m.Bye(7, 3, ""), m.PromoteRequest(2**63 - 1)])
def test_a_newer_generation_on_a_link_only_ends_that_link(msg: m.Message) -> None:
    # One frame with a bigger number must not depose a master: it is a protocol error of
    # this replica, and only its link closes.
    link = streaming_link()
    event = link.receive(msg, 101.0)
    assert_left(event, StopReason.CONNECTION_ABORTED, f"generation {msg.generation}")
    assert link.state is LinkState.CLOSED


def test_next_deadline() -> None:
    link = streaming_link()
    assert link.next_deadline == 101.0  # keep-alive before the detach at 105
    assert streaming_link(keepalive_interval=0.0).next_deadline == 105.0
    assert streaming_link(keepalive_interval=10.0).next_deadline == 105.0
    assert streaming_link(detach_timeout=0.0).next_deadline == 101.0
    assert streaming_link(keepalive_interval=0.0, detach_timeout=0.0).next_deadline == float("inf")


def test_syncing_link_is_timed_by_initial_timeout_not_detach_timeout() -> None:
    # A replica loading a snapshot has nothing to say: silence is no reason to drop it, but
    # the whole sync must finish within initial_timeout.
    link = make_link(keepalive_interval=0.0, initial_timeout=30.0)
    assert link.next_deadline == 130.0
    assert link.tick(110.0) is None  # silent past detach_timeout: still loading, still fine
    assert_left(link.tick(130.0), StopReason.CONNECTION_ABORTED, "'r1'", "initial_timeout")
    assert link.state is LinkState.CLOSED
    assert make_link(keepalive_interval=0.0).next_deadline == float("inf")


def test_keepalive_is_due_after_the_interval_without_sending() -> None:
    link = streaming_link()
    assert link.tick(100.99) is None
    assert link.tick(101.0) == m.KeepAlive(2, 10)
    assert link.next_deadline == 102.0
    assert link.tick(101.5) is None
    link.sent(101.8, 12)  # a transaction went out: no keep-alive needed for a while
    assert link.next_deadline == 102.8
    assert link.tick(102.5) is None
    assert link.tick(102.8) == m.KeepAlive(2, 12)


def test_no_keepalive_when_disabled() -> None:
    link = streaming_link(keepalive_interval=0.0, detach_timeout=0.0)
    assert link.tick(1e6) is None


def test_silent_replica_is_dropped_after_detach_timeout() -> None:
    link = streaming_link()  # last heard at 100
    link.receive(m.Ack(2, 10), 103.0)
    assert link.next_deadline == 101.0
    link.sent(107.5)
    assert link.next_deadline == 108.0  # heard at 103 + 5
    assert link.tick(107.9) is None
    event = link.tick(108.0)
    assert_left(event, StopReason.CONNECTION_ABORTED, "'r1'", "detach_timeout")
    assert link.state is LinkState.CLOSED
    assert link.next_deadline == float("inf")
    assert link.tick(200.0) is None


def test_detach_timeout_wins_over_a_due_keepalive() -> None:
    link = streaming_link()
    assert isinstance(link.tick(500.0), ReplicaLeft)


# -- force master ------------------------------------------------------------------------------


def promoting_link() -> MasterLinkMachine:
    link = streaming_link()
    assert link.receive(m.PromoteRequest(2), 101.0) == PromoteRequested()
    assert link.state is LinkState.PROMOTING
    return link


def test_force_master_sequence() -> None:
    link = promoting_link()
    link.sent(101.1, 12)  # two commits raced the request; they are sent before the pause
    assert link.pause_ready(12) == m.PromoteReady(2, 12)
    assert link.receive(m.Ack(2, 12), 101.2) == Acked(12)
    event = link.receive(m.KillMaster(3, "r1", "mem:r1"), 101.3)
    assert event == KillRequested(3, "r1", "mem:r1")
    assert link.state is LinkState.KILLED
    assert link.next_deadline == float("inf")
    assert link.tick(1e6) is None
    with pytest.raises(LocalProtocolError):
        link.receive(m.Ack(2, 12), 101.4)


def test_keepalives_continue_while_promoting() -> None:
    link = promoting_link()
    assert link.tick(102.0) == m.KeepAlive(2, 10)


def test_pause_ready_needs_a_promote_request() -> None:
    with pytest.raises(LocalProtocolError):
        streaming_link().pause_ready(10)
    with pytest.raises(LocalProtocolError):
        make_link().pause_ready(10)


def test_promote_request_before_the_sync_completes_ends_the_link() -> None:
    link = make_link()
    assert_left(link.receive(m.PromoteRequest(2), 100.0), StopReason.CONNECTION_ABORTED)


def test_second_promote_request_ends_the_link() -> None:
    link = promoting_link()
    assert_left(link.receive(m.PromoteRequest(2), 101.0), StopReason.CONNECTION_ABORTED)


def test_kill_master_without_promote_request() -> None:
    link = streaming_link()
    event = link.receive(m.KillMaster(3, "r1", None), 101.0)
    assert_left(event, StopReason.CONNECTION_ABORTED, "without a completed promote request")
    assert link.state is LinkState.CLOSED


def test_kill_master_before_pause_ready() -> None:
    link = promoting_link()
    event = link.receive(m.KillMaster(3, "r1", None), 101.0)
    assert_left(event, StopReason.CONNECTION_ABORTED, "without a completed promote request")


@pytest.mark.parametrize("generation", [2, 4, 0])
def test_kill_master_with_the_wrong_generation(generation: int) -> None:
    link = promoting_link()
    link.pause_ready(10)
    event = link.receive(m.KillMaster(generation, "r1", None), 101.0)
    assert_left(event, StopReason.CONNECTION_ABORTED, f"generation {generation}", "expected 3")
    assert link.state is LinkState.CLOSED


def test_kill_master_from_a_replica_that_has_not_acked_everything() -> None:
    link = promoting_link()
    link.sent(101.0, 12)
    link.pause_ready(12)
    assert link.receive(m.Ack(2, 11), 101.1) == Acked(11)
    event = link.receive(m.KillMaster(3, "r1", None), 101.2)
    assert_left(event, StopReason.CONNECTION_ABORTED, "acked 11", "not 12")
    assert link.state is LinkState.CLOSED


def test_kill_master_during_sync() -> None:
    link = make_link()
    assert_left(link.receive(m.KillMaster(3, "r1", None), 100.0), StopReason.CONNECTION_ABORTED)


def test_sent_position_never_goes_back() -> None:
    # A keep-alive sent after a snapshot carries no transaction: it must not lower the
    # position up to which acknowledgements are accepted.
    link = make_link(txid=0, sync_target=50)
    link.sent(100.0, 50)
    link.sent(101.0, 0)
    assert link.sent_txid == 50
    assert link.receive(m.Ack(2, 50), 101.5) == LinkSynced(50)


# -- receive_value: the fast path for the usual Ack is the generic path, exactly --------------


def killed_link() -> MasterLinkMachine:
    link = promoting_link()
    link.pause_ready(10)
    assert link.receive(m.KillMaster(3, "r1", None), 101.0) == KillRequested(3, "r1", None)
    return link


def closed_link() -> MasterLinkMachine:
    link = streaming_link()
    link.receive(m.Bye(2, int(StopReason.STOPPED_BY_LOCAL_REQUEST), ""), 101.0)
    return link


def sent_to(build: Any, txid: int) -> Any:
    def made() -> MasterLinkMachine:
        link: MasterLinkMachine = build()
        link.sent(100.5, txid)
        return link

    return made


# Every state a link's frames can reach it in, with sent_txid 12 where it still takes acks:
# syncing (acked 7, target 10), streaming and promoting (acked 10), and finished.
LINKS = {
    "syncing": sent_to(make_link, 12),
    "streaming": sent_to(streaming_link, 12),
    "promoting": sent_to(promoting_link, 12),
    "killed": killed_link,
    "closed": closed_link,
}


def wire(value: Any) -> Any:
    """`value` as the master reads it: framed, then decoded."""
    decoder = FrameDecoder()
    decoder.feed(encode_frame(value))
    (decoded,) = decoder.drain()
    return decoded


ACK = int(m.Kind.ACK)
BIG = 2**63  # one past the largest counter a frame may carry
FRAMES = [
    *([ACK, 2, txid] for txid in range(5, 15)),  # below acked, the window, beyond sent
    [ACK, 1, 11],  # an older generation: taken, by the generic path
    [ACK, 0, 11],
    [ACK, 3, 11],  # a newer one: refused
    [ACK, BIG, 11],
    [ACK, -1, 11],
    [ACK, 2, BIG],
    [ACK, 2, -1],
    [ACK, 2, True],  # True == 1, but a bool is no counter
    [ACK, True, 11],
    [True, 2, 11],
    [float(ACK), 2, 11],  # 8.0 == 8, but a float is no kind
    [ACK, 2.0, 11],
    [ACK, 2, 11.0],
    [ACK, 2, "11"],
    [ACK, 2, None],
    [ACK, "2", 11],
    [ACK, 2, 11, 0],
    [ACK, 2],
    [ACK],
    [],
    [[ACK], 2, 11],
    [99, 2, 11],
    "garbage",
    b"\x08\x02\x0b",
    None,
    ACK,
    {ACK: 2},
    m.Bye(2, int(StopReason.STOPPED_BY_LOCAL_REQUEST), "bye").to_wire(),
    m.PromoteRequest(2).to_wire(),
    m.KillMaster(3, "r1", None).to_wire(),
    m.KeepAlive(2, 11).to_wire(),
    m.Txns(2, []).to_wire(),
]


def outcome(call: Any) -> tuple[Any, ...]:
    try:
        return ("event", call())
    except Exception as exc:  # the error and its words are part of the behaviour
        return (type(exc), str(exc))


@pytest.mark.parametrize("frame", FRAMES, ids=repr)
@pytest.mark.parametrize("state", LINKS)
def test_receive_value_does_what_receive_does_with_the_parsed_message(
    state: str, frame: Any
) -> None:
    value = wire(frame)
    generic, fast = LINKS[state](), LINKS[state]()
    expected = outcome(lambda: generic.receive(m.parse_message(value), 102.0))
    got = outcome(lambda: fast.receive_value(value, 102.0))
    if got == ("event", None):
        # The fast path's None stands for Acked at the position it moved to.
        assert state == "streaming"
        got = ("event", Acked(fast.acked))
    assert got == expected
    assert vars(fast) == vars(generic)  # acked, state, last_heard...


@pytest.mark.parametrize("txid", [10, 11, 12])
def test_the_usual_ack_takes_the_fast_path(txid: int) -> None:
    link = sent_to(streaming_link, 12)()
    assert link.receive_value(wire([ACK, 2, txid]), 102.0) is None
    assert link.acked == txid
    assert link.last_heard == 102.0
    assert link.state is LinkState.STREAMING


def test_the_fast_path_never_accepts_an_ack_beyond_what_was_sent() -> None:
    link = sent_to(streaming_link, 12)()
    event = link.receive_value(wire([ACK, 2, 13]), 102.0)
    assert_left(event, StopReason.CONNECTION_ABORTED, "ack for txid 13", "[10, 12]")
    assert link.acked == 10
    assert link.state is LinkState.CLOSED
