"""Time control (pause, step, speed, resume) and the fault twins of the live cluster."""

from __future__ import annotations

import math

import pytest
import trio.testing

import hakit
import hakit.jupyter as hj

from .conftest import demo_cluster


def test_step_walks_a_commit_message_by_message(aio) -> None:
    async def main() -> None:
        cluster, _ = await demo_cluster()
        clock = cluster._runtime.clock
        assert isinstance(clock, trio.testing.MockClock)
        cluster.pause()
        assert cluster.paused and clock.rate == 0 and clock.autojump_threshold == math.inf
        before = cluster.now()
        write = cluster.write("k", 1)
        seen = []
        while not write.done:
            event = await cluster.step()
            assert isinstance(event, hakit.MessageEvent) and event.action == "delivered"
            assert event.kind != "KEEPALIVE"
            seen.append((event.kind, event.sender, event.receiver))
            assert cluster.paused  # each step stops again
        # The commit went out to both replicas and came back acknowledged, one arrival a step.
        assert sorted(seen) == sorted(
            [("TXNS", "alpha", "beta"), ("TXNS", "alpha", "gamma"),
             ("ACK", "beta", "alpha"), ("ACK", "gamma", "alpha")]
        )  # fmt: skip
        assert cluster.now() > before
        assert (await write).txid == 1
        stopped_at = cluster.now()
        cluster.resume()
        assert not cluster.paused and clock.autojump_threshold == 0 and clock.rate == 1
        await cluster.write("k", 2)
        assert cluster.now() > stopped_at

    aio(main)


def test_speed_is_the_clock_rate(aio) -> None:
    async def main() -> None:
        cluster = hj.open_cluster(seed=3)
        clock = cluster._runtime.clock
        assert cluster.speed == 1.0
        cluster.speed = 0.1
        assert clock.rate == pytest.approx(0.1)
        cluster.pause()
        cluster.speed = 10
        assert clock.rate == 0  # paused: the new speed waits for resume
        cluster.resume()
        assert clock.rate == 10 and cluster.speed == 10
        for bad in (0, -1, "fast", True, 1e9):
            with pytest.raises(ValueError, match="speed"):
                cluster.speed = bad  # type: ignore[assignment]

    aio(main)


def test_fault_twins_do_what_the_network_does(aio) -> None:
    async def main() -> None:
        cluster, handles = await demo_cluster()
        assert cluster.latency == hj._live.DEFAULT_LATENCY
        cluster.hold("alpha", "beta")
        assert cluster.cluster.network.holds == [("alpha", "beta")]
        cluster.release("alpha", "beta")
        assert cluster.cluster.network.holds == []
        await cluster.write("before", 1)
        cluster.crash("beta")
        with pytest.raises(hakit.NodeClosedError, match="crashed"):
            await handles["beta"]
        assert cluster.cluster.network.is_down("beta")
        assert any(isinstance(e, hakit.NodeCrashed) for e in cluster.cluster.events)
        result = await cluster.write("during", 2)
        assert result.acked == ("gamma",)
        beta = cluster.restart("beta")
        assert cluster["beta"] is beta and beta.get("before") is None  # memory: back empty
        cluster.attach("beta", "alpha")
        await cluster.wait_synced("beta")
        assert beta.get("during") == 2

    aio(main)
