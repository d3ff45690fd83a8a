"""Error types raised by more than one layer of the package, kept free of heavy
imports so that every layer can raise them (the command line starts without torch)."""

from __future__ import annotations

__all__ = ["ModelFileError"]


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and the reason."""
