"""The node agent (see README)."""

__version__ = "0.1.0"  # reported to the server and in every Result's provenance
