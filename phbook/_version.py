"""The version of phbook (one place; ``phbook.__version__``)."""

__version__ = "0.1.0"
