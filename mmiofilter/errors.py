"""Exceptions of the public API (DESIGN §5)."""

from __future__ import annotations


class AccessError(ValueError):
    """An access that is not valid for the BAR: bad width, offset, or value.

    Raised before anything is touched: no device access, no event, no counter.
    """


class PolicyError(ValueError):
    """A rule or policy that cannot be compiled: the message names the rule and field."""


class BackendError(OSError):
    """The backend failed to reach the device (short pread, callback raised, ...)."""
