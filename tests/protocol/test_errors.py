"""The exception hierarchy: one root, standard bases where they help, facts as attributes."""

from __future__ import annotations

import inspect

import pytest

from hakit import protocol
from hakit.protocol import (
    CommitFailedError,
    HAIOError,
    HakitError,
    HAProtocolError,
    InvalidArgumentError,
    KilledByReplicaError,
    LocalProtocolError,
    NetworkTimeoutError,
    NodeClosedError,
    NoQuorumError,
    NotMasterError,
    ProtocolError,
    RemoteProtocolError,
    ReplicationError,
    StopReason,
)

ERRORS = [
    obj
    for name, obj in vars(protocol).items()
    if inspect.isclass(obj) and issubclass(obj, BaseException) and not name.startswith("_")
]


def test_every_exported_error_is_a_hakit_error() -> None:
    assert len(ERRORS) >= 14
    for cls in ERRORS:
        assert issubclass(cls, HakitError), cls


def test_standard_bases() -> None:
    assert issubclass(NetworkTimeoutError, TimeoutError)
    assert issubclass(NetworkTimeoutError, ReplicationError)
    assert issubclass(InvalidArgumentError, ValueError)
    assert not issubclass(HakitError, ValueError)


def test_protocol_errors_split_local_and_remote() -> None:
    assert issubclass(LocalProtocolError, ProtocolError)
    assert issubclass(RemoteProtocolError, ProtocolError)
    assert not issubclass(LocalProtocolError, RemoteProtocolError)
    assert not issubclass(RemoteProtocolError, LocalProtocolError)


def test_remote_protocol_error_carries_a_stop_reason() -> None:
    assert RemoteProtocolError("x").stop_reason is StopReason.CONNECTION_ABORTED
    exc = RemoteProtocolError("bad hello", stop_reason=StopReason.HANDSHAKE_FAILED)
    assert exc.stop_reason is StopReason.HANDSHAKE_FAILED
    assert str(exc) == "bad hello"


@pytest.mark.parametrize("cls", [ReplicationError, NetworkTimeoutError, HAProtocolError, HAIOError])
def test_replication_errors_carry_stop_reason_and_address(cls: type[ReplicationError]) -> None:
    assert issubclass(cls, ReplicationError)
    exc = cls("master not reached", stop_reason=StopReason.CONNECTION_ABORTED, address="h:1")
    assert exc.stop_reason is StopReason.CONNECTION_ABORTED
    assert exc.address == "h:1"
    assert str(exc) == "master not reached"
    assert cls("x", stop_reason=StopReason.HANDSHAKE_FAILED).address is None
    with pytest.raises(TypeError):
        cls("the stop reason is required")  # type: ignore[call-arg]


def test_not_master_error_names_the_master() -> None:
    exc = NotMasterError("node r1 is a replica", master_address="10.0.0.1:7000")
    assert exc.master_address == "10.0.0.1:7000"
    assert "10.0.0.1:7000" in str(exc)
    assert str(exc).startswith("node r1 is a replica")
    unknown = NotMasterError("node r1 is a replica")
    assert unknown.master_address is None
    assert str(unknown) == "node r1 is a replica"


def test_no_quorum_error() -> None:
    exc = NoQuorumError(1, 2)
    assert (exc.attached, exc.quorum) == (1, 2)
    assert "1 replica" in str(exc)
    assert "quorum is 2" in str(exc)


def test_commit_failed_error() -> None:
    assert CommitFailedError("stepped down", txid=7).txid == 7
    assert CommitFailedError("stepped down").txid is None


def test_killed_by_replica_error() -> None:
    exc = KilledByReplicaError("r1", "mem:r1", 2)
    assert (exc.new_master, exc.address, exc.generation) == ("r1", "mem:r1", 2)
    assert "'r1'" in str(exc)
    assert "generation 2" in str(exc)
    assert "mem:r1" in str(exc)
    assert KilledByReplicaError("r1", None, 2).address is None


def test_node_closed_error_is_a_hakit_error() -> None:
    assert issubclass(NodeClosedError, HakitError)
