"""The containers' one error type, and how a reader is made to raise only it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast


class ProbeError(Exception):
    """A recording is not (or not yet) a segment whose facts can be read."""


# What a reader may raise on bytes that break a structure's own rules (a count past its
# box, an empty box at the end of its parent): turned into ProbeError by `total`.
CORRUPT = (
    IndexError, ValueError, OverflowError, ZeroDivisionError, KeyError, StopIteration,
    RecursionError,
)  # fmt: skip
F = TypeVar("F", bound=Callable[..., Any])


def total(read: F) -> F:
    """A reader that gives facts or ProbeError (or OSError), whatever the bytes."""

    @functools.wraps(read)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return read(*args, **kwargs)
        except CORRUPT as error:
            raise ProbeError(f"corrupt recording ({type(error).__name__}: {error})") from None

    return cast(F, wrapped)
