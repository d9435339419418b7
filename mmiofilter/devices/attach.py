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

import os
from collections.abc import Mapping
from typing import Any

from ..backends import Backend
from ..errors import PolicyError
from ..filter import BarFilter
from ..lint import LOGGER
from ..rules import Policy
from .pcisources import BDF
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


def device_label(policy_file: PolicyFile, bar: int) -> str:
    """A name for the filter in its events: the PCI address when the config dump came from
    sysfs (/sys/bus/pci/devices/<address>/config), else vendor:device, else the profile."""
    cfg = policy_file.config
    if cfg is not None:
        parent = os.path.basename(os.path.dirname(os.path.abspath(cfg.where)))
        name = parent if BDF.match(parent) else f"{cfg.vendor:04x}:{cfg.device:04x}"
    elif policy_file.profile is not None:
        name = policy_file.profile.name
    else:
        name = os.path.basename(policy_file.where)
    return f"{name}/bar{bar}"


def attach(
    policy_file: PolicyFile,
    backend: Backend,
    size: int,
    *,
    bar: int = 0,
    page_size: int | None = None,
    ring_capacity: int = 1024,
    targets: Mapping[str, Backend] | None = None,
    label: str | None = None,
    strict: bool = False,
) -> tuple[BarFilter, Resolved]:
    """The filter for one BAR of the device behind `backend`, with every rule resolved.

    `targets` (name -> backend) serve the policy's redirect rules. Each warning of the
    resolution (an unconfirmed fact the rules rely on, no NVLink unit in the device-info table,
    ...) goes to the `mmiofilter` logger; with `strict` it is a PolicyError instead and no
    filter is made. `label` (default: `device_label`) names the filter in its events.
    """
    given = dict(targets or {})
    device = probe_device(backend, size, bar, frozenset(given))
    policy, resolved = policy_file.resolve(device)
    where = policy_file.where
    used = _check_targets(policy, bar, given, where)
    if strict and resolved.warnings:
        raise PolicyError(f"{where}: strict: " + "; ".join(resolved.warnings))
    for w in resolved.warnings:
        LOGGER.warning("%s: %s", where, w)
    # The filter gets the targets its redirect rules use (a `config1` the profile routed
    # nothing to is not the filter's business).
    extra: dict[str, Any] = {"targets": used} if used else {}
    f = BarFilter(
        size,
        policy,
        backend,
        bar=bar,
        page_size=page_size,
        ring_capacity=ring_capacity,
        label=device_label(policy_file, bar) if label is None else label,
        **extra,
    )
    return f, resolved
