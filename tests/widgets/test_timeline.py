"""The message timeline: its data, the widget's state, exports, `hakit replay`, hj.replay.

Widget state is tested without a browser (ipywidgets' DummyComm): traits, `set_state` as a
front-end click or scrub would send it, and the exported SVG/HTML.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio
import trio.testing

import hakit
from hakit import MasterParams
from hakit._cli import main as cli_main
from hakit.widgets import Timeline
from hakit.widgets._timeline_data import TimelineBuilder, timeline_data

from ..runtime.conftest import commit, run_attach
from ..runtime.test_event_log import every_fault


def scripted(script, seed: int = 4) -> hakit.EventLog:  # type: ignore[no-untyped-def]
    async def main() -> hakit.EventLog:
        async with trio.open_nursery() as nursery:
            async with hakit.open_cluster(seed=seed, latency=(0.004, 0.002)) as cluster:
                await script(cluster, nursery)
                await trio.sleep(1.5)  # a keep-alive or so
            nursery.cancel_scope.cancel()
        return cluster.events

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def handshake(cluster: hakit.Cluster, nursery: trio.Nursery) -> None:
    master = await cluster.add_node("m")
    master.set_master_params(MasterParams())
    replica = await cluster.add_node("r")
    run_attach(nursery, replica, "mem:m")
    await master.attach_replica(timeout=5)
    await commit(master, greeting="hello")


@pytest.fixture(scope="module")
def handshake_log() -> hakit.EventLog:
    return scripted(handshake)


@pytest.fixture(scope="module")
def fault_log() -> hakit.EventLog:
    return scripted(every_fault, seed=7)


def test_a_handshake_draws_as_arrows_between_lanes(handshake_log: hakit.EventLog) -> None:
    data = timeline_data(handshake_log)
    assert data["lanes"] == ["m", "r"]
    kinds = [(m["kind"], m["from"], m["to"]) for m in data["messages"]]
    assert kinds[:4] == [("CONNECT", "r", "m"), ("HELLO", "r", "m"), ("WELCOME", "m", "r"),
                         ("ACK", "r", "m")]  # fmt: skip
    assert ("TXNS", "m", "r") in kinds
    hello = data["messages"][1]
    assert hello["outcome"] == "delivered" and hello["end"] > hello["sent"]
    assert hello["fields"]["node"] == "r" and hello["t_end"] > hello["t_sent"] >= 0
    assert data["rows"] == sorted(data["rows"]) and data["rows"][0] == 0.0
    assert all(m["kind"] != "KEEPALIVE" for m in data["messages"])
    roles = [(mark["lane"], mark["label"]) for mark in data["marks"] if mark["type"] == "role"]
    assert ("m", "master (gen 1)") in roles and ("r", "replica (gen 1)") in roles


def test_faults_are_marked(fault_log: hakit.EventLog) -> None:
    data = timeline_data(fault_log)
    outcomes = {m["outcome"] for m in data["messages"]}
    assert {"delivered", "dropped"} <= outcomes
    assert any(m["held"] is not None for m in data["messages"])
    assert any(m["retransmits"] for m in data["messages"])
    types = {mark["type"] for mark in data["marks"]}
    assert {"role", "crash", "restart", "stop", "synced"} <= types
    labels = " ".join(band["label"] for band in data["bands"])
    for word in ("partition", "heal", "hold", "release", "latency", "loss"):
        assert word in labels
    # The window keeps the newest messages and says how many it left out.
    small = timeline_data(fault_log, window=10)
    assert len(small["messages"]) == 10 and small["cut"] == len(data["messages"]) - 10
    assert small["messages"][-1]["id"] == data["messages"][-1]["id"]
    everything = timeline_data(fault_log, hidden=())
    assert any(m["kind"] == "KEEPALIVE" for m in everything["messages"])


@pytest.mark.parametrize("window", [None, 1500, 40, 10])
def test_fed_a_few_events_at_a_time_it_draws_what_a_full_rebuild_draws(
    fault_log: hakit.EventLog, window: int | None
) -> None:
    events = list(fault_log)
    full = timeline_data(events, window=window, dropped=3)
    for size in (1, 7, 250):
        builder = TimelineBuilder(window=window)
        for start in range(0, len(events), size):
            builder.feed(events[start : start + size])
            builder.data()  # a live redraw after each read (it forgets what the window passed)
        assert builder.data(dropped=3) == full


def test_only_frames_that_can_be_drawn_are_decoded(
    fault_log: hakit.EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    decode = hakit.MessageEvent.fields

    def fields(event: hakit.MessageEvent) -> dict[str, object]:
        decoded.append(event.id)
        return decode.fget(event)  # type: ignore[attr-defined,no-any-return]

    monkeypatch.setattr(hakit.MessageEvent, "fields", property(fields))
    sent = [e for e in fault_log if isinstance(e, hakit.MessageEvent) and e.action == "sent"]
    data = timeline_data(fault_log, window=10)
    # Only those drawn, and those whose txid a state change shows (the latest before the
    # window, per lane, and the acks of hidden keep-alives inside it).
    assert len(decoded) <= len(data["messages"]) + len(data["states"]) < len(sent) / 2
    decoded.clear()
    assert timeline_data(fault_log, window=None)["messages"]
    assert len(set(decoded)) == len(decoded)  # each frame once, for its fields and its txid


def _replay(states: list[dict[str, object]], applies: object) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for s in states:
        if applies(s):  # type: ignore[operator]
            values = {k: s[k] for k in ("role", "generation", "txid") if k in s}
            out.setdefault(str(s["lane"]), {}).update(values)
    return out


def test_a_window_merges_older_state_changes_and_scrubs_the_same(
    fault_log: hakit.EventLog,
) -> None:
    everything = timeline_data(fault_log, window=None)
    small = timeline_data(fault_log, window=10)
    # What happened before the first drawn message is one change per lane, on the first row.
    before = [s for s in small["states"] if s["t"] < small["rows"][0]]
    assert len({s["lane"] for s in before}) == len(before) > 0
    assert all(s["row"] == 0 for s in before)
    assert len(small["states"]) < len(everything["states"])
    last = len(small["rows"]) - 1
    for row, t in enumerate(small["rows"]):
        # Every node's role, generation and txid at each drawn row: as with no window at all.
        drawn = _replay(small["states"], lambda s, row=row: s["row"] <= row)
        assert drawn == _replay(
            everything["states"], lambda s, t=t, row=row: s["t"] <= t or row == last
        )


def test_the_widget_scrubs_selects_and_follows(handshake_log: hakit.EventLog) -> None:
    timeline = Timeline(handshake_log)
    state = timeline.get_state()
    assert state["data"]["lanes"] == ["m", "r"] and state["scrub"] == -1
    # At the replica's ack of the first transaction: both hold txid 1.
    ack = [m for m in timeline.data["messages"] if m["kind"] == "ACK"][-1]
    during = timeline.state_at(ack["sent"])
    assert during["m"] == {"role": "master", "generation": 1, "txid": 1}
    assert during["r"] == {"role": "replica", "generation": 1, "txid": 1}
    # At the end the cluster was closed: the replica stopped.
    assert timeline.state_at()["r"]["role"] == "standalone"
    # Scrub to just after the master's role change: the replica is not attached yet.
    row = timeline.scrub_to(0.0)
    assert timeline.scrub == row == 0
    early = timeline.state_at(row)
    assert early["m"]["role"] == "master" and early["r"]["role"] == "standalone"
    # The front end sends a click as a change of `selected`.
    hello = next(m for m in timeline.data["messages"] if m["kind"] == "HELLO")
    timeline.set_state({"selected": hello["id"]})
    assert timeline.selected == hello["id"]
    assert timeline.message(hello["id"])["fields"]["cluster"] == "hakit"
    with pytest.raises(KeyError):
        timeline.message("nope")
    timeline.set_state({"scrub": 3})
    assert timeline.scrub == 3
    timeline.show_kinds(hidden=())
    assert any(m["kind"] == "KEEPALIVE" for m in timeline.data["messages"])


async def test_a_live_timeline_follows_the_cluster(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async with hakit.open_cluster(seed=2, latency=(0.004, 0.002)) as cluster:
        await handshake(cluster, nursery)
        timeline = Timeline(cluster.events, live=True)
        assert timeline.follow
        timeline.min_interval = 0.0
        before = len(timeline.data["messages"])
        assert not timeline.refresh()  # nothing new
        await commit(cluster["m"], more=1)
        await trio.sleep(0.1)
        timeline.min_interval = 3600.0  # a redraw just happened: the next waits...
        assert not timeline.refresh()
        assert timeline.refresh(force=True)  # ...unless forced
        assert len(timeline.data["messages"]) > before
        ack = [m for m in timeline.data["messages"] if m["kind"] == "ACK"][-1]
        assert timeline.state_at(ack["sent"])["r"]["txid"] == 2
        # Read a piece at a time, it draws what a full rebuild of the log draws.
        assert timeline.data == timeline_data(cluster.events)
        await commit(cluster["m"], more=2)
        await trio.sleep(1.5)  # a keep-alive or so (virtual time)
        timeline.show_kinds(hidden=())  # redrawn from the log, and what came since
        assert timeline.data == timeline_data(cluster.events, hidden=())
        assert any(m["kind"] == "KEEPALIVE" for m in timeline.data["messages"])


def test_exports_are_standalone(handshake_log: hakit.EventLog, tmp_path: Path) -> None:
    timeline = Timeline(handshake_log, title="a handshake")
    bundle, _ = timeline._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # the live view first
    assert bundle["image/svg+xml"].startswith("<svg")  # static viewers draw this
    assert bundle["text/plain"].startswith("<hakit.widgets.Timeline: 2 nodes")
    svg = timeline.to_svg()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "a handshake" in svg and ">HELLO<" in svg and "<title>" in svg
    timeline.save_svg(tmp_path / "t.svg")
    timeline.save_html(tmp_path / "t.html")
    page = (tmp_path / "t.html").read_text()
    assert "function render" in page and '"HELLO"' in page
    assert not re.search(r"(src|href)=\"https?:", page) and "esm.sh" not in page


def test_hakit_replay_prints_and_exports(
    fault_log: hakit.EventLog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.jsonl"
    fault_log.save(path)
    svg = tmp_path / "run.svg"
    assert cli_main(["replay", str(path), "--svg", str(svg)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: ") and "seed 7" in out
    assert "crashed (was replica" in out and "HELLO r1 -> m delivered" in out
    assert "KEEPALIVE" not in out and f"wrote {svg}" in out
    assert svg.read_text().startswith("<svg")
    assert cli_main(["replay", str(path), "--all"]) == 0
    assert "KEEPALIVE" in capsys.readouterr().out
    (tmp_path / "bad").write_text("hello\n")
    assert cli_main(["replay", str(tmp_path / "bad")]) == 2
    assert "not a hakit event log" in capsys.readouterr().err


def test_hj_replay_opens_the_standalone_timeline(
    handshake_log: hakit.EventLog, tmp_path: Path
) -> None:
    import hakit.jupyter as hj

    path = tmp_path / "run.jsonl"
    handshake_log.save(path)
    timeline = hj.replay(path)
    assert isinstance(timeline, Timeline) and not timeline.follow
    assert timeline.data == Timeline(hakit.EventLog.load(path)).data
    (tmp_path / "x").write_text("x")
    with pytest.raises(ValueError, match="not a hakit event log"):
        hj.replay(tmp_path / "x")
