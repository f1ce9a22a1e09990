"""The replica side: `ReplicaMachine` driven by messages and `now` values, without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from hakit.protocol import (
    LocalProtocolError,
    ReplicaMachine,
    ReplicaState,
    StopReason,
    SyncKind,
)
from hakit.protocol import _messages as m
from hakit.protocol._replica import (
    Apply,
    FollowMaster,
    LoadBegin,
    LoadChunk,
    LoadEnd,
    Promoted,
    Send,
    Stopped,
    Synced,
    Welcomed,
)

OPS = [[0, "k", "v"]]


def make_replica(**overrides: Any) -> ReplicaMachine:
    """A replica at generation 2 holding txids up to 5 (last one of generation 2)."""
    fields: dict[str, Any] = {
        "cluster": "hakit",
        "node": "r1",
        "generation": 2,
        "txid": 5,
        "last_generation": 2,
        "address": "mem:r1",
        "wait_data_timeout": 10.0,
        "now": 0.0,
    }
    fields.update(overrides)
    return ReplicaMachine(**fields)


def welcome(
    txid: int, sync: SyncKind, generation: int = 2, common: int = 5, history: Any = ()
) -> m.Welcome:
    """The master's answer; by default it shares all 5 txids of `make_replica`'s replica."""
    return m.Welcome(generation, "m", txid, int(sync), 1.0, [list(e) for e in history], common)


def entries(first: int, last: int, generation: int = 2) -> list[m.Entry]:
    return [[txid, generation, OPS] for txid in range(first, last + 1)]


def streaming(**overrides: Any) -> ReplicaMachine:
    replica = make_replica(**overrides)
    replica.receive(welcome(replica.txid, SyncKind.EQUAL, common=replica.txid), 0.0)
    assert replica.state is (
        ReplicaState.PROMOTING if replica.force_master else ReplicaState.STREAMING
    )
    return replica


def assert_stopped(events: list[Any], reason: StopReason, *words: str) -> Stopped:
    assert len(events) == 1, events
    (event,) = events
    assert isinstance(event, Stopped), event
    assert event.reason is reason
    for word in words:
        assert word in event.detail
    return event


def assert_aborted(replica: ReplicaMachine, msg: m.Message, *words: str) -> None:
    txid = replica.txid
    assert_stopped(replica.receive(msg, 1.0), StopReason.CONNECTION_ABORTED, *words)
    assert replica.state is ReplicaState.STOPPED
    assert replica.stop_reason is StopReason.CONNECTION_ABORTED
    assert replica.txid == txid  # nothing of a refused message is handed out
    with pytest.raises(LocalProtocolError):
        replica.receive(m.KeepAlive(2, txid), 2.0)


# -- handshake -----------------------------------------------------------------------------


def test_hello() -> None:
    replica = make_replica()
    assert replica.hello() == m.Hello(2, m.PROTOCOL_VERSION, "hakit", "r1", 5, 2, 0, "mem:r1")
    assert replica.state is ReplicaState.HANDSHAKING
    assert not replica.synced


@pytest.mark.parametrize(
    ("options", "flags"),
    [
        ({"force_master": True}, m.HelloFlags.FORCE_MASTER),
        ({"force_sync": True}, m.HelloFlags.FORCE_SYNC),
        ({"force_master": True, "force_sync": True}, m.HelloFlags.FORCE_MASTER | 2),
    ],
)
def test_hello_flags(options: dict[str, bool], flags: int) -> None:
    assert make_replica(**options).hello().flags == flags


def test_equal() -> None:
    replica = make_replica()
    events = replica.receive(welcome(5, SyncKind.EQUAL), 0.5)
    assert events == [Welcomed("m", SyncKind.EQUAL, 5), Synced(5)]
    assert replica.state is ReplicaState.STREAMING
    assert replica.synced
    assert replica.master == "m"
    assert replica.sync_kind is SyncKind.EQUAL
    assert replica.ack() == m.Ack(2, 5)


def test_welcome_from_a_newer_generation_is_adopted() -> None:
    replica = make_replica()
    replica.receive(welcome(5, SyncKind.EQUAL, generation=4), 0.0)
    assert replica.generation == 4
    assert replica.ack() == m.Ack(4, 5)


def test_equal_at_another_txid_is_refused() -> None:
    assert_aborted(make_replica(), welcome(6, SyncKind.EQUAL), "equal at txid 6")


def test_unknown_sync_kind() -> None:
    assert_aborted(make_replica(), m.Welcome(2, "m", 5, 9, 1.0), "unknown sync kind 9")


def test_incremental() -> None:
    replica = make_replica()
    assert replica.receive(welcome(8, SyncKind.INCREMENTAL), 0.0) == [
        Welcomed("m", SyncKind.INCREMENTAL, 8)
    ]
    assert not replica.synced
    assert replica.receive(m.Txns(2, entries(6, 7)), 0.1) == [Apply(entries(6, 7))]
    assert replica.ack() == m.Ack(2, 7)
    assert replica.receive(m.Txns(2, entries(8, 9)), 0.2) == [Apply(entries(8, 9)), Synced(9)]
    assert replica.synced
    assert replica.receive(m.Txns(2, entries(10, 10)), 0.3) == [Apply(entries(10, 10))]
    assert (replica.txid, replica.last_generation) == (10, 2)


def test_incremental_with_nothing_to_replay_is_synced_at_once() -> None:
    replica = make_replica()
    events = replica.receive(welcome(5, SyncKind.INCREMENTAL), 0.0)
    assert events == [Welcomed("m", SyncKind.INCREMENTAL, 5), Synced(5)]


def test_incremental_back_in_time_is_refused() -> None:
    assert_aborted(make_replica(), welcome(4, SyncKind.INCREMENTAL), "back to txid 4")


@pytest.mark.parametrize(
    "msg",
    [m.Txns(2, entries(6, 6)), m.KeepAlive(2, 5), m.SnapshotBegin(2, 5, 2, 0), m.Ack(2, 5)],
    ids=lambda msg: type(msg).__name__,
)
def test_anything_but_welcome_during_the_handshake(msg: m.Message) -> None:
    assert_aborted(make_replica(), msg, "expected Welcome")


# -- full load -------------------------------------------------------------------------------


def test_full_load() -> None:
    replica = make_replica()
    assert replica.receive(welcome(9, SyncKind.FULL), 0.0) == [Welcomed("m", SyncKind.FULL, 9)]
    assert replica.state is ReplicaState.LOADING
    assert replica.receive(m.SnapshotBegin(2, 9, 1, 3), 0.1) == [LoadBegin(9, 1, 3)]
    assert replica.receive(m.SnapshotChunk(2, ["a", 1, b"b", [2]]), 0.2) == [
        LoadChunk(["a", 1, b"b", [2]])
    ]
    assert replica.receive(m.SnapshotChunk(2, []), 0.3) == [LoadChunk([])]
    assert replica.receive(m.SnapshotChunk(2, ["c", None]), 0.4) == [LoadChunk(["c", None])]
    assert replica.txid == 5  # the old database stays current until the load ends
    events = replica.receive(m.SnapshotEnd(2, 9, 3), 0.5)
    assert events == [LoadEnd(9, 1, 2), Synced(9)]
    assert (replica.txid, replica.last_generation) == (9, 1)
    assert replica.state is ReplicaState.STREAMING
    assert replica.receive(m.Txns(2, entries(10, 10)), 0.6) == [Apply(entries(10, 10))]


def test_hot_load_ends_past_the_welcome() -> None:
    replica = make_replica()
    replica.receive(welcome(9, SyncKind.FULL), 0.0)
    replica.receive(m.SnapshotBegin(2, 12, 2, 0), 0.1)
    assert replica.receive(m.SnapshotEnd(2, 12, 0), 0.2) == [LoadEnd(12, 2, 2), Synced(12)]
    assert_aborted(replica, m.Txns(2, entries(12, 12)), "does not follow 12")


def test_load_of_an_older_snapshot_syncs_with_the_transactions_after_it() -> None:
    replica = make_replica()
    replica.receive(welcome(9, SyncKind.FULL), 0.0)
    replica.receive(m.SnapshotBegin(2, 8, 2, 0), 0.1)
    assert replica.receive(m.SnapshotEnd(2, 8, 0), 0.2) == [LoadEnd(8, 2, 2)]
    assert not replica.synced
    assert replica.receive(m.Txns(2, entries(9, 9)), 0.3) == [Apply(entries(9, 9)), Synced(9)]


def test_full_load_replaces_a_history_that_was_ahead() -> None:
    replica = make_replica(txid=20, last_generation=1, generation=1)
    replica.receive(welcome(9, SyncKind.FULL), 0.0)
    replica.receive(m.SnapshotBegin(2, 9, 2, 0), 0.1)
    assert replica.receive(m.SnapshotEnd(2, 9, 0), 0.2) == [LoadEnd(9, 2, 2), Synced(9)]
    assert replica.ack() == m.Ack(2, 9)


def test_keepalive_during_a_load_only_shows_liveness() -> None:
    replica = make_replica()
    replica.receive(welcome(9, SyncKind.FULL), 0.0)
    assert replica.receive(m.KeepAlive(2, 0), 8.0) == []  # no Ack: our txid is void mid-load
    assert replica.next_deadline == 18.0
    replica.receive(m.SnapshotBegin(2, 9, 2, 0), 9.0)
    assert replica.receive(m.KeepAlive(2, 0), 10.0) == []
    assert replica.receive(m.SnapshotEnd(2, 9, 0), 11.0) == [LoadEnd(9, 2, 2), Synced(9)]


def load_started(count: int = 2) -> ReplicaMachine:
    replica = make_replica()
    replica.receive(welcome(9, SyncKind.FULL), 0.0)
    replica.receive(m.SnapshotBegin(2, 9, 2, count), 0.1)
    return replica


def test_odd_chunk() -> None:
    assert_aborted(load_started(), m.SnapshotChunk(2, ["a", 1, "b"]), "odd number of items")


@pytest.mark.parametrize("count", [1, 3])
def test_end_count_differs_from_what_was_delivered(count: int) -> None:
    replica = load_started()
    replica.receive(m.SnapshotChunk(2, ["a", 1, "b", 2]), 0.2)
    assert_aborted(replica, m.SnapshotEnd(2, 9, count), f"with {count} keys", "delivered 2")


def test_end_at_another_txid() -> None:
    assert_aborted(load_started(0), m.SnapshotEnd(2, 10, 0), "ended at txid 10", "began at 9")


@pytest.mark.parametrize(
    "msg",
    [
        m.SnapshotChunk(2, ["a", 1]),
        m.SnapshotEnd(2, 9, 0),
        m.Txns(2, entries(6, 6)),
        m.PromoteReady(2, 5),
    ],
    ids=lambda msg: type(msg).__name__,
)
def test_out_of_order_before_snapshot_begin(msg: m.Message) -> None:
    replica = make_replica()
    replica.receive(welcome(9, SyncKind.FULL), 0.0)
    assert_aborted(replica, msg, "during the initial load")


@pytest.mark.parametrize(
    "msg",
    [m.SnapshotBegin(2, 9, 2, 0), m.Txns(2, entries(6, 6)), welcome(9, SyncKind.FULL)],
    ids=lambda msg: type(msg).__name__,
)
def test_out_of_order_during_the_load(msg: m.Message) -> None:
    assert_aborted(load_started(), msg, "during the initial load")


def test_snapshot_messages_outside_a_load() -> None:
    assert_aborted(streaming(), m.SnapshotBegin(2, 9, 2, 0), "unexpected SnapshotBegin")


# -- the transaction stream --------------------------------------------------------------------


def test_entries_must_follow_on_exactly() -> None:
    assert_aborted(streaming(), m.Txns(2, entries(7, 8)), "transaction 7 does not follow 5")


def test_gap_inside_a_batch_refuses_the_whole_batch() -> None:
    batch = [*entries(6, 7), *entries(9, 9)]
    assert_aborted(streaming(), m.Txns(2, batch), "transaction 9 does not follow 7")


def test_repeated_transaction() -> None:
    assert_aborted(streaming(), m.Txns(2, [*entries(6, 6), *entries(6, 6)]), "does not follow 6")


def test_old_transaction() -> None:
    assert_aborted(streaming(), m.Txns(2, entries(5, 5)), "does not follow 5")


def test_generation_going_back() -> None:
    batch = [[6, 2, OPS], [7, 1, OPS]]
    assert_aborted(streaming(), m.Txns(2, batch), "transaction 7 has generation 1")


def test_generation_below_the_replicas_last_one() -> None:
    assert_aborted(streaming(), m.Txns(2, [[6, 1, OPS]]), "transaction 6 has generation 1")


def test_generation_going_up_within_the_master_generation() -> None:
    replica = make_replica()
    replica.receive(welcome(5, SyncKind.EQUAL, generation=3), 0.0)
    batch = [[6, 2, OPS], [7, 3, OPS]]
    assert replica.receive(m.Txns(3, batch), 1.0) == [Apply(batch)]
    assert (replica.txid, replica.last_generation) == (7, 3)


@pytest.mark.parametrize(
    "entry",
    [
        "not a list",
        [6, 2],
        [6, 2, OPS, "extra"],
        [6, 2, "ops"],
        [6.0, 2, OPS],
        [True, 2, OPS],  # True == 1: a bool must never pass for a txid
        ["6", 2, OPS],
        [6, "2", OPS],
        [6, 2.0, OPS],
        [6, None, OPS],
    ],
)
def test_malformed_entries(entry: Any) -> None:
    replica = streaming(txid=0 if isinstance(entry, list) and entry[0] is True else 5)
    assert_aborted(replica, m.Txns(2, [entry]))


def test_empty_batch() -> None:
    replica = streaming()
    assert replica.receive(m.Txns(2, []), 1.0) == [Apply([])]
    assert replica.txid == 5


# -- generations, rejects, detach ---------------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        m.Txns(1, entries(6, 6, generation=1)),
        m.KeepAlive(1, 5),
        m.Detach(1, "stale"),
        m.MasterChanged(1, "x", "mem:x"),
    ],
    ids=lambda msg: type(msg).__name__,
)
def test_frames_from_an_older_generation(msg: m.Message) -> None:
    assert_aborted(streaming(), msg, "older than ours", "stale master")


def test_welcome_from_an_older_generation() -> None:
    assert_aborted(make_replica(generation=3), welcome(5, SyncKind.EQUAL), "generation 2")


def test_only_a_full_load_asked_for_with_force_sync_takes_the_generation_back() -> None:
    # torture F5: a node promoted beside the master gives up its branch and its generation.
    assert_aborted(
        make_replica(generation=3, force_sync=True), welcome(5, SyncKind.EQUAL), "stale master"
    )
    assert_aborted(make_replica(generation=3), welcome(9, SyncKind.FULL, common=2), "stale")
    replica = make_replica(generation=3, force_sync=True)
    events = replica.receive(welcome(9, SyncKind.FULL, common=2), 0.0)
    assert [type(e).__name__ for e in events] == ["Welcomed", "Diverged"]
    assert replica.generation == 2 and replica.state is ReplicaState.LOADING
    replica.receive(m.SnapshotBegin(2, 9, 2, 1), 0.0)
    replica.receive(m.SnapshotChunk(2, ["k", "v"]), 0.0)
    (end, *_) = replica.receive(m.SnapshotEnd(2, 9, 1), 0.0)
    assert isinstance(end, LoadEnd) and (end.txid, end.generation) == (9, 2)


def test_reject() -> None:
    replica = make_replica()
    events = replica.receive(m.Reject(2, int(StopReason.HANDSHAKE_FAILED), "wrong cluster"), 0.0)
    assert events == [Stopped(StopReason.HANDSHAKE_FAILED, "wrong cluster")]
    assert replica.state is ReplicaState.STOPPED
    assert replica.stop_reason is StopReason.HANDSHAKE_FAILED


def test_reject_from_an_older_generation_still_stops_us() -> None:
    # A stale master refusing a newer replica answers with its own, older generation.
    replica = make_replica(generation=5)
    events = replica.receive(m.Reject(2, int(StopReason.HANDSHAKE_FAILED), "stale"), 0.0)
    assert events == [Stopped(StopReason.HANDSHAKE_FAILED, "stale")]


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (99, StopReason.HANDSHAKE_FAILED),
        (int(StopReason.MASTER_REQUESTED_DISCONNECT), StopReason.MASTER_REQUESTED_DISCONNECT),
        (int(StopReason.CONNECTION_ABORTED), StopReason.CONNECTION_ABORTED),
        # Reasons only the replica itself can have are not the master's to give.
        (int(StopReason.BECOMES_MASTER), StopReason.HANDSHAKE_FAILED),
        (int(StopReason.STOPPED_BY_LOCAL_REQUEST), StopReason.HANDSHAKE_FAILED),
        (int(StopReason.CANCELLED), StopReason.HANDSHAKE_FAILED),
        (int(StopReason.ITERATOR_ERROR), StopReason.HANDSHAKE_FAILED),
    ],
)
def test_reject_reasons(sent: int, expected: StopReason) -> None:
    replica = make_replica()
    assert replica.receive(m.Reject(2, sent, "no"), 0.0) == [Stopped(expected, "no")]
    assert replica.stop_reason is expected


@pytest.mark.parametrize("where", ["handshake", "loading", "streaming"])
def test_detach(where: str) -> None:
    replica = {"handshake": make_replica, "loading": load_started, "streaming": streaming}[where]()
    events = replica.receive(m.Detach(2, "detach_replica('r1')"), 1.0)
    assert events == [Stopped(StopReason.MASTER_REQUESTED_DISCONNECT, "detach_replica('r1')")]
    assert replica.stop_reason is StopReason.MASTER_REQUESTED_DISCONNECT
    assert replica.stop(StopReason.STOPPED_BY_LOCAL_REQUEST, "late") is None


def test_keepalive_is_answered_with_an_ack() -> None:
    replica = streaming()
    replica.receive(m.Txns(2, entries(6, 7)), 1.0)
    assert replica.receive(m.KeepAlive(2, 7), 2.0) == [Send(m.Ack(2, 7))]


@pytest.mark.parametrize(
    "msg",
    [
        welcome(5, SyncKind.EQUAL),
        m.Hello(2, 1, "hakit", "m", 0, 0, 0, None),
        m.PromoteReady(2, 5),
        m.MasterKilled(3),
        m.Ack(2, 5),
    ],
    ids=lambda msg: type(msg).__name__,
)
def test_unexpected_while_streaming(msg: m.Message) -> None:
    assert_aborted(streaming(), msg, f"unexpected {type(msg).__name__} while streaming")


# -- time ---------------------------------------------------------------------------------------


def test_wait_data_timeout() -> None:
    replica = make_replica(now=100.0)
    assert replica.next_deadline == 110.0
    assert replica.tick(109.9) is None
    replica.receive(welcome(5, SyncKind.EQUAL), 105.0)
    assert replica.next_deadline == 115.0
    assert replica.tick(114.9) is None
    replica.receive(m.KeepAlive(2, 5), 114.0)
    assert replica.next_deadline == 124.0
    stopped = replica.tick(124.0)
    assert stopped is not None
    assert stopped.reason is StopReason.CONNECTION_ABORTED
    assert "wait_data_timeout" in stopped.detail
    assert replica.state is ReplicaState.STOPPED
    assert replica.next_deadline == float("inf")
    assert replica.tick(1e9) is None
    assert replica.stop(StopReason.STOPPED_BY_LOCAL_REQUEST, "late") is None


def test_wait_data_timeout_during_the_handshake() -> None:
    replica = make_replica(now=0.0, wait_data_timeout=3.0)
    stopped = replica.tick(3.0)
    assert stopped is not None
    assert stopped.reason is StopReason.CONNECTION_ABORTED


def test_no_timeout_when_disabled() -> None:
    replica = make_replica(wait_data_timeout=0.0)
    assert replica.next_deadline == float("inf")
    assert replica.tick(1e9) is None
    assert replica.state is ReplicaState.HANDSHAKING


# -- force master ---------------------------------------------------------------------------------


def test_force_master() -> None:
    replica = make_replica(force_master=True)
    events = replica.receive(welcome(5, SyncKind.EQUAL), 0.0)
    assert events == [Welcomed("m", SyncKind.EQUAL, 5), Synced(5), Send(m.PromoteRequest(2))]
    assert replica.state is ReplicaState.PROMOTING
    # Commits that raced the request still arrive, and are applied, before the pause.
    assert replica.receive(m.Txns(2, entries(6, 6)), 0.1) == [Apply(entries(6, 6))]
    assert replica.receive(m.KeepAlive(2, 6), 0.2) == [Send(m.Ack(2, 6))]
    assert replica.receive(m.PromoteReady(2, 6), 0.3) == [Send(m.KillMaster(3, "r1", "mem:r1"))]
    assert replica.generation == 2  # not the master yet
    assert replica.receive(m.MasterKilled(3), 0.4) == [Promoted(3)]
    assert replica.generation == 3
    assert replica.state is ReplicaState.STOPPED
    assert replica.stop_reason is StopReason.BECOMES_MASTER
    assert replica.stop(StopReason.STOPPED_BY_LOCAL_REQUEST, "late") is None


def test_force_master_after_a_full_load() -> None:
    replica = make_replica(force_master=True)
    replica.receive(welcome(9, SyncKind.FULL), 0.0)
    replica.receive(m.SnapshotBegin(2, 9, 2, 0), 0.1)
    assert replica.receive(m.SnapshotEnd(2, 9, 0), 0.2) == [
        LoadEnd(9, 2, 2),
        Synced(9),
        Send(m.PromoteRequest(2)),
    ]


def test_force_master_after_an_incremental_sync() -> None:
    replica = make_replica(force_master=True)
    replica.receive(welcome(7, SyncKind.INCREMENTAL), 0.0)
    assert replica.state is ReplicaState.STREAMING
    assert replica.receive(m.Txns(2, entries(6, 7)), 0.1) == [
        Apply(entries(6, 7)),
        Synced(7),
        Send(m.PromoteRequest(2)),
    ]


def test_promote_ready_at_a_txid_we_do_not_hold() -> None:
    replica = streaming(force_master=True)
    assert_aborted(replica, m.PromoteReady(2, 6), "paused at txid 6 but we hold 5")


def test_promote_ready_without_a_request() -> None:
    assert_aborted(streaming(), m.PromoteReady(2, 5), "unexpected PromoteReady")


def test_master_killed_before_we_sent_kill_master() -> None:
    # Only our own KillMaster, sent once we know we hold everything, may make us the master.
    replica = streaming(force_master=True)
    assert_aborted(replica, m.MasterKilled(3), "unexpected MasterKilled")
    assert replica.generation == 2


@pytest.mark.parametrize("generation", [2, 4])
def test_master_killed_for_another_generation(generation: int) -> None:
    replica = streaming(force_master=True)
    replica.receive(m.PromoteReady(2, 5), 0.1)
    assert_aborted(replica, m.MasterKilled(generation), f"generation {generation}")
    assert replica.generation == 2


# -- following, stopping ------------------------------------------------------------------------


@pytest.mark.parametrize("generation", [2, 3])
def test_master_changed(generation: int) -> None:
    replica = streaming()
    events = replica.receive(m.MasterChanged(generation, "r9", "mem:r9"), 1.0)
    assert events == [FollowMaster("r9", "mem:r9", generation)]
    assert replica.state is ReplicaState.STOPPED
    # The session is over, like any other: later calls must not blow up.
    assert replica.stop_reason is StopReason.MASTER_REQUESTED_DISCONNECT
    assert replica.connection_lost("closed").reason is StopReason.MASTER_REQUESTED_DISCONNECT
    assert replica.stop(StopReason.STOPPED_BY_LOCAL_REQUEST, "late") is None
    with pytest.raises(LocalProtocolError):
        replica.receive(m.KeepAlive(generation, 5), 2.0)


def test_stop_returns_a_bye_once() -> None:
    replica = streaming()
    bye = replica.stop(StopReason.STOPPED_BY_LOCAL_REQUEST, "replica_stop() called")
    assert bye == m.Bye(2, int(StopReason.STOPPED_BY_LOCAL_REQUEST), "replica_stop() called")
    assert replica.state is ReplicaState.STOPPED
    assert replica.stop_reason is StopReason.STOPPED_BY_LOCAL_REQUEST
    assert replica.stop(StopReason.STOPPED_BY_LOCAL_REQUEST, "again") is None
    assert replica.stop(StopReason.CANCELLED, "again") is None
    assert replica.stop_reason is StopReason.STOPPED_BY_LOCAL_REQUEST
    with pytest.raises(LocalProtocolError):
        replica.receive(m.KeepAlive(2, 5), 1.0)


def test_stop_during_the_handshake_uses_our_own_generation() -> None:
    assert make_replica(generation=1).stop(StopReason.CANCELLED, "x") == m.Bye(1, 6, "x")


def test_connection_lost() -> None:
    replica = streaming()
    assert replica.connection_lost("reset by peer") == Stopped(
        StopReason.CONNECTION_ABORTED, "reset by peer"
    )
    assert replica.stop(StopReason.STOPPED_BY_LOCAL_REQUEST, "late") is None
    # After a stop, a broken link reports the reason the session ended with.
    stopped = streaming()
    stopped.receive(m.Detach(2, "bye"), 1.0)
    assert stopped.connection_lost("eof").reason is StopReason.MASTER_REQUESTED_DISCONNECT
