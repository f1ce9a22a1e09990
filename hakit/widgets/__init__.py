"""Live views of a hakit cluster in Jupyter (extra ``hakit[widgets]``)."""

from __future__ import annotations

from ._timeline import Timeline

__all__ = ["Timeline"]
