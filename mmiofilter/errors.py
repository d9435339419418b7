"""Exceptions of the public API (contract §5)."""

from __future__ import annotations

from typing import TypeGuard


class AccessError(ValueError):
    """An access that is not valid for the BAR: bad width, offset, or value.

    Raised before anything is touched: no device access, no event, no counter.
    """


class PolicyError(ValueError):
    """A rule or policy that cannot be compiled: the message names the rule and field."""


class BackendError(OSError):
    """The backend failed to reach the device (short pread, callback raised, ...)."""


def is_int(v: object) -> TypeGuard[int]:
    """An integer and not a bool: bool is an int in Python, and `start = true` in a policy
    file is a mistake, not 1."""
    return isinstance(v, int) and not isinstance(v, bool)


def shown(value: object, limit: int = 60) -> str:
    """A value for an error message, safe for anything a hostile file can hold: an integer of
    thousands of digits cannot even be printed in decimal (Python's int_max_str_digits)."""
    if is_int(value) and abs(value) >= 1 << 64:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
