"""Guest-mode tests: plain pytest tests that run an asyncio loop hosting the trio run.

Like trio's own ``aiotrio_run`` tests, each test is a coroutine run by ``asyncio.run``; the
trio run inside uses a `MockClock` with autojump, so trio's timeouts cost no real time.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio.testing

import hakit.jupyter as hj
from hakit.jupyter import _guest


@pytest.fixture
def aio() -> Iterator[Callable[[Callable[[], Awaitable[Any]]], Any]]:
    """Run a coroutine function on a fresh asyncio loop, with the guest run on virtual time.

    After the test the run must be closed cleanly, with no warning (e.g. "abandoned").
    """

    def run(main: Callable[[], Awaitable[Any]], *, clock: bool = True) -> Any:
        _guest.set_clock(trio.testing.MockClock(autojump_threshold=0) if clock else None)

        async def wrapped() -> Any:
            try:
                return await main()
            finally:
                hj.close()

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return asyncio.run(wrapped())

    yield run
    _guest.set_clock(None)
    assert _guest.current_runtime() is None, "a test left the guest run open"


async def demo_cluster() -> tuple[hj.LiveCluster, dict[str, hj.Handle[Any]]]:
    """The DESIGN 6.2 cluster: alpha the master, beta and gamma attached and synced."""
    cluster = hj.open_cluster(seed=1)
    for name in ("alpha", "beta", "gamma"):
        cluster.add_node(name)
    cluster.make_master("alpha")
    handles = {name: cluster.attach(name, "alpha") for name in ("beta", "gamma")}
    await cluster.wait_synced("beta", "gamma")
    return cluster, handles
