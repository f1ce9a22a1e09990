"""The faults panel and the clock panel of the dashboard (stock ipywidgets).

Each control calls one twin of the live cluster, the same method a cell would call: the
faults panel `partition`/`heal`, `hold`/`release`, `set_latency`, `set_loss`,
`crash`/`restart`; the clock panel `pause`, `resume`, `step` and `speed`. A failing twin
shows its error in the panel's status line; nothing is raised into the kernel.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as w

import hakit
from hakit.jupyter import Handle, LiveCluster

#: The speeds the clock panel offers (slow motion to fast forward).
SPEEDS = (0.1, 0.5, 1.0, 2.0, 10.0)


def _button(description: str, style: str = "", tooltip: str = "") -> w.Button:
    return w.Button(
        description=description,
        button_style=style,
        tooltip=tooltip or description,
        layout=w.Layout(width="auto", min_width="76px"),
    )


def _row(label: str, *children: w.Widget) -> w.HBox:
    head = w.HTML(f"<div class='hakit-group-label'>{html.escape(label)}</div>")
    head.layout.width = "84px"
    return w.HBox([head, *children], layout=w.Layout(align_items="center", margin="2px 0"))


def _status(text: str, *, error: bool = False) -> str:
    cls = "hakit-panel-error" if error else "hakit-panel-ok"
    colour = "#b91c1c" if error else "#374151"
    return f"<div class='{cls}' style='color:{colour}'>{html.escape(text)}</div>"


class _Panel(w.VBox):  # type: ignore[misc]
    """What both panels share: a status line and a guarded way to call a twin."""

    def __init__(self, cluster: LiveCluster, children: list[w.Widget]) -> None:
        self.cluster = cluster
        self.status = w.HTML(_status(""))
        super().__init__([*children, self.status])

    def _act(self, what: str, twin: Callable[[], object]) -> object:
        try:
            result = twin()
        except Exception as exc:  # shown in the panel, never raised into the kernel
            self.status.value = _status(f"{what}: {type(exc).__name__}: {exc}", error=True)
            return None
        self.status.value = _status(f"{what}: done")
        self.refresh()
        return result

    def refresh(self) -> None:
        """Bring the panel's choices and summary up to date."""


class FaultsPanel(_Panel):
    """Inject faults on the live cluster's network and nodes; each button is its twin.

    Args:
        cluster: the live cluster.
    """

    def __init__(self, cluster: LiveCluster) -> None:
        self.a = w.Dropdown(options=[], layout=w.Layout(width="120px"))
        self.b = w.Dropdown(options=[], layout=w.Layout(width="120px"))
        self.partition_button = _button("Partition", "danger", "cluster.partition(a, b)")
        self.heal_button = _button("Heal", "", "cluster.heal()")
        self.hold_button = _button("Hold", "warning", "cluster.hold(a, b)")
        self.release_button = _button("Release", "", "cluster.release(a, b)")
        self.mean = w.BoundedFloatText(
            value=5.0,
            min=0,
            max=60_000,
            step=1,
            description="mean ms",
            layout=w.Layout(width="150px"),
        )
        self.jitter = w.BoundedFloatText(
            value=2.0, min=0, max=60_000, step=1, description="± ms", layout=w.Layout(width="130px")
        )
        self.latency_button = _button("Set latency", "", "cluster.set_latency(a, b, mean, jitter)")
        self.loss = w.FloatSlider(
            value=0.1,
            min=0,
            max=1,
            step=0.05,
            description="loss p",
            readout_format=".2f",
            layout=w.Layout(width="260px"),
        )
        self.loss_button = _button("Set loss", "", "cluster.set_loss(a, b, p)")
        self.node = w.Dropdown(options=[], layout=w.Layout(width="120px"))
        self.crash_button = _button("Crash", "danger", "cluster.crash(node): like kill -9")
        self.restart_button = _button("Restart", "success", "cluster.restart(node)")
        self.summary = w.HTML()
        for widget in (self.mean, self.jitter):
            widget.style.description_width = "initial"
        self.partition_button.on_click(lambda _: self.partition())
        self.heal_button.on_click(lambda _: self.heal())
        self.hold_button.on_click(lambda _: self.hold())
        self.release_button.on_click(lambda _: self.release())
        self.latency_button.on_click(lambda _: self.set_latency())
        self.loss_button.on_click(lambda _: self.set_loss())
        self.crash_button.on_click(lambda _: self.crash())
        self.restart_button.on_click(lambda _: self.restart())
        between = w.HTML("<span class='hakit-muted'>and</span>")
        super().__init__(
            cluster,
            [
                _row(
                    "Link",
                    self.a,
                    between,
                    self.b,
                    self.partition_button,
                    self.heal_button,
                    self.hold_button,
                    self.release_button,
                ),
                _row(
                    "Delay",
                    self.mean,
                    self.jitter,
                    self.latency_button,
                    self.loss,
                    self.loss_button,
                ),
                _row("Node", self.node, self.crash_button, self.restart_button),
                self.summary,
            ],
        )
        self.add_class("hakit-faults")
        self.refresh()

    # The panel's own twins: what each button does, callable from a cell or a test.
    def partition(self) -> object:
        """Partition the chosen pair (``cluster.partition(a, b)``)."""
        return self._act("partition", lambda: self.cluster.partition(self.a.value, self.b.value))

    def heal(self) -> object:
        """Heal every partition (``cluster.heal()``)."""
        return self._act("heal", self.cluster.heal)

    def hold(self) -> object:
        """Hold the chosen pair's link (``cluster.hold(a, b)``)."""
        return self._act("hold", lambda: self.cluster.hold(self.a.value, self.b.value))

    def release(self) -> object:
        """Release the chosen pair's link (``cluster.release(a, b)``)."""
        return self._act("release", lambda: self.cluster.release(self.a.value, self.b.value))

    def set_latency(self) -> object:
        """Set the chosen pair's latency from the two boxes (milliseconds)."""
        mean, jitter = self.mean.value / 1000, self.jitter.value / 1000
        return self._act(
            "set latency",
            lambda: self.cluster.set_latency(self.a.value, self.b.value, mean, jitter),
        )

    def set_loss(self) -> object:
        """Set the chosen pair's loss probability from the slider."""
        p = self.loss.value
        return self._act("set loss", lambda: self.cluster.set_loss(self.a.value, self.b.value, p))

    def crash(self) -> object:
        """Crash the chosen node (``cluster.crash(node)``)."""
        return self._act(f"crash {self.node.value}", lambda: self.cluster.crash(self.node.value))

    def restart(self) -> object:
        """Restart the chosen crashed node (``cluster.restart(node)``)."""
        name = self.node.value
        return self._act(f"restart {name}", lambda: self.cluster.restart(name))

    def refresh(self) -> None:
        """Update the node choices and the summary of faults in force."""
        names = list(self.cluster.nodes)
        with self.hold_sync():
            for dropdown, default in ((self.a, 0), (self.b, 1), (self.node, 0)):
                if list(dropdown.options) != names:
                    keep = dropdown.value if dropdown.value in names else None
                    dropdown.options = names
                    if keep is None and names:
                        keep = names[min(default, len(names) - 1)]
                    dropdown.value = keep
            self.summary.value = self._summary()

    def _summary(self) -> str:
        network = self.cluster.cluster.network
        parts = []
        cuts = ", ".join(f"{a}\u2009|\u2009{b}" for a, b in network.partitions)
        holds = ", ".join(f"{a}\u2009|\u2009{b}" for a, b in network.holds)
        down = ", ".join(n for n in self.cluster.nodes if network.is_down(n))
        if cuts:
            parts.append(f"partitioned: {cuts}")
        if holds:
            parts.append(f"held: {holds}")
        if down:
            parts.append(f"crashed: {down}")
        text = "; ".join(parts) if parts else "no partition, hold or crash in force"
        return f"<div class='hakit-muted hakit-faults-summary'>{html.escape(text)}</div>"


class ClockPanel(_Panel):
    """Pause, step and pace the live cluster's time; each button is its twin.

    Args:
        cluster: the live cluster.
    """

    def __init__(self, cluster: LiveCluster) -> None:
        self.pause_button = _button("\u23f8 Pause", "warning", "cluster.pause()")
        self.resume_button = _button("\u25b6 Resume", "success", "cluster.resume()")
        self.step_button = _button("\u23ed Step", "", "cluster.step(): on to the next message")
        self.speed = w.ToggleButtons(
            options=[(f"\u00d7{s:g}", s) for s in SPEEDS],
            value=1.0,
            tooltips=[f"cluster.speed = {s:g}" for s in SPEEDS],
            style={"button_width": "52px"},
        )
        self.clock = w.HTML()
        self.pause_button.on_click(lambda _: self.pause())
        self.resume_button.on_click(lambda _: self.resume())
        self.step_button.on_click(lambda _: self.step())
        self.speed.observe(self._speed_picked, names="value")
        self._setting = False
        super().__init__(
            cluster,
            [
                _row("Clock", self.pause_button, self.resume_button, self.step_button, self.clock),
                _row("Speed", self.speed),
            ],
        )
        self.add_class("hakit-clock")
        self.refresh()

    def pause(self) -> object:
        """Pause the cluster's time (``cluster.pause()``)."""
        return self._act("pause", self.cluster.pause)

    def resume(self) -> object:
        """Let time run again (``cluster.resume()``)."""
        return self._act("resume", self.cluster.resume)

    def step(self) -> Handle[Any] | None:
        """Move on to the next message (``cluster.step()``); the status shows it arrive."""
        handle = self._act("step", self.cluster.step)
        if not isinstance(handle, Handle):
            return None
        handle.add_done_callback(self._stepped)
        return handle

    def _stepped(self, handle: Handle[Any]) -> None:
        if handle.state == "done":
            event = handle.result()
            if isinstance(event, hakit.MessageEvent):
                text = f"step: {event.kind} {event.sender} \u2192 {event.receiver} arrived"
                self.status.value = _status(text)
        elif handle.state == "failed":
            self.status.value = _status(f"step: {handle.exception()}", error=True)
        self.refresh()

    def _speed_picked(self, change: dict[str, Any]) -> None:
        if not self._setting:
            value = change["new"]
            self._act(f"speed \u00d7{value:g}", lambda: setattr(self.cluster, "speed", value))

    def refresh(self) -> None:
        """Show the cluster's time, and whether it runs or is paused."""
        state = "paused" if self.cluster.paused else f"running at \u00d7{self.cluster.speed:g}"
        self._setting = True
        try:
            with self.hold_sync():
                if self.cluster.speed in SPEEDS:
                    self.speed.value = self.cluster.speed
                self.clock.value = (
                    f"<span class='hakit-clock-time' style='font-variant-numeric:tabular-nums'>"
                    f"t = {self.cluster.now():.3f} s</span> "
                    f"<span class='hakit-muted'>{state}</span>"
                )
        finally:
            self._setting = False
