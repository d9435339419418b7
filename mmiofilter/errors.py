"""Exceptions of the public API (contract §5)."""

from __future__ import annotations


class AccessError(ValueError):
    """An access that is not valid for the BAR: bad width, offset, or value.

    Raised before anything is touched: no device access, no event, no counter.
    """


class PolicyError(ValueError):
    """A rule or policy that cannot be compiled: the message names the rule and field."""


class BackendError(OSError):
    """The backend failed to reach the device (short pread, callback raised, ...)."""


def shown(value: object, limit: int = 60) -> str:
    """A value for an error message, safe for anything a hostile file can hold: an integer of
    thousands of digits cannot even be printed in decimal (Python's int_max_str_digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1 << 64:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
