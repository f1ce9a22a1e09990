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
        bytes_sent: bytes sent to it so far.
    """

    replica: str
    state: str
    sync: str
    acked_txid: int
    lag: int
    unsent_bytes: int
    bytes_sent: int


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
        commit_failures: commits that failed or detached a replica for falling behind.
        applied: transactions applied here as a replica.
        refused_connections: incoming connections refused for bad input.
        replicas: the attached replicas (on a master).
        master: the master's name (on a replica).
        writes_disabled: whether the node refuses writes after stepping down.
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
