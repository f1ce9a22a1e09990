"""Live views of a hakit cluster in Jupyter (extra ``hakit[widgets]``).

`ClusterDashboard` is what a `hakit.jupyter.LiveCluster` shows as a cell's value: stock
ipywidgets 8 for the controls and tables, and anywidgets (front-end code shipped in this
package, never loaded from a CDN) for the drawn views: the topology and the message
`Timeline` (the message-sequence diagram of an event log, live or saved). `FaultsPanel` and
`ClockPanel` drive a live cluster's faults and clock through its twins. Other views add
dashboard tabs with `register_section`.
"""

from __future__ import annotations

from ._dashboard import ClusterDashboard, TopologyView, register_section
from ._panels import ClockPanel, FaultsPanel
from ._sections import SECTIONS
from ._timeline import Timeline

# Every dashboard gets the live timeline and the faults and clock panels as tabs.
for _factory in SECTIONS:
    register_section(_factory)
del _factory

__all__ = [
    "ClockPanel",
    "ClusterDashboard",
    "FaultsPanel",
    "Timeline",
    "TopologyView",
    "register_section",
]
