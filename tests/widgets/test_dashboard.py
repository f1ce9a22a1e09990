"""The dashboard without a browser: real buttons clicked, real inputs set (ipywidgets'
DummyComm stands in for the front-end), then the cluster and the widgets checked."""

from __future__ import annotations

import json

import pytest

import hakit
import hakit.jupyter as hj
from hakit.widgets import ClusterDashboard, TopologyView, register_section
from hakit.widgets import _dashboard as dash

from ..jupyter.conftest import demo_cluster

pytest.importorskip("ipywidgets")


def click(button) -> None:
    """A front-end click: the message a browser sends, handled as the kernel handles it."""
    button._handle_custom_msg({"event": "click"}, [])


def set_input(widget, **state) -> None:
    """A front-end edit: trait sync from the browser."""
    widget.set_state(state)


def test_the_live_cluster_shows_as_the_dashboard(aio) -> None:
    async def main() -> None:
        cluster, _ = await demo_cluster()
        bundle = cluster._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
        assert "<table>" in bundle["text/html"] and "alpha" in bundle["text/html"]
        assert bundle["text/plain"].startswith("<LiveCluster 'hakit' seed=1 running")
        board = cluster.dashboard()
        assert isinstance(board, ClusterDashboard) and cluster.dashboard() is board
        view = bundle["application/vnd.jupyter.widget-view+json"]
        assert view["model_id"] == board.model_id
        assert board.section_titles == [
            "Controls", "Messages", "Stop log", "Timeline", "Faults", "Clock"
        ]  # fmt: skip
        # The topology is an anywidget with its front-end code in the package.
        assert isinstance(board.topology, TopologyView)
        esm = board.topology._esm if isinstance(board.topology._esm, str) else ""
        assert "export default" in (esm or (dash.STATIC / "topology.js").read_text())
        assert "https://" not in (dash.STATIC / "topology.js").read_text()

    aio(main)


def test_every_control_is_its_twin(aio) -> None:
    async def main() -> None:
        cluster, handles = await demo_cluster()
        board = ClusterDashboard(cluster)
        # add a node
        set_input(board.new_name, value="delta")
        click(board.add_button)
        assert cluster["delta"].address == "mem:delta"
        assert board.new_name.value == ""
        board.refresh()
        assert "delta" in board.replica_pick.options and "delta" in board.table.value
        # attach it to alpha (a real Dropdown change, then the click)
        set_input(board.replica_pick, index=board.replica_pick.options.index("delta"))
        set_input(board.target_pick, index=board.target_pick.options.index("alpha"))
        click(board.attach_button)
        attach = cluster.attach_handle("delta")
        assert attach is not None
        await cluster.wait_synced("delta")
        # write and delete on the master
        set_input(board.key, value="colour")
        set_input(board.value, value="blue")
        click(board.write_button)
        await cluster.wait_until(lambda: cluster["delta"].get("colour") == "blue")
        click(board.delete_button)
        await cluster.wait_until(lambda: cluster["delta"].get("colour") is None)
        # stop, then attach again and cancel, then again and detach
        click(board.stop_button)
        assert await attach is hakit.StopReason.STOPPED_BY_LOCAL_REQUEST
        click(board.attach_button)
        await cluster.wait_synced("delta")
        click(board.cancel_button)
        assert await cluster.attach_handle("delta") is hakit.StopReason.CANCELLED
        click(board.attach_button)
        await cluster.wait_synced("delta")
        click(board.detach_button)
        detached = cluster.attach_handle("delta")
        assert await detached is hakit.StopReason.MASTER_REQUESTED_DISCONNECT
        # partition one node from the others, then heal
        set_input(board.cut_a, index=board.cut_a.options.index("beta"))
        click(board.partition_button)
        board.refresh()
        assert "hakit-conn-cut" in board.table.value and "partitioned" in board.header.value
        assert {r.name: r.connection for r in cluster.rows()}["beta"] == "cut"
        click(board.heal_button)
        board.refresh()
        assert "partitioned" not in board.header.value
        # force master gamma: roles change, beta follows, the log tells why
        set_input(board.node_pick, index=board.node_pick.options.index("gamma"))
        click(board.force_button)
        await cluster.wait_until(lambda: cluster.master is cluster["gamma"])
        await cluster.wait_until(lambda: cluster["beta"].statistics().master == "gamma")
        assert not handles["beta"].done
        await cluster.wait_until(lambda: "force master gamma: BECOMES_MASTER" in board.status.value)
        board.refresh()
        assert "master <b>gamma</b>" in board.header.value
        assert "BECOMES_MASTER" in board.log_view.value
        assert hakit.StopReason.BECOMES_MASTER.describe() in board.log_view.value
        graph = board.topology.graph
        assert [n["name"] for n in graph["nodes"] if n["role"] == "master"] == ["gamma"]
        assert {(link["replica"], link["master"]) for link in graph["links"]} >= {("beta", "gamma")}
        # make master on a fresh node
        set_input(board.new_name, value="epsilon")
        click(board.add_button)
        board.refresh()
        set_input(board.node_pick, index=board.node_pick.options.index("epsilon"))
        click(board.master_button)
        assert cluster["epsilon"].role is hakit.Role.MASTER

    aio(main)


def test_a_click_that_fails_shows_its_error_and_logs_it(aio) -> None:
    async def main() -> None:
        cluster = hj.open_cluster()
        board = ClusterDashboard(cluster)
        click(board.add_button)  # no name typed
        assert "type a name" in board.status.value and "hakit-status-error" in board.status.value
        set_input(board.new_name, value="solo")
        click(board.add_button)
        click(board.write_button)  # no master
        assert "make_master" in board.status.value
        board.refresh()
        assert "NotebookError" in board.log_view.value
        # a task that fails after the click: shown in the status line and the log
        set_input(board.node_pick, index=0)
        click(board.master_button)
        set_input(board.parts, value="anyone?")
        click(board.send_button)  # a request to the master, which has no handler
        await cluster.wait_until(lambda: "failed" in board.status.value)
        assert "NoServerError" in board.status.value
        board.refresh()
        assert "request from solo to the master failed: NoServerError" in board.log_view.value

    aio(main)


def test_channel_panel_request_one_way_and_errors(aio) -> None:
    async def main() -> None:
        cluster, _ = await demo_cluster()
        got = []

        async def handler(msg: hakit.ChannelMessage) -> None:
            got.append(msg.parts)
            if msg.need_response:
                await msg.respond(*[p.upper() for p in msg.parts])

        cluster["alpha"].set_msg_dispatch(handler)
        board = ClusterDashboard(cluster)
        set_input(board.sender, index=board.sender.options.index("beta"))
        set_input(board.parts, value="ping\npong")
        set_input(board.multiple, value=True)
        click(board.send_button)  # to the master, as a request
        await cluster.wait_until(lambda: "2 parts" in board.answer.value)
        assert "PING" in board.answer.value and "PONG" in board.answer.value
        assert "b&#x27;" not in board.answer.value  # no Python reprs
        set_input(board.multiple, value=False)
        click(board.send_button)
        await cluster.wait_until(lambda: "BufferSmallError" in board.answer.value)
        assert dash.error_meaning(hakit.BufferSmallError("x")) in board.answer.value
        set_input(board.kind, index=board.kind.options.index("one-way"))
        set_input(board.parts, value="note")
        click(board.send_button)
        await cluster.wait_until(lambda: [b"note"] in got)
        await cluster.wait_until(lambda: "one-way" in board.answer.value)
        # a node without a handler, by name
        set_input(board.kind, index=board.kind.options.index("request"))
        options = [label for label, _ in board.receiver.options]
        set_input(board.receiver, index=options.index("gamma"))
        click(board.send_button)
        await cluster.wait_until(lambda: "NoServerError" in board.answer.value)
        assert dash.error_meaning(hakit.NoServerError("x")) in board.answer.value

    aio(main)


def test_refresh_is_throttled_and_batched(aio) -> None:
    async def main() -> None:
        cluster, _ = await demo_cluster()
        board = ClusterDashboard(cluster, interval=3600)
        before = board._refreshes
        for i in range(50):
            await cluster.write(f"k{i}", i)
        assert board._refreshes == before  # the watcher ran, the throttle held
        sent: list[dict] = []
        board.table.comm.send = lambda data=None, **kw: sent.append(data)
        board.refresh()
        # one state message for the table, however many traits changed
        assert len([m for m in sent if m and m.get("method") == "update"]) <= 1
        board.interval = 0
        await cluster.write("more", 1)
        await cluster.wait_until(lambda: board._refreshes > before + 1)
        json.dumps(board.topology.graph)  # plain data for the front-end

    aio(main)


def test_sections_are_registered_in_one_place(aio) -> None:
    async def main() -> None:
        import ipywidgets as w

        cluster = hj.open_cluster()
        seen = []
        label = w.HTML("timeline goes here")

        def timeline(board: ClusterDashboard):
            return "Timeline", label, lambda: seen.append(board)

        register_section(timeline)
        try:
            board = ClusterDashboard(cluster)
        finally:
            dash._registered.remove(timeline)
        assert board.section_titles[-1] == "Timeline"
        assert board.tabs.children[-1] is label and board.tabs.titles[-1] == "Timeline"
        board.refresh()
        assert seen == []  # a tab that is not on show is not refreshed
        set_input(board.tabs, selected_index=len(board.tabs.children) - 1)
        assert seen == [board]  # picking the tab brings it up to date
        board.refresh()
        assert seen == [board, board]

    aio(main)


def test_closed_cluster_disables_the_controls(aio) -> None:
    async def main() -> None:
        cluster = hj.open_cluster()
        board = ClusterDashboard(cluster)
        cluster.close()
        board.refresh()
        assert board.add_button.disabled and board.send_button.disabled
        assert "closed" in board.header.value

    aio(main)
