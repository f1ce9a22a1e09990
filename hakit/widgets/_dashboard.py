"""`ClusterDashboard`: the live view of a `hakit.jupyter.LiveCluster`.

A view only: it reads the live cluster's public state (`rows`, `log`, `nodes`) and acts only
through its method twins, so a click does exactly what the twin does in a cell. Refreshes
are throttled (at most one every `interval` seconds, driven by the cluster's watcher) and
batched: every widget that changes is held (`hold_sync`) until all of them are set.

Sections (the tabs under the table) are registered in one place, `add_section`; other views
(a timeline, fault and clock panels) join with `register_section`.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as w
import traitlets

import hakit
from hakit import EID_MASTER
from hakit.jupyter import Handle, LiveCluster, LogEntry, NodeRow

STATIC = Path(__file__).parent / "static"

#: A replica this many transactions (or seconds) behind its master shows as lagging.
LAG_TRANSACTIONS = 100
LAG_SECONDS = 1.0
#: What an empty cell shows (an en dash, the typographic "nothing here").
DASH = "\u2013"
#: Log rows shown (the newest first; the live cluster keeps more).
LOG_ROWS = 100

SectionFactory = Callable[["ClusterDashboard"], tuple[str, w.Widget, Callable[[], None] | None]]
_registered: list[SectionFactory] = []


def register_section(factory: SectionFactory) -> None:
    """Add a section to every dashboard made from now on.

    Args:
        factory: called with the new dashboard; returns ``(title, widget, refresh)``, where
            ``refresh()`` (or None) is called on every throttled refresh.
    """
    _registered.append(factory)


class TopologyView(anywidget.AnyWidget):
    """The drawn topology: nodes, the master, and each replication link with its state.

    Attributes:
        graph: ``{"nodes": [...], "links": [...]}`` as made by `topology_graph`.
    """

    _esm = STATIC / "topology.js"
    _css = STATIC / "dashboard.css"
    graph = traitlets.Dict().tag(sync=True)


def link_state(row: NodeRow) -> str:
    """The state a replica's link shows: syncing, streaming, lagging, cut, connecting..."""
    if row.connection == "streaming" and (
        (row.lag or 0) >= LAG_TRANSACTIONS or (row.lag_seconds or 0.0) >= LAG_SECONDS
    ):
        return "lagging"
    return row.connection


def topology_graph(rows: list[NodeRow]) -> dict[str, Any]:
    """The topology view's data for the table's rows."""
    nodes = [
        {
            "name": r.name,
            "role": r.role,
            "generation": r.generation,
            "txid": r.txid,
            "writes_disabled": r.writes_disabled,
            "process": r.process,  # a node process's state (None: in this kernel)
            "pid": r.pid,
        }
        for r in rows
    ]
    names = {r.name for r in rows}
    links = [
        {
            "replica": r.name,
            "master": r.master,
            "state": link_state(r),
            "progress": r.progress,
            "lag": r.lag or 0,
        }
        for r in rows
        if r.role != "master" and r.master in names and r.connection not in ("-", "stopped")
    ]
    return {"nodes": nodes, "links": links}


def _esc(value: object) -> str:
    return html.escape(str(value))


def _role_badge(row: NodeRow) -> str:
    if row.role == "down":
        return '<span class="hakit-role hakit-role-cell-down">down</span>'
    if row.writes_disabled and row.role != "master":
        return '<span class="hakit-role hakit-role-cell-down">stepped down</span>'
    return f'<span class="hakit-role hakit-role-cell-{_esc(row.role)}">{_esc(row.role)}</span>'


def _name_cell(row: NodeRow) -> str:
    """The node's name; a node process also shows its pid and, unless running, its state."""
    if row.process is None:
        return f"<b>{_esc(row.name)}</b>"
    pid = f"pid {row.pid}" if row.pid is not None else "process"
    tone = "hakit-proc" if row.process == "running" else "hakit-proc hakit-proc-off"
    state = "" if row.process == "running" else f" · {_esc(row.process)}"
    return (
        f"<b>{_esc(row.name)}</b> <span class='{tone}' title='a separate process "
        f"(hakit node), not a node of this kernel'>{pid}{state}</span>"
    )


def table_html(rows: list[NodeRow]) -> str:
    """The live table: one row per node."""
    head = (
        "<tr><th>Node</th><th>Address</th><th>Role</th><th class='hakit-num'>Gen</th>"
        "<th class='hakit-num'>Txid</th><th>Master</th><th class='hakit-num'>Lag</th>"
        "<th>Connection</th><th>Sync</th></tr>"
    )
    body = []
    for r in rows:
        state = link_state(r)
        connection = DASH if state == "-" else state
        if state == "syncing" and r.progress is not None:
            connection = f"syncing {round(r.progress * 100)}%"
        # transactions behind, and how old the oldest missing one is
        lag = DASH if r.lag is None else f"{r.lag} tx · {r.lag_seconds or 0.0:.2f} s"
        body.append(
            f"<tr><td>{_name_cell(r)}</td>"
            f"<td class='hakit-muted'>{_esc(r.address or DASH)}</td>"
            f"<td>{_role_badge(r)}</td>"
            f"<td class='hakit-num'>{r.generation}</td><td class='hakit-num'>{r.txid}</td>"
            f"<td>{_esc(r.master or DASH)}</td>"
            f"<td class='hakit-num'>{lag}</td>"
            f"<td class='hakit-conn-{_esc(state)}'>{_esc(connection)}</td>"
            f"<td class='hakit-muted'>{_esc(r.sync or DASH)}</td></tr>"
        )
    if not body:
        body.append("<tr><td colspan='9' class='hakit-muted'>No nodes yet.</td></tr>")
    return f"<table class='hakit-table hakit-live-table'>{head}{''.join(body)}</table>"


def _reason_cell(entry: LogEntry) -> str:
    if entry.reason is None:
        return f"<span class='hakit-muted'>{DASH}</span>"
    tone = "hakit-reason-ok" if entry.reason.is_clean else "hakit-reason-bad"
    return (
        f"<span class='hakit-reason {tone}'>{_esc(entry.reason.name)}</span>"
        f" <span class='hakit-muted'>({int(entry.reason)})</span>"
    )


def log_html(entries: list[LogEntry], dropped: int = 0) -> str:
    """The stop-reason log, newest first."""
    head = (
        "<tr><th class='hakit-num'>Time</th><th>Node</th><th>What</th><th>Reason</th>"
        "<th>Explanation and detail</th></tr>"
    )
    rows = []
    for e in reversed(entries[-LOG_ROWS:]):
        text = _esc(e.explanation)
        detail = f"<span class='hakit-muted'>{_esc(e.detail)}</span>" if e.detail else ""
        rows.append(
            f"<tr class='hakit-log-row'><td class='hakit-num'>{e.time:.2f} s</td>"
            f"<td><b>{_esc(e.node)}</b></td><td>{_esc(e.kind)}</td>"
            f"<td>{_reason_cell(e)}</td>"
            f"<td class='hakit-wrap'>{text}{'<br>' if text and detail else ''}{detail}</td></tr>"
        )
    if not rows:
        rows.append(
            "<tr><td colspan='5' class='hakit-muted'>Nothing has stopped yet: stops, "
            "detaches and failed tasks appear here.</td></tr>"
        )
    more = f"<div class='hakit-muted'>{dropped} older entries dropped.</div>" if dropped else ""
    table = f"<table class='hakit-table'>{head}{''.join(rows)}</table>"
    return f"<div class='hakit-log'>{table}{more}</div>"


def error_meaning(error: BaseException) -> str:
    """The first line of the error class's docstring: what this kind of error means."""
    doc = type(error).__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def describe_answer(value: object) -> str:
    """An answer's parts as text (UTF-8 where it decodes, else hex), never a Python repr."""
    parts = value if isinstance(value, list) else [value]
    shown = []
    for part in parts:
        if isinstance(part, bytes):
            try:
                shown.append(_esc(part.decode("utf-8")))
            except UnicodeDecodeError:
                shown.append(f"<span class='hakit-muted'>hex</span> {part.hex(' ')}")
        else:
            shown.append(_esc(part))
    label = f"{len(shown)} parts" if len(shown) > 1 else "answer"
    return f"<b>{label}:</b> " + " <span class='hakit-muted'>|</span> ".join(shown)


def _label(text: str) -> w.HTML:
    return w.HTML(f"<div class='hakit-group-label'>{_esc(text)}</div>")


def _button(description: str, style: str = "", tooltip: str = "") -> w.Button:
    return w.Button(
        description=description,
        button_style=style,
        tooltip=tooltip or description,
        layout=w.Layout(width="auto", min_width="76px"),
    )


def _row(*children: w.Widget) -> w.HBox:
    box = w.HBox(list(children), layout=w.Layout(align_items="center", margin="2px 0"))
    box.add_class("hakit-row")
    return box


class ClusterDashboard(w.VBox):  # type: ignore[misc]
    """The live dashboard of a `hakit.jupyter.LiveCluster`.

    Shown when a live cluster is a cell's value. It has a header, the drawn topology, the
    live table, and tabbed sections: controls (each button is its twin's click), a message
    channel panel, and the stop-reason log.

    Args:
        cluster: the live cluster to show and drive.
        interval: the least time between two refreshes (seconds).
    """

    def __init__(self, cluster: LiveCluster, *, interval: float = 0.25) -> None:
        self.cluster = cluster
        self.interval = interval
        self._last_refresh = 0.0
        self._refreshes = 0
        self.header = w.HTML()
        # Side by side on wide screens; at 1280 px the table wraps under the drawing.
        self.topology = TopologyView(layout=w.Layout(flex="1 1 380px", min_width="320px"))
        self.table = w.HTML(layout=w.Layout(flex="1 1 560px", overflow="auto"))
        self.status = w.HTML("<div class='hakit-status'></div>")
        self.log_view = w.HTML()
        self.tabs = w.Tab(layout=w.Layout(width="100%"))
        self.tabs.observe(self._refresh_shown_section, names="selected_index")
        self._sections: list[tuple[str, w.Widget, Callable[[], None] | None]] = []
        self._lazy: set[int] = set()  # sections refreshed only while on show
        self._node_dropdowns: list[w.Dropdown] = []
        self._picked: set[int] = set()  # dropdowns the user has chosen in
        self._setting_default = False
        self._refreshing = False
        self._build_controls()
        self._build_channel_panel()
        self.add_section("Controls", self.controls)
        self.add_section("Messages", self.channel_panel)
        self.add_section("Stop log", self.log_view, self._refresh_log)
        for factory in _registered:
            # Registered views (the live timeline among them) redraw only when on show.
            self.add_section(*factory(self), only_when_shown=True)
        self.main_row = w.HBox(
            [self.topology, self.table], layout=w.Layout(align_items="flex-start", width="100%")
        )
        self.main_row.add_class("hakit-main-row")
        super().__init__(
            [
                self.header,
                self.main_row,
                self.status,
                self.tabs,
            ],
            layout=w.Layout(width="100%", max_width="1100px"),
        )
        self.add_class("hakit-dashboard")
        self.send_button.add_class("hakit-btn-send")
        self.tabs.add_class("hakit-tabs")
        cluster.add_listener(self._on_cluster_change)
        self.refresh()

    # -- sections -----------------------------------------------------------------------------
    def add_section(
        self,
        title: str,
        widget: w.Widget,
        refresh: Callable[[], None] | None = None,
        *,
        only_when_shown: bool = False,
    ) -> None:
        """Add a tab under the table; ``refresh()`` runs on every dashboard refresh.

        With `only_when_shown`, ``refresh()`` runs only while its tab is the one on show
        (and when the tab is picked): for views too costly to redraw unseen.
        """
        if only_when_shown:
            self._lazy.add(len(self._sections))
        self._sections.append((title, widget, refresh))
        titles = [t for t, _, _ in self._sections]
        with self.tabs.hold_sync():
            self.tabs.children = [*self.tabs.children, widget]
            self.tabs.titles = titles

    @property
    def section_titles(self) -> list[str]:
        """The titles of the sections, in order."""
        return [title for title, _, _ in self._sections]

    # -- controls -----------------------------------------------------------------------------
    def _node_dropdown(self, description: str = "", **kwargs: Any) -> w.Dropdown:
        dropdown = w.Dropdown(
            options=[], description=description,
            layout=w.Layout(width="150px" if description else "120px", flex="0 0 auto"), **kwargs,
        )  # fmt: skip
        dropdown.style.description_width = "initial"
        dropdown.observe(self._user_picked, names="value")
        self._node_dropdowns.append(dropdown)
        return dropdown

    def _build_controls(self) -> None:
        self.new_name = w.Text(placeholder="new node name", layout=w.Layout(width="160px"))
        self.add_button = _button("Add node", "primary", "cluster.add_node(name)")
        self.node_pick = self._node_dropdown()
        self.master_button = _button("Make master", "success", "cluster.make_master(node)")
        self.force_button = _button("Force master", "warning", "cluster.force_master(node)")

        self.replica_pick = self._node_dropdown()
        self.target_pick = self._node_dropdown("to")
        self.force_box = w.Checkbox(value=False, description="force master", indent=False)
        self.force_box.layout.width = "110px"
        self.attach_button = _button("Attach", "primary", "cluster.attach(replica, master)")
        self.stop_button = _button("Stop", "", "cluster.replica_stop(replica): graceful stop")
        self.cancel_button = _button("Cancel", "", "cluster.cancel(replica): interrupt at once")
        self.detach_button = _button("Detach", "", "cluster.detach(replica): from the master")

        self.key = w.Text(placeholder="key", layout=w.Layout(width="160px"))
        self.value = w.Text(placeholder="value", layout=w.Layout(width="160px"))
        self.write_button = _button("Write", "primary", "cluster.write(key, value)")
        self.delete_button = _button("Delete", "", "cluster.delete(key)")

        self.cut_a = self._node_dropdown()
        self.cut_b = w.Dropdown(options=[("the others", "")], layout=w.Layout(width="160px"))
        self.partition_button = _button("Partition", "danger", "cluster.partition(a, b)")
        self.heal_button = _button("Heal", "", "cluster.heal()")

        self.add_button.on_click(lambda _: self._act(self._add_node))
        self.master_button.on_click(
            lambda _: self._act(lambda: self.cluster.make_master(self.node_pick.value))
        )
        self.force_button.on_click(
            lambda _: self._act(lambda: self.cluster.force_master(self.node_pick.value))
        )
        self.attach_button.on_click(
            lambda _: self._act(
                lambda: self.cluster.attach(
                    self.replica_pick.value, self.target_pick.value, self.force_box.value
                )
            )
        )
        self.stop_button.on_click(
            lambda _: self._act(lambda: self.cluster.replica_stop(self.replica_pick.value))
        )
        self.cancel_button.on_click(
            lambda _: self._act(lambda: self.cluster.cancel(self.replica_pick.value))
        )
        self.detach_button.on_click(
            lambda _: self._act(lambda: self.cluster.detach(self.replica_pick.value))
        )
        self.write_button.on_click(
            lambda _: self._act(lambda: self.cluster.write(self.key.value, self.value.value))
        )
        self.delete_button.on_click(
            lambda _: self._act(lambda: self.cluster.delete(self.key.value))
        )
        # Node processes (cluster.spawn_node): real signals. The row shows only when there
        # are some.
        self.process_pick = w.Dropdown(options=[], layout=w.Layout(width="120px"))
        self.kill_button = _button("Kill -9", "danger", "cluster.kill(node): SIGKILL")
        self.pause_button = _button("Pause", "", "cluster.pause(node): SIGSTOP")
        self.resume_button = _button("Resume", "", "cluster.resume(node): SIGCONT")
        for button, twin in (
            (self.kill_button, "kill"), (self.pause_button, "pause"),
            (self.resume_button, "resume"),
        ):  # fmt: skip
            button.on_click(
                lambda _, twin=twin: self._act(
                    lambda: getattr(self.cluster, twin)(self.process_pick.value)
                )
            )
        self.process_row = _row(
            _label("Processes"),
            self.process_pick,
            self.kill_button,
            self.pause_button,
            self.resume_button,
        )
        self.process_row.layout.display = "none"
        self.partition_button.on_click(lambda _: self._act(self._partition))
        self.heal_button.on_click(lambda _: self._act(self.cluster.heal))

        self.controls = w.VBox(
            [
                _row(
                    _label("Nodes"),
                    self.new_name,
                    self.add_button,
                    self.node_pick,
                    self.master_button,
                    self.force_button,
                ),
                _row(
                    _label("Replication"),
                    self.replica_pick,
                    self.target_pick,
                    self.force_box,
                    self.attach_button,
                    self.stop_button,
                    self.cancel_button,
                    self.detach_button,
                ),
                _row(_label("Data"), self.key, self.value, self.write_button, self.delete_button),
                _row(
                    _label("Network"),
                    self.cut_a,
                    w.HTML("<span class='hakit-muted'>from</span>"),
                    self.cut_b,
                    self.partition_button,
                    self.heal_button,
                ),
                self.process_row,
            ]
        )
        # Stable class names: for the browser test, and for users' own CSS.
        for widget, name in (
            (self.new_name, "new-name"), (self.node_pick, "node-pick"),
            (self.replica_pick, "replica-pick"), (self.target_pick, "target-pick"),
            (self.key, "key"), (self.value, "value"), (self.cut_a, "cut-a"),
            (self.cut_b, "cut-b"), (self.add_button, "btn-add"),
            (self.master_button, "btn-master"), (self.force_button, "btn-force"),
            (self.attach_button, "btn-attach"), (self.stop_button, "btn-stop"),
            (self.cancel_button, "btn-cancel"), (self.detach_button, "btn-detach"),
            (self.write_button, "btn-write"), (self.delete_button, "btn-delete"),
            (self.partition_button, "btn-partition"), (self.heal_button, "btn-heal"),
            (self.process_pick, "process-pick"), (self.kill_button, "btn-kill"),
            (self.pause_button, "btn-pause"), (self.resume_button, "btn-resume"),
        ):  # fmt: skip
            widget.add_class(f"hakit-{name}")
        self._buttons = [
            self.add_button, self.master_button, self.force_button, self.attach_button,
            self.stop_button, self.cancel_button, self.detach_button, self.write_button,
            self.delete_button, self.partition_button, self.heal_button, self.kill_button,
            self.pause_button, self.resume_button,
        ]  # fmt: skip

    def _add_node(self) -> hakit.Node:
        name = self.new_name.value.strip()
        if not name:
            raise hakit.InvalidArgumentError("type a name for the new node first")
        node = self.cluster.add_node(name)
        self.new_name.value = ""
        return node

    def _partition(self) -> None:
        a = self.cut_a.value
        b = self.cut_b.value
        others = [n for n in self.cluster.nodes if n != a] if not b else [b]
        self.cluster.partition({a}, set(others))

    def _build_channel_panel(self) -> None:
        self.sender = self._node_dropdown("from")
        self.receiver = w.Dropdown(
            options=[("the master", EID_MASTER)], description="to",
            layout=w.Layout(width="180px"),
        )  # fmt: skip
        self.receiver.style.description_width = "initial"
        self.parts = w.Textarea(
            placeholder="one part per line", layout=w.Layout(width="320px", height="58px")
        )
        self.timeout = w.BoundedFloatText(
            value=2.0, min=0.0, max=3600.0, step=0.5, description="timeout (s)",
            layout=w.Layout(width="170px"),
        )  # fmt: skip
        self.timeout.style.description_width = "initial"
        self.multiple = w.Checkbox(value=False, description="multi-part answer", indent=False)
        self.kind = w.ToggleButtons(options=["request", "one-way"], value="request")
        self.kind.style.button_width = "80px"
        self.send_button = _button("Send", "primary", "cluster.request / cluster.send")
        self.answer = w.HTML("<div class='hakit-answer hakit-muted'>No message sent yet.</div>")
        self.send_button.on_click(lambda _: self._act(self._send_message))
        self._buttons.append(self.send_button)
        self.channel_panel = w.VBox(
            [
                _row(_label("Route"), self.sender, self.receiver, self.kind),
                _row(_label("Parts"), self.parts),
                _row(_label("Options"), self.timeout, self.multiple, self.send_button),
                _row(_label("Answer"), self.answer),
            ]
        )

    def _send_message(self) -> Handle[Any]:
        parts = [line for line in self.parts.value.split("\n") if line] or [""]
        if self.kind.value == "one-way":
            handle: Handle[Any] = self.cluster.send(self.sender.value, self.receiver.value, parts)
        else:
            handle = self.cluster.request(
                self.sender.value, self.receiver.value, parts,
                timeout=self.timeout.value or None, multiple=self.multiple.value,
            )  # fmt: skip
        self.answer.value = "<div class='hakit-answer hakit-muted'>waiting…</div>"
        handle.add_done_callback(self._show_answer)
        return handle

    def _show_answer(self, handle: Handle[Any]) -> None:
        if handle.state == "failed":
            error = handle.exception()
            assert error is not None
            self.answer.value = (
                f"<div class='hakit-answer hakit-status-error'><b>{_esc(type(error).__name__)}"
                f"</b>: {_esc(error)}<br><span class='hakit-muted'>"
                f"{_esc(error_meaning(error))}</span></div>"
            )
        elif handle.state == "cancelled":
            self.answer.value = "<div class='hakit-answer hakit-muted'>cancelled</div>"
        elif self.kind.value == "one-way" or handle.result() is None:
            self.answer.value = "<div class='hakit-answer'>sent (one-way: no answer)</div>"
        else:
            self.answer.value = (
                f"<div class='hakit-answer'>{describe_answer(handle.result())}</div>"
            )

    # -- acting -------------------------------------------------------------------------------
    def _act(self, twin: Callable[[], object]) -> object:
        """Run a twin for a click: its outcome goes to the status line, errors to the log."""
        try:
            result = twin()
        except Exception as exc:
            self.cluster.report_error("click", exc)
            self._set_status(f"{type(exc).__name__}: {exc}", error=True)
            self.refresh()
            return None
        if isinstance(result, Handle):
            self._set_status(f"started: {result.what}")
            result.add_done_callback(self._handle_done)
        else:
            self._set_status("done")
        self.refresh()
        return result

    def _handle_done(self, handle: Handle[Any]) -> None:
        self._set_status(handle.summary(), error=handle.state == "failed")
        self.refresh()

    def _set_status(self, text: str, *, error: bool = False) -> None:
        tone = "hakit-status-error" if error else "hakit-status-ok"
        self.status.value = f"<div class='hakit-status {tone}'>{_esc(text)}</div>"

    # -- refreshing ---------------------------------------------------------------------------
    def _on_cluster_change(self) -> None:
        now = time.monotonic()
        if now - self._last_refresh >= self.interval:
            self.refresh()

    def refresh(self) -> None:
        """Bring every part up to date now, in one batch of widget messages."""
        self._last_refresh = time.monotonic()
        self._refreshes += 1
        cluster = self.cluster
        closed = cluster.closed
        rows = [] if closed else cluster.rows()
        names = [r.name for r in rows]
        updates: list[tuple[w.Widget, str, Any]] = [
            (self.header, "value", self._header_html(rows)),
            (self.table, "value", table_html(rows)),
            (self.topology, "graph", topology_graph(rows)),
        ]
        for dropdown in self._node_dropdowns:
            updates.append((dropdown, "options", names))
        updates.append((self.cut_b, "options", [("the others", ""), *[(n, n) for n in names]]))
        processes = [r.name for r in rows if r.process is not None]
        updates.append((self.process_pick, "options", processes))
        updates.append((self.process_row.layout, "display", "" if processes else "none"))
        updates.append(
            (self.receiver, "options", [("the master", EID_MASTER), *[(n, n) for n in names]])
        )
        for button in self._buttons:
            updates.append((button, "disabled", closed))
        changed = [(wd, name, v) for wd, name, v in updates if getattr(wd, name) != v]
        self._refreshing = True
        with ExitStack() as stack:
            stack.callback(setattr, self, "_refreshing", False)
            for widget in {id(wd): wd for wd, _, _ in changed}.values():
                stack.enter_context(widget.hold_sync())
            for widget, name, value in changed:
                if name == "options":
                    keep = widget.value
                    setattr(widget, name, value)
                    values = [o[1] if isinstance(o, tuple) else o for o in value]
                    if keep in values:
                        widget.value = keep  # the user's choice survives new options
                    elif values:
                        widget.index = 0
                else:
                    setattr(widget, name, value)
            self._default_picks(rows)
            shown = self.tabs.selected_index
            for index, (_, _, refresh) in enumerate(self._sections):
                if refresh is not None and (index == shown or index not in self._lazy):
                    refresh()

    def _refresh_shown_section(self, _change: object = None) -> None:
        # A lazy section comes up to date when its tab is picked: a live timeline redrawn
        # behind a closed tab would cost a busy cluster much of its commit rate.
        index = self.tabs.selected_index
        if index in self._lazy:
            refresh = self._sections[index][2]
            if refresh is not None:
                refresh()

    def _default_picks(self, rows: list[NodeRow]) -> None:
        """Until the user picks, suggest the likely ones: a replica, attached to the master."""
        masters = [r.name for r in rows if r.role == "master"]
        others = [r.name for r in rows if r.role != "master"]
        for dropdown, wanted in (
            (self.replica_pick, others), (self.node_pick, others),
            (self.target_pick, masters), (self.sender, others),
        ):  # fmt: skip
            if id(dropdown) in self._picked or not wanted:
                continue
            if dropdown.value not in wanted:
                self._setting_default = True
                try:
                    dropdown.value = wanted[0]
                finally:
                    self._setting_default = False

    def _user_picked(self, change: dict[str, Any]) -> None:
        if not self._setting_default and not self._refreshing:
            self._picked.add(id(change["owner"]))

    def _refresh_log(self) -> None:
        value = log_html(self.cluster.log, self.cluster.log_dropped)
        if self.log_view.value != value:
            with self.log_view.hold_sync():
                self.log_view.value = value

    def _header_html(self, rows: list[NodeRow]) -> str:
        cluster = self.cluster
        masters = [r for r in rows if r.role == "master"]
        if cluster.closed:
            pills = "<span class='hakit-pill hakit-pill-bad'>closed</span>"
        else:
            pills = "<span class='hakit-pill hakit-pill-ok'>running</span>"
        if any(r.connection == "cut" for r in rows):
            pills += "<span class='hakit-pill hakit-pill-bad'>partitioned</span>"
        if len(masters) > 1:  # separate groups (a master process beside one in this kernel)
            master = "masters " + ", ".join(
                f"<b>{_esc(m.name)}</b> (generation {m.generation} · txid {m.txid})"
                for m in masters
            )
        elif masters:
            m = masters[-1]
            master = f"master <b>{_esc(m.name)}</b> · generation {m.generation} · txid {m.txid}"
        else:
            master = "no master yet"
        sub = f"seed {cluster.seed} · {len(rows)} nodes · {master}"
        return (
            f"<div><span class='hakit-dash-title'>hakit cluster “{_esc(cluster.name)}”</span>"
            f"{pills}<span class='hakit-dash-sub'>{sub}</span></div>"
        )

    def close(self) -> None:
        """Stop following the cluster and close the widgets."""
        self.cluster.remove_listener(self._on_cluster_change)
        super().close()
