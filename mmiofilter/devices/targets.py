"""Redirect targets for a VMM without its own config-space emulation.

Under `config_mirror = "virtualize"` the GPU's BAR0 mirror of its PCI config space is served by
the `config` target. A VMM that emulates config space hands its emulation (a `CallbackBackend`);
one that does not hands the device's config space as the kernel exposes it to userspace, which
is what a guest's config cycles would reach anyway:

- the VFIO config region: `vfio_config_target(device_fd, offset)`, where `offset` is what
  VFIO_DEVICE_GET_REGION_INFO reports for VFIO_PCI_CONFIG_REGION_INDEX. vfio-pci virtualizes
  what it must (BARs, MSI/MSI-X control, the command register's bits) and passes the rest.
- the sysfs `config` file, `/sys/bus/pci/devices/<BDF>/config`: `open_config_target(path)`.
  Linux applies no virtualization here: only for a VMM that already trusts the guest with the
  device's config space.

Both are `FdBackend`s: each access is one pread/pwrite of exactly its width.
"""

from __future__ import annotations

import os
import stat
from types import TracebackType

from ..backends import Backend, CallbackBackend, FdBackend
from ..rules import Policy
from .pciconfig import EXP_CFG_SIZE

#: The mirror is 4 KiB (NV_PCFG 0x88000..0x88FFF): a target must hold extended config space.
MIRROR_SIZE = EXP_CFG_SIZE


def vfio_config_target(device_fd: int, region_offset: int) -> FdBackend:
    """The VFIO config region of an open VFIO device fd, at the offset VFIO reports for it."""
    return FdBackend(device_fd, region_offset)


class ConfigFile:
    """A config-space file opened as a redirect target; close it (or use `with`) once the
    filters using it are gone."""

    def __init__(self, path: str | os.PathLike[str], *, writable: bool = True) -> None:
        self.path = os.fspath(path)
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
        try:
            self.fd = os.open(self.path, flags)
        except OSError as e:
            raise ValueError(f"config target {self.path!r}: cannot open: {e.strerror}") from None
        try:
            st = os.fstat(self.fd)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"config target {self.path!r}: not a regular file")
            if st.st_size < MIRROR_SIZE:
                # A conventional (256-byte) config space, or an unprivileged reader's view:
                # accesses past its end would fail on the guest's first extended-space access.
                raise ValueError(
                    f"config target {self.path!r}: {st.st_size} bytes, but the BAR0 mirror "
                    f"is {MIRROR_SIZE} (PCI Express extended config space); open it as root"
                )
        except BaseException:
            os.close(self.fd)
            raise
        self.backend = FdBackend(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ConfigFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_config_target(path: str | os.PathLike[str], *, writable: bool = True) -> ConfigFile:
    """A config-space file (sysfs `config`, or a copy of one) as a redirect target:
    `attach(..., targets={"config": open_config_target(p).backend})`."""
    return ConfigFile(path, writable=writable)


def inert_targets(policy: Policy, bar: int) -> dict[str, Backend]:
    """A stand-in for every target the BAR's redirect rules name, for tools that compile or
    replay a policy with no VMM behind it (`check`, `layout`, `replay`, the benchmark): reads
    return 0, writes go nowhere. A VMM hands its real targets instead."""
    inert = CallbackBackend(lambda offset, width: 0, lambda offset, width, value: None)
    return {r.target: inert for r in policy.for_bar(bar) if r.action == "redirect"}
