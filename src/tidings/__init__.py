"""Tidings: end-to-end encrypted messaging with safety by design."""

__version__ = "0.1.0"
