"""Shared test configuration.

Async tests run under trio without markers (``trio_mode = true`` in pyproject.toml).
"""

from hypothesis import settings

# Shared CI machines are slow and noisy: judge properties by their outcome, not their speed.
settings.register_profile("hakit", deadline=None)
settings.load_profile("hakit")
