"""`--vfio DEVICE`: a real device through the Linux VFIO API.

Written from the kernel's uapi headers, include/uapi/linux/vfio.h and iommufd.h (the ioctl
numbers are _IO(';', 100 + n); the structures are the headers' own). Two ways in:

- the iommufd device cdev, `/dev/vfio/devices/vfioN` (Linux 6.6+): open it and `/dev/iommu`,
  VFIO_DEVICE_BIND_IOMMUFD, IOMMU_IOAS_ALLOC, VFIO_DEVICE_ATTACH_IOMMUFD_PT; DMA windows are
  IOMMU_IOAS_MAP with IOMMU_IOAS_MAP_FIXED_IOVA.
- a PCI address (`0000:3b:00.0`): its group `/dev/vfio/<iommu_group>` in a type1 container
  (VFIO_GROUP_GET_STATUS viable, VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU VFIO_TYPE1v2_IOMMU,
  VFIO_GROUP_GET_DEVICE_FD); DMA windows are VFIO_IOMMU_MAP_DMA. A PCI address whose device
  has a cdev (`/sys/bus/pci/devices/<BDF>/vfio-dev/vfioN`) is opened through the cdev.

BARs are reached through the device fd at the offsets VFIO_DEVICE_GET_REGION_INFO reports
(pread/pwrite of exactly the access width: `FdBackend`). No fd is exported to the client: a
VFIO device fd maps every page of a BAR, so a client holding it could bypass the filter; every
access to a real device's BARs therefore arrives as a message. Interrupts are forwarded by
handing the client's eventfds to VFIO_DEVICE_SET_IRQS.

This path has not run against a real device here (the machine has none): see docs/vfio-user.md.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from collections.abc import Sequence
from pathlib import Path

from ..backends import Backend, FdBackend
from ..devices.pcisources import BDF, SYSFS_DEVICES
from ..devices.targets import vfio_config_target
from .protocol import (
    CONFIG_REGION,
    IRQ_SET_ACTION_TRIGGER,
    IRQ_SET_DATA_EVENTFD,
    IRQ_SET_DATA_NONE,
    NUM_PCI_IRQS,
)
from .source import IrqInfo, SourceError

_VFIO_TYPE, _VFIO_BASE = ord(";"), 100
_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_char_p]


def _io(nr: int) -> int:
    """_IO(type, nr) of <asm-generic/ioctl.h>: no size or direction bits."""
    return (_VFIO_TYPE << 8) | nr


# <linux/vfio.h>
VFIO_API_VERSION = 0
VFIO_TYPE1v2_IOMMU = 3
VFIO_GET_API_VERSION = _io(_VFIO_BASE + 0)
VFIO_CHECK_EXTENSION = _io(_VFIO_BASE + 1)
VFIO_SET_IOMMU = _io(_VFIO_BASE + 2)
VFIO_GROUP_GET_STATUS = _io(_VFIO_BASE + 3)
VFIO_GROUP_SET_CONTAINER = _io(_VFIO_BASE + 4)
VFIO_GROUP_GET_DEVICE_FD = _io(_VFIO_BASE + 6)
VFIO_DEVICE_GET_INFO = _io(_VFIO_BASE + 7)
VFIO_DEVICE_GET_REGION_INFO = _io(_VFIO_BASE + 8)
VFIO_DEVICE_GET_IRQ_INFO = _io(_VFIO_BASE + 9)
VFIO_DEVICE_SET_IRQS = _io(_VFIO_BASE + 10)
VFIO_DEVICE_RESET = _io(_VFIO_BASE + 11)
VFIO_IOMMU_MAP_DMA = _io(_VFIO_BASE + 13)
VFIO_IOMMU_UNMAP_DMA = _io(_VFIO_BASE + 14)
VFIO_DEVICE_BIND_IOMMUFD = _io(_VFIO_BASE + 18)
VFIO_DEVICE_ATTACH_IOMMUFD_PT = _io(_VFIO_BASE + 19)
VFIO_GROUP_FLAGS_VIABLE = 1 << 0
VFIO_DEVICE_FLAGS_PCI = 1 << 1
VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE = 1 << 0, 1 << 1
# <linux/iommufd.h>: IOMMUFD_TYPE is ';' too, commands from 0x80.
IOMMU_IOAS_ALLOC = _io(0x81)
IOMMU_IOAS_MAP = _io(0x85)
IOMMU_IOAS_UNMAP = _io(0x86)
IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_WRITEABLE, IOMMU_IOAS_MAP_READABLE = 1, 2, 4

DEVICE_INFO = struct.Struct("<IIII")  # argsz flags num_regions num_irqs
REGION_INFO = struct.Struct("<IIIIQQ")  # argsz flags index cap_offset size offset
IRQ_INFO = struct.Struct("<IIII")  # argsz flags index count
IRQ_SET = struct.Struct("<IIIII")  # argsz flags index start count, then data
GROUP_STATUS = struct.Struct("<II")  # argsz flags
DMA_MAP = struct.Struct("<IIQQQ")  # argsz flags vaddr iova size
DMA_UNMAP = struct.Struct("<IIQQ")  # argsz flags iova size
BIND_IOMMUFD = struct.Struct("<IIiI")  # argsz flags iommufd out_devid (the 6.6 size)
ATTACH_PT = struct.Struct("<III")  # argsz flags pt_id
IOAS_ALLOC = struct.Struct("<III")  # size flags out_ioas_id
IOAS_MAP = struct.Struct("<IIIIQQQ")  # size flags ioas_id reserved user_va length iova
IOAS_UNMAP = struct.Struct("<IIQQ")  # size ioas_id iova length

SYSFS_PCI = Path(SYSFS_DEVICES)


def _ioctl(fd: int, request: int, arg: bytes | int, what: str) -> bytes | int:
    try:
        if isinstance(arg, int):
            return fcntl.ioctl(fd, request, arg)
        buf = bytearray(arg)
        fcntl.ioctl(fd, request, buf, True)
        return bytes(buf)
    except OSError as e:
        hint = " (not a VFIO device?)" if e.errno == errno.ENOTTY else ""
        raise SourceError(f"{what}: {e.strerror}{hint}") from None


def _open(path: str | Path, what: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        hint = ""
        if e.errno == errno.ENOENT:
            hint = " (is the device bound to vfio-pci, and is the vfio module loaded?)"
        elif e.errno in (errno.EACCES, errno.EPERM):
            hint = " (needs root, or the device's VFIO node owned by this user)"
        elif e.errno == errno.EBUSY:
            hint = " (another process holds it)"
        raise SourceError(f"{what} {path}: {e.strerror}{hint}") from None


class VfioSource:
    def __init__(self, device: str) -> None:
        self.name = f"VFIO device {device}"
        self._fds: list[int] = []
        self.iommufd = self.container = -1
        self.ioas = 0
        try:
            self._open(device)
            self._discover()
        except BaseException:
            self.close()
            raise

    # ---- opening --------------------------------------------------------------------------

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def _open(self, device: str) -> None:
        if device.startswith("/dev/vfio/devices/"):
            self._open_cdev(device)
        elif BDF.match(device):
            cdevs = sorted((SYSFS_PCI / device / "vfio-dev").glob("vfio*"))
            if cdevs:
                self._open_cdev(f"/dev/vfio/devices/{cdevs[0].name}")
            else:
                self._open_group(device)
        else:
            raise SourceError(
                f"--vfio {device!r}: expected /dev/vfio/devices/vfioN or a PCI address such as "
                "0000:3b:00.0"
            )

    def _open_cdev(self, path: str) -> None:
        self.device_fd = self._keep(_open(path, "VFIO device"))
        self.iommufd = self._keep(_open("/dev/iommu", "iommufd"))
        _ioctl(self.device_fd, VFIO_DEVICE_BIND_IOMMUFD,
               BIND_IOMMUFD.pack(BIND_IOMMUFD.size, 0, self.iommufd, 0),
               f"{path}: VFIO_DEVICE_BIND_IOMMUFD")  # fmt: skip
        out = _ioctl(self.iommufd, IOMMU_IOAS_ALLOC, IOAS_ALLOC.pack(IOAS_ALLOC.size, 0, 0),
                     "IOMMU_IOAS_ALLOC")  # fmt: skip
        assert isinstance(out, bytes)
        self.ioas = IOAS_ALLOC.unpack(out)[2]
        _ioctl(self.device_fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT,
               ATTACH_PT.pack(ATTACH_PT.size, 0, self.ioas),
               f"{path}: VFIO_DEVICE_ATTACH_IOMMUFD_PT")  # fmt: skip

    def _open_group(self, bdf: str) -> None:
        link = SYSFS_PCI / bdf / "iommu_group"
        try:
            group = os.path.basename(os.readlink(link))
        except OSError as e:
            raise SourceError(
                f"--vfio {bdf}: no IOMMU group ({link}: {e.strerror}); is the address right and "
                "the IOMMU on?"
            ) from None
        self.container = self._keep(_open("/dev/vfio/vfio", "VFIO container"))
        version = _ioctl(self.container, VFIO_GET_API_VERSION, 0, "VFIO_GET_API_VERSION")
        if version != VFIO_API_VERSION:
            raise SourceError(f"VFIO API version {version!r}, expected {VFIO_API_VERSION}")
        if not _ioctl(self.container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU,
                      "VFIO_CHECK_EXTENSION"):  # fmt: skip
            raise SourceError("the VFIO container does not offer the type1v2 IOMMU")
        gfd = self._keep(_open(f"/dev/vfio/{group}", "VFIO group"))
        status = _ioctl(gfd, VFIO_GROUP_GET_STATUS, GROUP_STATUS.pack(GROUP_STATUS.size, 0),
                        "VFIO_GROUP_GET_STATUS")  # fmt: skip
        assert isinstance(status, bytes)
        if not GROUP_STATUS.unpack(status)[1] & VFIO_GROUP_FLAGS_VIABLE:
            raise SourceError(
                f"VFIO group {group} is not viable: bind every device of the group to vfio-pci"
            )
        _ioctl(gfd, VFIO_GROUP_SET_CONTAINER, struct.pack("<i", self.container),
               "VFIO_GROUP_SET_CONTAINER")  # fmt: skip
        _ioctl(self.container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU, "VFIO_SET_IOMMU")
        # The argument is the device's name as a C string and the result the new fd: the
        # ioctl's return value, which fcntl.ioctl drops for buffer arguments.
        fd = _libc.ioctl(gfd, VFIO_GROUP_GET_DEVICE_FD, ctypes.c_char_p(bdf.encode()))
        if fd < 0:
            raise SourceError(f"VFIO_GROUP_GET_DEVICE_FD {bdf}: {os.strerror(ctypes.get_errno())}")
        self.device_fd = self._keep(fd)

    # ---- what the device has ----------------------------------------------------------------

    def _discover(self) -> None:
        out = _ioctl(self.device_fd, VFIO_DEVICE_GET_INFO, DEVICE_INFO.pack(DEVICE_INFO.size,
                     0, 0, 0), "VFIO_DEVICE_GET_INFO")  # fmt: skip
        assert isinstance(out, bytes)
        _, flags, num_regions, num_irqs = DEVICE_INFO.unpack(out)
        if not flags & VFIO_DEVICE_FLAGS_PCI:
            raise SourceError(f"{self.name}: not a vfio-pci device (flags {flags:#x})")
        self.regions: dict[int, tuple[int, int]] = {}  # index -> (size, fd offset)
        for index in range(min(num_regions, CONFIG_REGION + 1)):
            info = _ioctl(self.device_fd, VFIO_DEVICE_GET_REGION_INFO,
                          REGION_INFO.pack(REGION_INFO.size, 0, index, 0, 0, 0),
                          f"VFIO_DEVICE_GET_REGION_INFO {index}")  # fmt: skip
            assert isinstance(info, bytes)
            _, _, _, _, size, offset = REGION_INFO.unpack(info)
            if size:
                self.regions[index] = (size, offset)
        if CONFIG_REGION not in self.regions:
            raise SourceError(f"{self.name}: no config region")
        self._irqs: dict[int, IrqInfo] = {}
        for index in range(min(num_irqs, NUM_PCI_IRQS)):
            info = _ioctl(self.device_fd, VFIO_DEVICE_GET_IRQ_INFO,
                          IRQ_INFO.pack(IRQ_INFO.size, 0, index, 0),
                          f"VFIO_DEVICE_GET_IRQ_INFO {index}")  # fmt: skip
            assert isinstance(info, bytes)
            _, iflags, _, count = IRQ_INFO.unpack(info)
            if count:
                self._irqs[index] = IrqInfo(count, iflags)
        self.config = VfioConfig(self.device_fd, *self.regions[CONFIG_REGION])

    def bar_sizes(self) -> dict[int, int]:
        return {i: s for i, (s, _) in self.regions.items() if i < 6}

    def bar_backend(self, index: int) -> Backend:
        return FdBackend(self.device_fd, self.regions[index][1])

    def config_target(self) -> Backend:
        return vfio_config_target(self.device_fd, self.regions[CONFIG_REGION][1])

    #: The device fd would map the whole BAR: see the module doc.
    can_export = False

    def export(self, index: int, areas: Sequence[tuple[int, int]]) -> int:
        raise SourceError(f"{self.name}: BAR{index} is not offered for mapping")

    def irqs(self) -> dict[int, IrqInfo]:
        return dict(self._irqs)

    def set_irqs(self, index: int, start: int, fds: Sequence[int]) -> None:
        data = struct.pack(f"<{len(fds)}i", *fds)
        flags = IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER
        _ioctl(self.device_fd, VFIO_DEVICE_SET_IRQS,
               IRQ_SET.pack(IRQ_SET.size + len(data), flags, index, start, len(fds)) + data,
               f"VFIO_DEVICE_SET_IRQS index {index}")  # fmt: skip

    def irq_action(self, index: int, sub: int, action: int) -> None:
        _ioctl(self.device_fd, VFIO_DEVICE_SET_IRQS,
               IRQ_SET.pack(IRQ_SET.size, IRQ_SET_DATA_NONE | action, index, sub, 1),
               f"VFIO_DEVICE_SET_IRQS index {index} action {action:#x}")  # fmt: skip

    def dma_map(self, iova: int, size: int, vaddr: int, flags: int) -> None:
        if self.iommufd >= 0:
            mflags = IOMMU_IOAS_MAP_FIXED_IOVA | (IOMMU_IOAS_MAP_READABLE if flags & 1 else 0) | (
                IOMMU_IOAS_MAP_WRITEABLE if flags & 2 else 0)  # fmt: skip
            _ioctl(self.iommufd, IOMMU_IOAS_MAP,
                   IOAS_MAP.pack(IOAS_MAP.size, mflags, self.ioas, 0, vaddr, size, iova),
                   "IOMMU_IOAS_MAP")  # fmt: skip
        else:
            _ioctl(self.container, VFIO_IOMMU_MAP_DMA,
                   DMA_MAP.pack(DMA_MAP.size, flags & 3, vaddr, iova, size),
                   "VFIO_IOMMU_MAP_DMA")  # fmt: skip

    def dma_unmap(self, iova: int, size: int) -> None:
        if self.iommufd >= 0:
            _ioctl(
                self.iommufd,
                IOMMU_IOAS_UNMAP,
                IOAS_UNMAP.pack(IOAS_UNMAP.size, self.ioas, iova, size),
                "IOMMU_IOAS_UNMAP",
            )
        else:
            _ioctl(
                self.container,
                VFIO_IOMMU_UNMAP_DMA,
                DMA_UNMAP.pack(DMA_UNMAP.size, 0, iova, size),
                "VFIO_IOMMU_UNMAP_DMA",
            )

    def reset(self) -> None:
        _ioctl(self.device_fd, VFIO_DEVICE_RESET, 0, "VFIO_DEVICE_RESET")

    def close(self) -> None:
        for fd in reversed(self._fds):
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()


class VfioConfig:
    """The VFIO config region: vfio-pci virtualizes what it must, the rest is the device's."""

    def __init__(self, fd: int, size: int, offset: int) -> None:
        self.fd, self._size, self.offset = fd, size, offset

    @property
    def size(self) -> int:
        return self._size

    def read_bytes(self, offset: int, count: int) -> bytes:
        data = os.pread(self.fd, count, self.offset + offset)
        if len(data) != count:
            raise OSError(errno.EIO, f"config read of {count} at {offset:#x}: short")
        return data

    def write_bytes(self, offset: int, data: bytes) -> None:
        if os.pwrite(self.fd, data, self.offset + offset) != len(data):
            raise OSError(errno.EIO, f"config write of {len(data)} at {offset:#x}: short")
