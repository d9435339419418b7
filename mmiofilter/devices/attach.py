"""Attach a policy file to a device: read what the profile needs, then build the filter.

Discovery reads the real device through the same backend the filter will use, with no policy
in the way and before the guest runs: the device-info table is what the GPU says it has, not
what a guest could later make it say.
"""

from __future__ import annotations

import os
import re

from ..backends import Backend
from ..errors import PolicyError
from ..filter import BarFilter
from ..lint import LOGGER
from ..rules import Policy
from .policyfile import PolicyFile
from .profile import Device, Resolved


def probe_device(backend: Backend, size: int, bar: int) -> Device:
    """A Device whose read32 reads BAR0 through `backend` (exact 4-byte device reads)."""
    if bar != 0:
        return Device(bar_sizes={bar: size})
    probe = BarFilter(size, Policy([]), backend, bar=bar)
    return Device(read32=lambda offset: probe.read(offset, 4), bar_sizes={bar: size})


_BDF = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")


def device_label(policy_file: PolicyFile, bar: int) -> str:
    """A name for the filter in its events: the PCI address when the config dump came from
    sysfs (/sys/bus/pci/devices/<address>/config), else vendor:device, else the profile."""
    cfg = policy_file.config
    if cfg is not None:
        parent = os.path.basename(os.path.dirname(os.path.abspath(cfg.where)))
        name = parent if _BDF.match(parent) else f"{cfg.vendor:04x}:{cfg.device:04x}"
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
    label: str | None = None,
    strict: bool = False,
) -> tuple[BarFilter, Resolved]:
    """The filter for one BAR of the device behind `backend`, with every rule resolved.

    Each warning of the resolution (an unconfirmed fact the rules rely on, no NVLink unit in
    the device-info table, ...) goes to the `mmiofilter` logger; with `strict` it is a
    PolicyError instead and no filter is made. `label` (default: `device_label`) names the
    filter in its events.
    """
    policy, resolved = policy_file.resolve(probe_device(backend, size, bar))
    where = policy_file.where
    if strict and resolved.warnings:
        raise PolicyError(f"{where}: strict: " + "; ".join(resolved.warnings))
    for w in resolved.warnings:
        LOGGER.warning("%s: %s", where, w)
    f = BarFilter(
        size,
        policy,
        backend,
        bar=bar,
        page_size=page_size,
        ring_capacity=ring_capacity,
        label=device_label(policy_file, bar) if label is None else label,
    )
    return f, resolved
