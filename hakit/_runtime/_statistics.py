"""Frozen statistics records (trio style: ``x.statistics()`` returns a snapshot)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    """One attached replica, as its master sees it.

    Attributes:
        replica: the replica's name.
        state: ``"syncing"``, ``"streaming"``, ``"promoting"``...
        sync: how it was synced (``"equal"``, ``"incremental"``, ``"full"``).
        acked_txid: the last txid it acknowledged.
        lag: how many transactions it is behind the master.
        unsent_bytes: bytes queued for it and not yet sent.
        bytes_sent: bytes sent to it so far, a full load's snapshot included.
        load_progress: the share (0-1) of a full load's key/value pairs sent so far, or
            None when no full load was streamed to it.
    """

    replica: str
    state: str
    sync: str
    acked_txid: int
    lag: int
    unsent_bytes: int
    bytes_sent: int
    load_progress: float | None = None


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """A node's message channel traffic, as counters since the node started.

    Attributes:
        messages_sent: messages sent, one-way and requests.
        requests_sent: of those, requests.
        answers_received: requests that got their answer.
        requests_failed: requests that ended in an error other than a timeout.
        requests_timed_out: requests that got no answer within their timeout.
        late_answers_dropped: answers that came after their request timed out or gave up.
        messages_received: messages received, one-way and requests.
        requests_received: of those, requests.
        answers_sent: answers sent back by this node's handler.
        handler_errors: handler calls that raised or did not answer a request.
        unhandled: messages that arrived while no handler was set.
        pending_requests: requests waiting for their answer now.
        outgoing_connections: channel connections this node opened, now open.
        incoming_connections: channel connections other nodes opened to it, now open.
    """

    messages_sent: int = 0
    requests_sent: int = 0
    answers_received: int = 0
    requests_failed: int = 0
    requests_timed_out: int = 0
    late_answers_dropped: int = 0
    messages_received: int = 0
    requests_received: int = 0
    answers_sent: int = 0
    handler_errors: int = 0
    unhandled: int = 0
    pending_requests: int = 0
    outgoing_connections: int = 0
    incoming_connections: int = 0


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """A node's counters at one moment.

    Attributes:
        name: the node's name.
        role: ``"standalone"``, ``"master"`` or ``"replica"``.
        address: where it listens.
        generation: its generation.
        txid: its last transaction id.
        keys: how many keys its database holds.
        commits: transactions committed here.
        commit_failures: commits that failed (`NoQuorumError`, `CommitFailedError`, the node
            closing while they waited) or succeeded only by detaching a replica that fell
            behind (`synch_timeout`, or the asynchronous buffer).
        applied: transactions applied here as a replica.
        refused_connections: incoming connections refused for bad input.
        replicas: the attached replicas (on a master).
        master: the master's name (on a replica).
        writes_disabled: whether the node refuses writes after stepping down.
        channels: its message channel traffic.
    """

    name: str
    role: str
    address: str | None
    generation: int
    txid: int
    keys: int
    commits: int
    commit_failures: int
    applied: int
    refused_connections: int
    replicas: tuple[LinkStatistics, ...]
    master: str | None
    writes_disabled: bool
    channels: ChannelStatistics
