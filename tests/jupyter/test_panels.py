"""The faults and clock panels: each button does what its twin does (no browser needed)."""

from __future__ import annotations

import hakit
from hakit.widgets import ClockPanel, FaultsPanel, Timeline

from .conftest import demo_cluster


def test_the_faults_panel_drives_the_network_and_the_nodes(aio) -> None:
    async def main() -> None:
        cluster, _ = await demo_cluster()
        panel = FaultsPanel(cluster)
        network = cluster.cluster.network
        assert list(panel.a.options) == ["alpha", "beta", "gamma"]
        assert (panel.a.value, panel.b.value) == ("alpha", "beta")
        panel.hold_button.click()
        assert network.holds == [("alpha", "beta")]
        assert "held: alpha" in panel.summary.value
        panel.release_button.click()
        panel.partition_button.click()
        assert network.partitions == [("alpha", "beta")]
        panel.heal_button.click()
        assert network.partitions == []
        panel.mean.value, panel.jitter.value = 40.0, 10.0
        panel.latency_button.click()
        assert network.latency("alpha", "beta") == (0.04, 0.01)
        panel.loss.value = 0.25
        panel.loss_button.click()
        assert network.loss("beta", "alpha") == 0.25
        panel.jitter.value = 90.0  # more than the mean: the twin refuses, the panel says so
        panel.latency_button.click()
        assert "must not exceed the mean" in panel.status.value
        assert "hakit-panel-error" in panel.status.value
        panel.node.value = "gamma"
        panel.crash_button.click()
        assert network.is_down("gamma") and "crashed: gamma" in panel.summary.value
        panel.restart_button.click()
        assert not network.is_down("gamma") and cluster["gamma"].role is hakit.Role.STANDALONE
        assert "restart gamma: done" in panel.status.value
        cluster.add_node("delta")
        panel.refresh()
        assert "delta" in panel.node.options

    aio(main)


def test_the_clock_panel_pauses_steps_and_paces(aio) -> None:
    async def main() -> None:
        cluster, _ = await demo_cluster()
        panel = ClockPanel(cluster)
        assert "running at \u00d71" in panel.clock.value
        panel.speed.value = 0.1
        assert cluster.speed == 0.1
        panel.pause_button.click()
        assert cluster.paused and "paused" in panel.clock.value
        write = cluster.write("slow", 1)
        handle = panel.step()
        assert handle is not None
        event = await handle
        assert isinstance(event, hakit.MessageEvent) and event.kind == "TXNS"
        assert "TXNS alpha \u2192" in panel.status.value
        assert not write.done
        panel.resume_button.click()
        assert not cluster.paused
        await write

    aio(main)


def test_a_live_timeline_of_the_notebook_cluster(aio) -> None:
    async def main() -> None:
        cluster, _ = await demo_cluster()
        timeline = Timeline(cluster.cluster.events, live=True)
        timeline.min_interval = 0.0
        kinds = {m["kind"] for m in timeline.data["messages"]}
        assert {"HELLO", "WELCOME", "ACK"} <= kinds
        await cluster.write("x", 1)
        assert timeline.refresh()
        assert any(m["kind"] == "TXNS" for m in timeline.data["messages"])

    aio(main)
