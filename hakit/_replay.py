"""``hakit replay PATH``: review a saved event log (``cluster.events.save(path)``).

Prints the run as a readable table, one line per event (keep-alives left out unless
``--all``), and can export the message timeline as a static SVG (for slides) or a standalone
HTML page (interactive, no network needed).
"""

from __future__ import annotations

import sys
from typing import TextIO

from ._runtime._events import EventLog, MessageEvent

_QUIET = ("KEEPALIVE",)


def _worth_a_line(event: MessageEvent) -> bool:
    # A frame shows once, where it ended (delivered, dropped), plus when it was held; a send
    # shows only if it will never arrive (lost). Keep-alives are steady noise.
    if event.kind in _QUIET:
        return False
    return event.action != "sent" or event.due is None


def replay_main(
    path: str,
    *,
    show_all: bool = False,
    svg: str | None = None,
    html: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print (and optionally export) the saved log at `path`; return the exit code."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        log = EventLog.load(path)
    except (OSError, ValueError) as exc:
        print(f"hakit replay: cannot read {path}: {exc}", file=err)
        return 2
    events = list(log)
    meta = ", ".join(f"{k} {v}" for k, v in sorted(log.meta.items()))
    messages = sum(1 for e in events if isinstance(e, MessageEvent) and e.action == "sent")
    print(f"{path}: {len(events)} events, {messages} messages ({meta})", file=out)
    if log.dropped:
        print(f"(the log had dropped {log.dropped} older events)", file=out)
    start = events[0].time if events else 0.0
    width = max((len(e.node) for e in events), default=4)
    for event in events:
        if isinstance(event, MessageEvent) and not show_all and not _worth_a_line(event):
            continue
        print(f"{event.time - start:10.4f}  {event.node:<{width}}  {event.describe()}", file=out)
    if svg or html:
        try:
            from .widgets._timeline_data import timeline_data, timeline_html, timeline_svg
        except ImportError as exc:  # the widgets extra is missing
            print(f"hakit replay: exports need hakit[widgets]: {exc}", file=err)
            return 2
        data = timeline_data(events, dropped=log.dropped)
        for target, render in ((svg, timeline_svg), (html, timeline_html)):
            if target:
                with open(target, "w", encoding="utf-8") as file:
                    file.write(render(data, title=f"hakit timeline: {path}"))
                print(f"wrote {target}", file=out)
    return 0
