"""The dashboard sections this package adds: the live timeline, faults and clock panels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ._panels import ClockPanel, FaultsPanel
from ._timeline import Timeline

Section = tuple[str, w.Widget, Callable[[], None] | None]


def timeline_section(dashboard: Any) -> Section:
    """A live `Timeline` of the dashboard's cluster, following its newest messages."""
    timeline = Timeline(dashboard.cluster.cluster.events, live=True, window=400)

    def refresh() -> None:
        timeline.refresh()

    return "Timeline", timeline, refresh


def faults_section(dashboard: Any) -> Section:
    """The `FaultsPanel` of the dashboard's cluster."""
    panel = FaultsPanel(dashboard.cluster)
    return "Faults", panel, panel.refresh


def clock_section(dashboard: Any) -> Section:
    """The `ClockPanel` of the dashboard's cluster."""
    panel = ClockPanel(dashboard.cluster)
    return "Clock", panel, panel.refresh


SECTIONS = (timeline_section, faults_section, clock_section)
