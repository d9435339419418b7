"""Attach a policy file to a device: read what the profile needs, then build the filter.

Discovery reads the real device through the same backend the filter will use, with no policy
in the way and before the guest runs: the device-info table is what the GPU says it has, not
what a guest could later make it say.
"""

from __future__ import annotations

from ..backends import Backend
from ..filter import BarFilter
from ..rules import Policy
from .policyfile import PolicyFile
from .profile import Device, Resolved


def probe_device(backend: Backend, size: int, bar: int) -> Device:
    """A Device whose read32 reads BAR0 through `backend` (exact 4-byte device reads)."""
    if bar != 0:
        return Device(bar_sizes={bar: size})
    probe = BarFilter(size, Policy([]), backend, bar=bar)
    return Device(read32=lambda offset: probe.read(offset, 4), bar_sizes={bar: size})


def attach(
    policy_file: PolicyFile,
    backend: Backend,
    size: int,
    *,
    bar: int = 0,
    page_size: int | None = None,
    ring_capacity: int = 1024,
) -> tuple[BarFilter, Resolved]:
    """The filter for one BAR of the device behind `backend`, with every rule resolved."""
    policy, resolved = policy_file.resolve(probe_device(backend, size, bar))
    f = BarFilter(size, policy, backend, bar=bar, page_size=page_size, ring_capacity=ring_capacity)
    return f, resolved
