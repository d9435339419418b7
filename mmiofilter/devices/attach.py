"""Attach a policy file to a device: read what the profile needs, then build the filter.

Discovery reads the real device through the same backend the filter will use, with no policy
in the way and before the guest runs: the device-info table is what the GPU says it has, not
what a guest could later make it say.

`targets` are the backends the VMM hands the filter for `redirect` rules, by name: `config` is
the VMM's emulation of the device's PCI config space (where the GPU's BAR0 mirror of its config
space is sent under `config_mirror = "virtualize"`). A VMM without one hands the VFIO config
region or the sysfs `config` file (`devices.targets`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..backends import Backend
from ..errors import PolicyError
from ..filter import BarFilter
from ..rules import Policy
from .policyfile import PolicyFile
from .profile import Device, Resolved


def probe_device(
    backend: Backend, size: int, bar: int, targets: frozenset[str] | None = None
) -> Device:
    """A Device whose read32 reads BAR0 through `backend` (exact 4-byte device reads)."""
    if bar != 0:
        return Device(bar_sizes={bar: size}, targets=targets)
    probe = BarFilter(size, Policy([]), backend, bar=bar)
    return Device(
        read32=lambda offset: probe.read(offset, 4), bar_sizes={bar: size}, targets=targets
    )


def _check_targets(
    policy: Policy, bar: int, given: Mapping[str, Backend], where: str
) -> dict[str, Backend]:
    """Every redirect rule of this BAR names a target the VMM handed over: say which is missing
    and what to do, before the filter exists. Returns the targets the rules use."""
    for name, b in given.items():
        if not isinstance(b, Backend):
            raise TypeError(f"target {name!r}: expected a backend, not {type(b).__name__}")
    used: dict[str, Backend] = {}
    for r in policy.for_bar(bar):
        if r.action != "redirect":
            continue
        target = getattr(r, "target", None)
        if not isinstance(target, str) or target not in given:
            raise PolicyError(
                f"{where}: rule {r.name!r} redirects to target {target!r}, which attach() was "
                f"not given (targets: {', '.join(sorted(given)) or 'none'}). Hand the VMM's "
                "config-space emulation, or the device's config file "
                "(mmiofilter.devices.targets.open_config_target), as "
                f'targets={{{target!r}: backend}}; or choose config_mirror = "deny"'
            )
        used[target] = given[target]
    return used


def attach(
    policy_file: PolicyFile,
    backend: Backend,
    size: int,
    *,
    bar: int = 0,
    page_size: int | None = None,
    ring_capacity: int = 1024,
    targets: Mapping[str, Backend] | None = None,
) -> tuple[BarFilter, Resolved]:
    """The filter for one BAR of the device behind `backend`, with every rule resolved.

    `targets` (name -> backend) serve the policy's redirect rules."""
    given = dict(targets or {})
    device = probe_device(backend, size, bar, frozenset(given))
    policy, resolved = policy_file.resolve(device)
    used = _check_targets(policy, bar, given, policy_file.where)
    # The filter gets the targets its redirect rules use (a `config1` the profile routed
    # nothing to is not the filter's business).
    extra: dict[str, Any] = {"targets": used} if used else {}
    f = BarFilter(
        size, policy, backend, bar=bar, page_size=page_size, ring_capacity=ring_capacity, **extra
    )
    return f, resolved
