"""Live views of a hakit cluster in Jupyter (extra ``hakit[widgets]``).

`Timeline` is the message-sequence diagram of an event log (live or saved); `FaultsPanel`
and `ClockPanel` drive a live cluster's faults and clock through its twins.
"""

from __future__ import annotations

from ._panels import ClockPanel, FaultsPanel
from ._timeline import Timeline

__all__ = ["ClockPanel", "FaultsPanel", "Timeline"]
