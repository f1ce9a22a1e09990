"""`Timeline`: the message-sequence diagram of a cluster's event log, as an anywidget.

Live (following a cluster's log as it grows, scrollable back) or standalone (a saved log,
`Timeline.from_file`). The drawing is done by ``static/timeline.js`` from the data of
`timeline_data`; this class keeps that data current and offers the same view as static SVG
and HTML files for slides.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from typing import Any

import anywidget
import traitlets

import hakit

from ._timeline_data import (
    DEFAULT_HIDDEN,
    DEFAULT_WINDOW,
    STATIC,
    TimelineBuilder,
    timeline_html,
    timeline_svg,
)

#: How many of a live log's newest events a live timeline redraws from when the kinds shown
#: change (each redraw otherwise takes in only the events that are new).
LIVE_EVENTS = 20_000


class Timeline(anywidget.AnyWidget):
    """The message timeline: nodes as lanes, messages as arrows, faults and roles marked.

    Args:
        events: the events to draw (an `hakit.EventLog`, or any iterable of events).
        live: follow `events` (a live cluster's log) on each `refresh`.
        hidden: message kinds left out (default: keep-alives and the acks answering them).
        window: draw at most this many messages, the newest.
        title: the title of exported files.

    Attributes:
        data: what the front end draws (see `timeline_data`).
        follow: keep the newest messages in view (live), unless the user scrolled back.
        scrub: the row the time scrubber is on (-1: the latest).
        selected: the id of the message clicked last ("" if none).
        height: the drawing's height in px (it scrolls beyond).
    """

    _esm = STATIC / "timeline.js"
    _css = STATIC / "timeline.css"
    data = traitlets.Dict().tag(sync=True)
    follow = traitlets.Bool(False).tag(sync=True)
    scrub = traitlets.Int(-1).tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    height = traitlets.Int(480).tag(sync=True)

    def __init__(
        self,
        events: Iterable[hakit.Event] = (),
        *,
        live: bool = False,
        hidden: Iterable[str] = DEFAULT_HIDDEN,
        window: int | None = DEFAULT_WINDOW,
        title: str = "hakit timeline",
        **kwargs: Any,
    ) -> None:
        super().__init__(follow=live, **kwargs)
        self.hidden = tuple(hidden)
        self.window = window
        self.title = title
        self._source = events if live and isinstance(events, hakit.EventLog) else None
        # A standalone timeline keeps its events (to redraw when the kinds change); a live one
        # reads them again from the log, which keeps them anyway.
        self._events: list[hakit.Event] = []
        self._builder = TimelineBuilder(hidden=self.hidden, window=window)
        self._cursor = 0
        self._drawn_at = -math.inf
        #: The least time between two redraws of a live timeline (seconds).
        self.min_interval = 0.5
        if self._source is None:
            self._events.extend(events)
            self._builder.feed(self._events)
        self._dropped = events.dropped if isinstance(events, hakit.EventLog) else 0
        self.refresh(force=True)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> Timeline:
        """The timeline of a log saved with `hakit.EventLog.save` (``cluster.events.save``).

        Raises:
            OSError: the file cannot be read.
            ValueError: it is not a hakit event log.
        """
        kwargs.setdefault("title", f"hakit timeline: {os.fspath(path)}")
        return cls(hakit.EventLog.load(path), **kwargs)

    def refresh(self, *, force: bool = False) -> bool:
        """Read what a live log has added and redraw; return whether anything changed.

        A live timeline redraws at most every `min_interval` seconds (unless `force`), so a
        busy cluster leaves the kernel responsive; what arrives meanwhile is kept. A redraw
        takes in only the new events (`TimelineBuilder`): its cost follows the window drawn,
        not the length of the log.
        """
        if self._source is not None and not force:
            clock = time.monotonic()
            if clock - self._drawn_at < self.min_interval:
                return False
            self._drawn_at = clock
        if self._source is not None:
            new, self._cursor = self._source.read(self._cursor)
            self._builder.feed(new)
            self._dropped = self._source.dropped
            if not new and not force:
                return False
        elif not force:
            return False
        self.data = self._builder.data(dropped=self._dropped)
        return True

    def show_kinds(self, *, hidden: Iterable[str]) -> None:
        """Change which message kinds are left out, and redraw.

        A live timeline redraws from the newest events it keeps (`LIVE_EVENTS`), its times
        still counted from the same start.
        """
        self.hidden = tuple(hidden)
        old = self._builder
        self._builder = TimelineBuilder(
            hidden=self.hidden, window=self.window, t0=old.t0, lanes=old.lanes
        )
        self._builder.feed(self._events if self._source is None else self._kept())
        self.refresh(force=True)

    def _kept(self) -> list[hakit.Event]:
        """The newest `LIVE_EVENTS` events of a live log that this timeline has taken in."""
        assert self._source is not None
        events, end = self._source.read(max(self._cursor - LIVE_EVENTS, 0))
        return events[: len(events) - (end - self._cursor)]

    def state_at(self, row: int = -1) -> dict[str, dict[str, Any]]:
        """Every node's role, generation and txid at `row` (-1: the latest), as scrubbed."""
        rows = self.data.get("rows", [])
        last = max(len(rows) - 1, 0)
        at = last if row < 0 or row > last else row
        out = {
            lane: {"role": "standalone", "generation": 0, "txid": 0}
            for lane in self.data.get("lanes", [])
        }
        for change in self.data.get("states", []):
            if change["row"] <= at:
                for key in ("role", "generation", "txid"):
                    if key in change:
                        out[change["lane"]][key] = change[key]
        out.pop("?", None)
        return out

    def scrub_to(self, time: float) -> int:
        """Put the scrubber on the last row at or before `time` (seconds since the start)."""
        rows = self.data.get("rows", [])
        row = max((i for i, t in enumerate(rows) if t <= time), default=0)
        self.scrub = row
        return row

    def message(self, message_id: str) -> dict[str, Any]:
        """The drawn message of that id (what hovering its arrow shows).

        Raises:
            KeyError: no such message is drawn.
        """
        for m in self.data.get("messages", []):
            if m["id"] == message_id:
                return dict(m)
        raise KeyError(message_id)

    def __repr__(self) -> str:
        data = self.data
        return (
            f"<hakit.widgets.Timeline: {len(data.get('lanes', []))} nodes, "
            f"{len(data.get('messages', []))} messages{' (live)' if self.follow else ''}>"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[Any, Any], dict[Any, Any]] | None:
        # Beside the live view, the static drawing: what GitHub, nbviewer and rendered
        # notebooks (which run no widget code) show instead.
        bundle = super()._repr_mimebundle_(**kwargs)
        data, meta = bundle if bundle is not None else ({}, {})
        data = {**data, "text/plain": repr(self), "image/svg+xml": self.to_svg()}
        return data, meta

    def to_svg(self) -> str:
        """The diagram as a standalone SVG document (tooltips hold the fields)."""
        return timeline_svg(self.data, title=self.title)

    def to_html(self) -> str:
        """A standalone HTML page with the interactive diagram (no network needed)."""
        return timeline_html(self.data, title=self.title)

    def save_svg(self, path: str | os.PathLike[str]) -> None:
        """Write `to_svg` to `path` (for slides)."""
        with open(path, "w", encoding="utf-8") as file:
            file.write(self.to_svg())

    def save_html(self, path: str | os.PathLike[str]) -> None:
        """Write `to_html` to `path`."""
        with open(path, "w", encoding="utf-8") as file:
            file.write(self.to_html())
