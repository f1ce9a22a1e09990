"""The message timeline of an event log: its data, and static SVG and HTML exports.

A message-sequence (Lamport) diagram: one vertical lane per node, time flowing down, one
arrow per frame from its sender (when sent) to its receiver (when delivered), coloured by
kind; drops end in a cross, held frames are dashed, and role changes, crashes, stops and
network faults are marked where they happened. Time is drawn by *rows* (one per instant
something happened), not to scale, so a burst of messages and a quiet minute both read well;
the time of every row is written in the margin.

`timeline_data` turns events into the JSON the front end (``hakit.widgets.Timeline``, whose
code is ``hakit/widgets/static/timeline.js``) draws; `timeline_svg` draws the same diagram in
Python, for slides, with each arrow's fields in its tooltip; `timeline_html` is a standalone
page with the interactive view (the same JS, inlined: no network needed).

Nothing here imports ipywidgets itself (``hakit replay`` uses it from the command line), but
it lives in `hakit.widgets`, whose other views need the widgets extra.
"""

from __future__ import annotations

import bisect
import html
import json
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hakit import (
    Event,
    MasterChanged,
    MessageEvent,
    NetworkChanged,
    NodeCrashed,
    NodeRestarted,
    ReplicaDetached,
    ReplicaStopped,
    ReplicaSynced,
    RoleChanged,
)

#: Kinds left out unless asked for: keep-alives (and the acks that answer them) are steady
#: background noise that would bury the interesting arrows.
DEFAULT_HIDDEN = ("KEEPALIVE",)
#: The most messages one view draws (the newest); older ones are counted as cut off.
DEFAULT_WINDOW = 1500

#: Arrow colours by message kind (shared with timeline.js through `timeline_data`).
KIND_COLOURS = {
    "HELLO": "#2563eb",
    "WELCOME": "#2563eb",
    "REJECT": "#dc2626",
    "SNAPSHOT_BEGIN": "#7c3aed",
    "SNAPSHOT_CHUNK": "#7c3aed",
    "SNAPSHOT_END": "#7c3aed",
    "TXNS": "#059669",
    "ACK": "#0891b2",
    "KEEPALIVE": "#9ca3af",
    "DETACH": "#ea580c",
    "BYE": "#ea580c",
    "CANCEL": "#ea580c",
    "PROMOTE_REQUEST": "#db2777",
    "PROMOTE_READY": "#db2777",
    "KILL_MASTER": "#be123c",
    "MASTER_KILLED": "#be123c",
    "MASTER_CHANGED": "#be123c",
    "CHANNEL_HELLO": "#a16207",
    "CHANNEL_MSG": "#a16207",
    "CHANNEL_REPLY": "#a16207",
    "CHANNEL_FAIL": "#dc2626",
    "CONNECT": "#6b7280",
    "EOF": "#6b7280",
    "CLOSE": "#6b7280",
    "RESET": "#dc2626",
    "?": "#111827",
}
_ROLE_COLOURS = {"master": "#fde68a", "replica": "#dbeafe", "standalone": "#f3f4f6"}

STATIC = Path(__file__).parent / "static"
#: The key under which a state change keeps the frame whose txid it is (not yet decoded).
_TXID = "_txid_of"


def timeline_data(
    events: Iterable[Event],
    *,
    hidden: Iterable[str] = DEFAULT_HIDDEN,
    window: int | None = DEFAULT_WINDOW,
    dropped: int = 0,
) -> dict[str, Any]:
    """Turn events (a cluster's log, live or loaded) into what the timeline draws.

    The same as feeding them all to a `TimelineBuilder` (which a live timeline feeds as the
    log grows) and taking its `TimelineBuilder.data`.

    Args:
        events: the events, in log order.
        hidden: message kinds to leave out (default: keep-alives and their acks).
        window: draw at most this many messages, the newest (None: all).
        dropped: how many events the log had already dropped (shown as a note).

    Returns:
        A JSON-friendly dict: ``lanes`` (node names), ``rows`` (seconds since the first
        event, one per drawn instant), ``messages`` (one per frame, with its ``sent`` and
        ``end`` rows and its fields), ``marks`` (node events on a lane), ``bands`` (network
        faults across all lanes), ``states`` (role, generation and txid changes per lane,
        for the scrubber; those before the first drawn row are merged into one per lane),
        ``colours``, ``cut`` (messages left out by the window) and ``dropped``.
    """
    builder = TimelineBuilder(hidden=hidden, window=window)
    builder.feed(events)
    return builder.data(dropped=dropped)


class TimelineBuilder:
    """The timeline's data, kept up to date one event at a time.

    A live timeline feeds it each new event once, so a redraw costs what the window holds,
    not what the log holds. It keeps only what a later `data` can still draw: the newest
    `window` messages (older ones are counted in ``cut``), the marks and bands from the
    first of them on, and the state changes since then (earlier ones merged into one per
    lane, which is what the scrubber shows for the first row anyway).

    Args:
        hidden: message kinds to leave out.
        window: draw at most this many messages, the newest (None: all, keeping all).
        t0: the time rows are counted from (default: the first event fed).
        lanes: lanes to start with, in order (a rebuild keeps the old order).
    """

    def __init__(
        self,
        *,
        hidden: Iterable[str] = DEFAULT_HIDDEN,
        window: int | None = DEFAULT_WINDOW,
        t0: float | None = None,
        lanes: Iterable[str] = (),
    ) -> None:
        self.hide = set(hidden)
        self.window = window
        self.t0 = t0
        self.lanes: list[str] = list(lanes)
        # Frames that may still be drawn, by id; `_order` has the drawable ones, oldest first
        # (the acks of hidden keep-alives are never drawn, so never kept).
        self._frames: dict[str, dict[str, Any]] = {}
        self._order: deque[str] = deque()
        self._cut = 0
        self._pending_keepalive: dict[str, float] = {}
        self._marks: list[dict[str, Any]] = []
        self._bands: list[dict[str, Any]] = []
        self._states: list[dict[str, Any]] = []
        self._base: dict[str, dict[str, Any]] = {}  # merged state changes before the window

    def _lane(self, name: str | None) -> str:
        name = name or "?"
        if name not in self.lanes:
            self.lanes.append(name)
        return name

    def _state(self, time: float, node: str, **values: Any) -> None:
        self._states.append({"t": time, "lane": self._lane(node), **values})

    def feed(self, events: Iterable[Event]) -> None:
        """Take in the next events of the log, in log order."""
        for event in events:
            if self.t0 is None:
                self.t0 = event.time
            if isinstance(event, MessageEvent):
                self._message(event)
            elif isinstance(event, NetworkChanged):
                self._bands.append(
                    {"t": event.time, "type": event.action, "label": event.describe()}
                )
            else:
                self._node_event(event)
        window = self.window
        if window is not None:
            frames, order = self._frames, self._order
            while len(order) > window:
                frames.pop(order.popleft(), None)
                self._cut += 1

    def _node_event(self, event: Event) -> None:
        mark = _mark(event)
        if mark is not None:
            self._marks.append({"t": event.time, "lane": self._lane(event.node), **mark})
        state = self._state
        if isinstance(event, RoleChanged):
            state(event.time, event.node, role=event.new, generation=event.generation)
        elif isinstance(event, MasterChanged):
            state(event.time, event.node, generation=event.generation)
        elif isinstance(event, ReplicaSynced) and event.replica == event.node:
            state(event.time, event.node, txid=event.txid)
        elif isinstance(event, NodeCrashed):
            state(event.time, event.node, role="crashed")
        elif isinstance(event, NodeRestarted):
            state(
                event.time, event.node, role="standalone", txid=event.txid,
                generation=event.generation,
            )  # fmt: skip

    def _message(self, event: MessageEvent) -> None:
        key = event.id
        sender, receiver = self._lane(event.sender), self._lane(event.receiver)
        hide = self.hide
        if event.action == "sent":
            if event.kind in hide:
                if event.kind == "KEEPALIVE":
                    self._pending_keepalive[f"{event.link}|{receiver}"] = event.time
                return
            # The acks that answer a hidden keep-alive are hidden with it.
            keepalive_ack = False
            if event.kind == "ACK" and "KEEPALIVE" in hide:
                asked = self._pending_keepalive.pop(f"{event.link}|{sender}", None)
                keepalive_ack = asked is not None and event.time - asked < 60
            if not keepalive_ack:
                self._frames[key] = {
                    "id": key,
                    "kind": event.kind,
                    "from": sender,
                    "to": receiver,
                    "t_sent": event.time,
                    "t_end": None,
                    "t_held": None,
                    "outcome": "in flight",
                    "size": event.size,
                    "retransmits": event.retransmits,
                    "detail": "",
                    "fields": event,  # decoded only if drawn (see data)
                    "link": event.link,
                }
                self._order.append(key)
            if event.kind in ("TXNS", "ACK"):
                # The txid it carries, decoded only if it is ever needed (most frames of a
                # busy cluster are past the window before the next redraw).
                self._states.append({"t": event.time, "lane": event.sender or "?", _TXID: event})
            return
        frame = self._frames.get(key)
        if frame is None:
            return
        if event.action == "held":
            if frame["t_held"] is None:
                frame["t_held"] = event.time
        elif event.action in ("delivered", "dropped"):
            frame["t_end"] = event.time
            frame["outcome"] = event.action
            frame["detail"] = event.detail

    def _fields(self, event: MessageEvent) -> dict[str, Any]:
        """A sent frame's decoded fields, decoded once (kept in its frame while it is kept)."""
        frame = self._frames.get(event.id)
        if frame is not None and not isinstance(frame["fields"], MessageEvent):
            return frame["fields"]  # type: ignore[no-any-return]
        fields = event.fields
        if frame is not None:
            frame["fields"] = fields
        return fields

    def _values(self, state: dict[str, Any]) -> dict[str, Any]:
        """A state change's fields (role, generation, txid); decodes a frame's txid once."""
        event = state.pop(_TXID, None)
        if event is not None:
            fields = self._fields(event)
            txid: object = None
            if event.kind == "TXNS" and fields.get("entries"):
                last = fields["entries"][-1]
                if isinstance(last, list) and last and isinstance(last[0], int):
                    txid = last[0]
            elif event.kind == "ACK":
                txid = fields.get("txid")
            if isinstance(txid, int):
                state["txid"] = txid
        return {k: v for k, v in state.items() if k not in ("t", "lane")}

    def _forget_before(self, first: float) -> None:
        """Drop what no window can draw again: everything before the first drawn message."""
        self._marks = [m for m in self._marks if m["t"] >= first]
        self._bands = [b for b in self._bands if b["t"] >= first]
        states = self._states
        keep = next((i for i, s in enumerate(states) if s["t"] >= first), len(states))
        if not keep:
            return
        # Merge them into one change per lane: the latest value of each field wins, as on
        # replay. From the newest back, so that a txid overridden later is never decoded.
        newest: dict[str, dict[str, Any]] = {}
        for s in reversed(states[:keep]):
            known = newest.get(s["lane"])
            if _TXID in s and known is not None and "txid" in known:
                continue  # a later change set this lane's txid: this one is never shown
            values = self._values(s)
            if not values:
                continue
            merged = newest.setdefault(s["lane"], {"t": s["t"]})
            for name, value in values.items():
                merged.setdefault(name, value)
        del states[:keep]
        base = self._base
        for lane in self.lanes:  # one order, however the events were read
            if lane in newest:
                base.setdefault(lane, {"lane": lane}).update(newest[lane])
        self._base = {lane: base[lane] for lane in self.lanes if lane in base}

    def data(self, *, dropped: int = 0) -> dict[str, Any]:
        """What the timeline draws now (see `timeline_data`).

        It may forget what the window has moved past (it is never drawn again), so feeding
        more afterwards still gives what feeding everything at once would.
        """
        t0 = self.t0 if self.t0 is not None else 0.0
        messages = [dict(self._frames[i]) for i in self._order]
        for m in messages:
            if isinstance(m["fields"], MessageEvent):
                m["fields"] = self._fields(m["fields"])
        if self._cut and messages:
            # The window moved on: what lies before its first message is never drawn again.
            self._forget_before(messages[0]["t_sent"])
        marks = [dict(m) for m in self._marks]
        bands = [dict(b) for b in self._bands]
        times = sorted(
            {m["t_sent"] for m in messages}
            | {m["t_end"] for m in messages if m["t_end"] is not None}
            | {m["t"] for m in marks}
            | {b["t"] for b in bands}
            | {m["t_held"] for m in messages if m["t_held"] is not None}
        )
        row = {t: i for i, t in enumerate(times)}
        for m in messages:
            m["sent"] = row[m["t_sent"]]
            m["end"] = None if m["t_end"] is None else row[m["t_end"]]
            m["held"] = None if m["t_held"] is None else row[m["t_held"]]
        for item in (*marks, *bands):
            item["row"] = row[item["t"]]
        # Tags that share a lane and a row sit side by side; bands of one row share one line.
        offsets: dict[tuple[str, int], float] = {}
        for mark in marks:
            key = (mark["lane"], mark["row"])
            mark["dx"] = offsets.get(key, 0.0)
            offsets[key] = mark["dx"] + mark_width(mark["label"]) + 4
        merged: dict[int, dict[str, Any]] = {}
        for band in bands:
            if band["row"] in merged:
                merged[band["row"]]["label"] += " \u00b7 " + band["label"]
            else:
                merged[band["row"]] = band
        bands = list(merged.values())
        # Merged earlier changes first: they hold at the first row, later ones override.
        states = [dict(s) for s in self._base.values()]
        for s in self._states:
            values = self._values(s)
            if values:
                states.append({"t": s["t"], "lane": s["lane"], **values})
        for s in states:
            # A state change applies from the first row at or after it.
            s["row"] = _row_at(times, s["t"])
        rel = [round(t - t0, 6) for t in times]
        for m in messages:
            m["t_sent"] = round(m["t_sent"] - t0, 6)
            m["t_end"] = None if m["t_end"] is None else round(m["t_end"] - t0, 6)
            m["t_held"] = None if m["t_held"] is None else round(m["t_held"] - t0, 6)
        for item in (*marks, *bands, *states):
            item["t"] = round(item["t"] - t0, 6)
        return {
            "lanes": list(self.lanes),
            "rows": rel,
            "messages": messages,
            "marks": marks,
            "bands": bands,
            "states": states,
            "colours": KIND_COLOURS,
            "roles": _ROLE_COLOURS,
            "cut": self._cut,
            "dropped": dropped,
            "hidden": sorted(self.hide),
        }


def mark_width(label: str) -> float:
    """The width a node tag's label takes, in px (10 px system-ui, a little generous)."""
    return 6.0 * len(label) + 14


def _row_at(times: list[float], t: float) -> int:
    return min(bisect.bisect_left(times, t), max(len(times) - 1, 0))


def _mark(event: Event) -> dict[str, Any] | None:
    if isinstance(event, RoleChanged):
        return {
            "type": "role",
            "role": event.new,
            "label": f"{event.new} (gen {event.generation})",
            "detail": event.describe(),
        }
    if isinstance(event, NodeCrashed):
        return {"type": "crash", "label": "crashed", "detail": event.describe()}
    if isinstance(event, NodeRestarted):
        return {"type": "restart", "label": "restarted", "detail": event.describe()}
    if isinstance(event, ReplicaStopped):
        return {"type": "stop", "label": event.reason.name, "detail": event.describe()}
    if isinstance(event, ReplicaDetached):
        return {"type": "stop", "label": f"detached {event.replica}", "detail": event.describe()}
    if isinstance(event, MasterChanged):
        return {"type": "role", "label": f"follows {event.new_master}", "detail": event.describe()}
    if isinstance(event, ReplicaSynced) and event.replica == event.node:
        return {"type": "synced", "label": f"synced ({event.sync})", "detail": event.describe()}
    return None


# -- static exports ---------------------------------------------------------------------------

_LANE_GAP = 170
_ROW = 22
_TOP = 56
_LEFT = 90


def _x(data: dict[str, Any], lane: str) -> float:
    return float(_LEFT + _LANE_GAP * data["lanes"].index(lane) + _LANE_GAP / 2)


def _y(row: int) -> float:
    return _TOP + _ROW * row + _ROW / 2


def _tip(message: dict[str, Any]) -> str:
    lines = [f"{message['kind']}  {message['from']} → {message['to']}  ({message['outcome']})"]
    lines.append(f"sent {message['t_sent']:.4f} s, {message['size']} B")
    if message["t_end"] is not None:
        lines.append(f"{message['outcome']} {message['t_end']:.4f} s")
    if message["retransmits"]:
        lines.append(f"{message['retransmits']} transmission(s) lost first")
    if message["detail"]:
        lines.append(message["detail"])
    lines.extend(f"{k}: {json.dumps(v)}" for k, v in message["fields"].items())
    return "\n".join(lines)


def timeline_svg(data: dict[str, Any], *, title: str = "") -> str:
    """Draw the timeline as a standalone SVG document (tooltips hold each arrow's fields)."""
    esc = html.escape
    width = _LEFT + _LANE_GAP * max(len(data["lanes"]), 1) + 120  # room for the last tags
    height = _TOP + _ROW * max(len(data["rows"]), 1) + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" font-size="11">',
        "<defs>",
    ]
    for kind, colour in data["colours"].items():
        out.append(
            f'<marker id="a-{esc(kind)}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" '
            f'fill="{colour}"/></marker>'
        )
    out.append("</defs>")
    out.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    if title:
        out.append(f'<text x="12" y="20" font-size="14" font-weight="600">{esc(title)}</text>')
    last_row = max(len(data["rows"]) - 1, 0)
    # Lanes, shaded by role over time.
    for lane in data["lanes"]:
        x = _x(data, lane)
        spans = _role_spans(data, lane, last_row)
        for start, end, role in spans:
            colour = data["roles"].get(role, "#fee2e2" if role == "crashed" else "#f3f4f6")
            y0, y1 = _y(start) - _ROW / 2, _y(end) + _ROW / 2
            out.append(
                f'<rect x="{x - 7}" y="{y0}" width="14" height="{y1 - y0}" rx="3" '
                f'fill="{colour}"><title>{esc(lane)}: {esc(role)}</title></rect>'
            )
        out.append(
            f'<line x1="{x}" y1="{_TOP - 6}" x2="{x}" y2="{height - 20}" '
            f'stroke="#9ca3af" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{x}" y="{_TOP - 14}" text-anchor="middle" font-size="13" '
            f'font-weight="600">{esc(lane)}</text>'
        )
    # Row times in the margin (every row whose time differs visibly from the one above).
    shown = None
    for i, t in enumerate(data["rows"]):
        label = f"{t:.3f} s"
        if label != shown:
            out.append(
                f'<text x="{_LEFT - 10}" y="{_y(i) + 4}" text-anchor="end" '
                f'fill="#6b7280">{label}</text>'
            )
            shown = label
    for band in data["bands"]:
        y = _y(band["row"])
        out.append(
            f'<line x1="{_LEFT}" y1="{y}" x2="{width - 10}" y2="{y}" stroke="#f59e0b" '
            f'stroke-dasharray="6 3"/><text x="{width - 12}" y="{y - 4}" '
            f'text-anchor="end" fill="#b45309">{esc(band["label"])}</text>'
        )
    for m in data["messages"]:
        out.append(_svg_arrow(data, m, esc))
    for mark in data["marks"]:
        out.append(_svg_mark(data, mark, esc))
    if data["cut"] or data["dropped"]:
        note = f"{data['cut']} older messages not drawn" if data["cut"] else ""
        if data["dropped"]:
            note += ("; " if note else "") + f"{data['dropped']} events dropped by the log"
        out.append(f'<text x="12" y="{height - 8}" fill="#6b7280">{esc(note)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _role_spans(data: dict[str, Any], lane: str, last_row: int) -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []
    role, start = "standalone", 0
    for s in data["states"]:
        if s["lane"] != lane or "role" not in s:
            continue
        if s["row"] > start:
            spans.append((start, s["row"] - 1, role))
        role, start = s["role"], s["row"]
    spans.append((start, last_row, role))
    return spans


def _arrow_label(m: dict[str, Any]) -> str:
    return str(m["kind"]) + (f" \u21bb{m['retransmits']}" if m["retransmits"] else "")


def _svg_arrow(data: dict[str, Any], m: dict[str, Any], esc: Any) -> str:
    colour = data["colours"].get(m["kind"], "#111827")
    x1, y1 = _x(data, m["from"]), _y(m["sent"])
    x2 = _x(data, m["to"])
    end = m["end"] if m["end"] is not None else min(m["sent"] + 2, len(data["rows"]) - 1)
    y2 = _y(end)
    dropped = m["outcome"] == "dropped"
    if dropped or m["outcome"] == "in flight":  # stop short of the receiver
        x2 = x1 + (x2 - x1) * 0.7
    dash = ' stroke-dasharray="5 3"' if m["held"] is not None or m["outcome"] == "in flight" else ""
    marker = "" if dropped else f' marker-end="url(#a-{esc(m["kind"])})"'
    parts = [f'<g class="msg"><title>{esc(_tip(m))}</title>']
    parts.append(
        f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{colour}" '
        f'stroke-width="1.6"{dash}{marker}/>'
    )
    if dropped:
        parts.append(
            f'<path d="M{x2 - 5} {y2 - 5}L{x2 + 5} {y2 + 5}M{x2 - 5} {y2 + 5}'
            f'L{x2 + 5} {y2 - 5}" stroke="#dc2626" stroke-width="2.2"/>'
        )
    label_x, label_y = (x1 + x2) / 2, (y1 + y2) / 2 - 3
    parts.append(
        f'<text x="{label_x}" y="{label_y}" text-anchor="middle" fill="{colour}" '
        f'font-size="10">{esc(_arrow_label(m))}</text>'
    )
    parts.append("</g>")
    return "".join(parts)


_MARK_STYLE = {
    "role": ("#92400e", "#fde68a"),
    "crash": ("#ffffff", "#dc2626"),
    "restart": ("#ffffff", "#16a34a"),
    "stop": ("#9a3412", "#ffedd5"),
    "synced": ("#1e40af", "#dbeafe"),
}


def _svg_mark(data: dict[str, Any], mark: dict[str, Any], esc: Any) -> str:
    x, y = _x(data, mark["lane"]) + mark["dx"], _y(mark["row"])
    ink, fill = _MARK_STYLE.get(mark["type"], ("#111827", "#e5e7eb"))
    width = mark_width(mark["label"])
    cross = ""
    if mark["type"] == "crash":
        x0 = _x(data, mark["lane"])
        cross = (
            f'<path d="M{x0 - 6} {y - 6}L{x0 + 6} {y + 6}M{x0 - 6} {y + 6}L{x0 + 6} {y - 6}" '
            'stroke="#dc2626" stroke-width="2.4"/>'
        )
    return (
        f'<g class="mark"><title>{esc(mark["detail"])}</title>{cross}'
        f'<rect x="{x + 10}" y="{y - 8}" width="{width}" height="16" rx="8" fill="{fill}" '
        f'stroke="{ink}" stroke-width="0.6"/><text x="{x + 16}" y="{y + 4}" fill="{ink}" '
        f'font-size="10">{esc(mark["label"])}</text></g>'
    )


def timeline_html(data: dict[str, Any], *, title: str = "hakit timeline") -> str:
    """A standalone page with the interactive timeline (its JS and CSS inlined)."""
    script = (STATIC / "timeline.js").read_text(encoding="utf-8")
    style = (STATIC / "timeline.css").read_text(encoding="utf-8")
    payload = json.dumps(data).replace("</", "<\\/")
    # The widget's ES module is reused as is: a tiny model object stands in for anywidget's.
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{margin:16px;font-family:system-ui,sans-serif}}{style}</style></head>
<body><h2 style="font-weight:600;font-size:16px">{html.escape(title)}</h2><div id="timeline"></div>
<script type="module">
{script}
const data = {payload};
const state = {{ data, follow: false, scrub: -1, selected: "", height: 640 }};
const model = {{ get: (k) => state[k], set: (k, v) => {{ state[k] = v; }},
  save_changes() {{}}, on() {{}}, send() {{}} }};
render({{ model, el: document.getElementById("timeline") }});
</script></body></html>
"""
