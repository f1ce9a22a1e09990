"""Widget tests run on the same asyncio host loop as the guest-mode tests."""

from ..jupyter.conftest import aio

__all__ = ["aio"]
