"""The containers' one error type."""

from __future__ import annotations


class ProbeError(Exception):
    """A recording is not (or not yet) a segment whose facts can be read."""
