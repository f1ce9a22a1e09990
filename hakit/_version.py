"""The version of hakit."""

__version__ = "0.1.0"
