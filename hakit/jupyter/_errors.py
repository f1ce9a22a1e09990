"""The error a notebook call raises when it cannot work where it was made."""

from __future__ import annotations

from ..protocol import HakitError


class NotebookError(HakitError):
    """A call that cannot work in a notebook (or outside one); the message says what to use."""
