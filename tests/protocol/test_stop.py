"""`StopReason`: the values of DESIGN 4.3, a description for each, and which are clean."""

from __future__ import annotations

import pytest

from hakit.protocol import StopReason


def test_values_and_names() -> None:
    assert [(r.value, r.name) for r in StopReason] == [
        (0, "CONNECTION_ABORTED"),
        (1, "MASTER_REQUESTED_DISCONNECT"),
        (2, "HANDSHAKE_FAILED"),
        (3, "STOPPED_BY_LOCAL_REQUEST"),
        (4, "BECOMES_MASTER"),
        (5, "ITERATOR_ERROR"),
        (6, "CANCELLED"),
    ]


def test_is_an_int_enum() -> None:
    assert StopReason(4) is StopReason.BECOMES_MASTER
    assert StopReason.CANCELLED == 6
    assert int(StopReason.HANDSHAKE_FAILED) == 2


@pytest.mark.parametrize("reason", list(StopReason))
def test_every_reason_is_described_in_one_line(reason: StopReason) -> None:
    text = reason.describe()
    assert isinstance(text, str)
    assert text.strip()
    assert "\n" not in text


def test_descriptions_are_distinct() -> None:
    assert len({r.describe() for r in StopReason}) == len(StopReason)


def test_descriptions_say_what_happened() -> None:
    assert "wait_data_timeout" in StopReason.CONNECTION_ABORTED.describe()
    assert "replica_stop" in StopReason.STOPPED_BY_LOCAL_REQUEST.describe()
    assert "master" in StopReason.BECOMES_MASTER.describe()


def test_is_clean() -> None:
    clean = {r for r in StopReason if r.is_clean}
    assert clean == {
        StopReason.MASTER_REQUESTED_DISCONNECT,
        StopReason.STOPPED_BY_LOCAL_REQUEST,
        StopReason.BECOMES_MASTER,
        StopReason.CANCELLED,
    }
    # Failures are not clean.
    assert not StopReason.CONNECTION_ABORTED.is_clean
    assert not StopReason.HANDSHAKE_FAILED.is_clean
    assert not StopReason.ITERATOR_ERROR.is_clean
