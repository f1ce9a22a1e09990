"""Small things a user trips on: names print as names, misuse is refused, errors are typed."""

from __future__ import annotations

import pytest
from trio.testing import MockClock

import hakit
from hakit import StopReason
from hakit.transports import parse_address


def test_a_stop_reason_prints_as_its_name() -> None:
    for reason in StopReason:
        assert str(reason) == reason.name
        assert f"{reason}" == reason.name
        assert f"{reason:>30}" == reason.name.rjust(30)
        assert int(reason) == reason.value  # still an IntEnum


async def test_a_transaction_outside_async_with_refuses_writes(autojump_clock: MockClock) -> None:
    async with hakit.open_node("n") as node:
        tx = node.transaction()
        with pytest.raises(hakit.LocalProtocolError, match="write inside `async with"):
            tx.put("k", 1)
        with pytest.raises(hakit.LocalProtocolError, match="never used as `async with"):
            _ = tx.result
        with (
            pytest.raises(TypeError, match="use `async with`, not `with`"),
            node.transaction(),  # type: ignore[attr-defined]
        ):
            pass
        async with node.transaction() as tx:
            tx.put("k", 1)
            with pytest.raises(hakit.LocalProtocolError, match="block has not ended yet"):
                _ = tx.result
        assert tx.result.txid == 1
        with pytest.raises(hakit.LocalProtocolError, match="a write after the transaction"):
            tx.delete("k")
        with pytest.raises(hakit.LocalProtocolError, match="used once"):
            async with tx:
                pass
        async with node.transaction() as empty:
            pass
        with pytest.raises(hakit.LocalProtocolError, match="it wrote nothing"):
            _ = empty.result
        assert node.txid == 1 and node.get("k") == 1


async def test_a_node_never_started_refuses_commits(autojump_clock: MockClock) -> None:
    node = hakit.Node("idle")
    with pytest.raises(hakit.NodeClosedError, match="'idle' is not running: start it with"):
        async with node.transaction() as tx:
            tx.put("k", 1)
    assert node.txid == 0


async def test_a_closed_node_says_closed(autojump_clock: MockClock) -> None:
    async with hakit.open_node("n") as node:
        pass
    with pytest.raises(hakit.NodeClosedError, match="'n' is closed"):
        async with node.transaction() as tx:
            tx.put("k", 1)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("tcp://127.0.0.1:7000", '"tcp://" URLs are not a supported form'),
        ("unix:///tmp/x", '"unix://" URLs are not a supported form'),
        ("127.0.0.1", "no port"),
        ("::1:7000", "an IPv6 address needs brackets"),
    ],
)
def test_a_bad_address_is_a_hakit_error_and_a_value_error(text: str, why: str) -> None:
    with pytest.raises(hakit.InvalidArgumentError) as info:
        parse_address(text)
    assert isinstance(info.value, ValueError) and isinstance(info.value, hakit.HakitError)
    assert f"({why})" in str(info.value)


async def test_attach_to_a_bad_address_raises_the_same(autojump_clock: MockClock) -> None:
    async with hakit.open_node("n") as node:
        with pytest.raises(hakit.InvalidArgumentError, match="URLs are not a supported form"):
            await node.attach_master("tcp://127.0.0.1:7000")


async def test_an_error_in_open_node_comes_out_as_itself(autojump_clock: MockClock) -> None:
    with pytest.raises(hakit.NotMasterError) as info:
        async with hakit.open_node("n", address="127.0.0.1:0"):
            raise hakit.NotMasterError("refused")
    assert type(info.value) is hakit.NotMasterError
    assert info.value.__context__ is None  # no ExceptionGroup behind it either


async def test_an_error_in_open_cluster_comes_out_as_itself(autojump_clock: MockClock) -> None:
    duplicate = "already has a node named 'a'"
    with pytest.raises(hakit.InvalidArgumentError, match=duplicate):  # noqa: PT012
        async with hakit.open_cluster(seed=1) as cluster:
            await cluster.add_node("a")
            await cluster.add_node("a")


async def test_several_errors_at_once_stay_grouped(autojump_clock: MockClock) -> None:
    async def fail(n: int) -> None:
        raise KeyError(n)

    with pytest.raises(ExceptionGroup) as info:  # noqa: PT012 - the block is the test
        async with hakit.open_cluster(seed=1) as cluster:
            cluster._nursery.start_soon(fail, 1)
            await fail(2)
    assert sorted(e.args[0] for e in info.value.exceptions) == [1, 2]
