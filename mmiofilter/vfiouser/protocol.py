"""The vfio-user wire format, from QEMU's docs/interop/vfio-user.rst.

Section names below are that document's. All integers are in the host's byte order
("Protocol Specification": the endianness of the host system); this server runs on
little-endian x86 and ARM hosts, and says `<` explicitly so a struct never pads.
The VFIO structures the messages reuse (region info, sparse-mmap capability, IRQ info and
set) are the kernel's `<linux/vfio.h>` ones, which the document names.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass

# "Commands": the command IDs.
VERSION = 1
DMA_MAP = 2
DMA_UNMAP = 3
DEVICE_GET_INFO = 4
DEVICE_GET_REGION_INFO = 5
DEVICE_GET_REGION_IO_FDS = 6
DEVICE_GET_IRQ_INFO = 7
DEVICE_SET_IRQS = 8
REGION_READ = 9
REGION_WRITE = 10
DMA_READ = 11
DMA_WRITE = 12
DEVICE_RESET = 13
REGION_WRITE_MULTI = 15
DEVICE_FEATURE = 16

COMMAND_NAMES = {
    VERSION: "VERSION",
    DMA_MAP: "DMA_MAP",
    DMA_UNMAP: "DMA_UNMAP",
    DEVICE_GET_INFO: "DEVICE_GET_INFO",
    DEVICE_GET_REGION_INFO: "DEVICE_GET_REGION_INFO",
    DEVICE_GET_REGION_IO_FDS: "DEVICE_GET_REGION_IO_FDS",
    DEVICE_GET_IRQ_INFO: "DEVICE_GET_IRQ_INFO",
    DEVICE_SET_IRQS: "DEVICE_SET_IRQS",
    REGION_READ: "REGION_READ",
    REGION_WRITE: "REGION_WRITE",
    DMA_READ: "DMA_READ",
    DMA_WRITE: "DMA_WRITE",
    DEVICE_RESET: "DEVICE_RESET",
    REGION_WRITE_MULTI: "REGION_WRITE_MULTI",
    DEVICE_FEATURE: "DEVICE_FEATURE",
}

# "Header": 16 bytes, {u16 id, u16 command, u32 size (header included), u32 flags, u32 error}.
HEADER = struct.Struct("<HHIII")
TYPE_COMMAND = 0x0
TYPE_REPLY = 0x1
TYPE_MASK = 0xF
FLAG_NO_REPLY = 0x10
FLAG_ERROR = 0x20

# "VFIO_USER_VERSION": {u16 major, u16 minor, JSON capabilities with a NUL}. QEMU's client
# (hw/vfio-user/protocol.h) speaks 0.0 and requires the reply's major to equal its own.
VERSION_HEAD = struct.Struct("<HH")
MAJOR, MINOR = 0, 0
# "Version" capabilities and their defaults.
DEFAULT_MAX_MSG_FDS = 1
DEFAULT_MAX_DATA_XFER = 1 << 20
DEFAULT_PGSIZE = 4096

# "VFIO_USER_DMA_MAP": {argsz, flags, offset, address, size}; flags bit 0 read, bit 1 write.
DMA_MAP_BODY = struct.Struct("<IIQQQ")
DMA_FLAG_READ, DMA_FLAG_WRITE = 0x1, 0x2
# "VFIO_USER_DMA_UNMAP": {argsz, flags, address, size}.
DMA_UNMAP_BODY = struct.Struct("<IIQQ")

# "VFIO_USER_DEVICE_GET_INFO": {argsz, flags, num_regions, num_irqs}.
DEVICE_INFO = struct.Struct("<IIII")
VFIO_DEVICE_FLAGS_RESET = 1 << 0
VFIO_DEVICE_FLAGS_PCI = 1 << 1

# "VFIO_USER_DEVICE_GET_REGION_INFO": struct vfio_region_info
# {argsz, flags, index, cap_offset, u64 size, u64 offset}.
REGION_INFO = struct.Struct("<IIIIQQ")
REGION_FLAG_READ = 1 << 0
REGION_FLAG_WRITE = 1 << 1
REGION_FLAG_MMAP = 1 << 2
REGION_FLAG_CAPS = 1 << 3
# "VFIO cap header format" {u16 id, u16 version, u32 next} and "VFIO region info cap sparse
# mmap" {u32 nr_areas, u32 reserved, then {u64 offset, u64 size} per area}.
CAP_HEADER = struct.Struct("<HHI")
CAP_SPARSE_MMAP = 1
SPARSE_HEAD = struct.Struct("<II")
SPARSE_AREA = struct.Struct("<QQ")

# The PCI region and IRQ indices of <linux/vfio.h> (VFIO_PCI_*_REGION_INDEX, *_IRQ_INDEX).
BAR_REGIONS = range(0, 6)
ROM_REGION = 6
CONFIG_REGION = 7
VGA_REGION = 8
NUM_PCI_REGIONS = 9
INTX_IRQ, MSI_IRQ, MSIX_IRQ, ERR_IRQ, REQ_IRQ = 0, 1, 2, 3, 4
NUM_PCI_IRQS = 5

# "VFIO_USER_DEVICE_GET_IRQ_INFO": struct vfio_irq_info {argsz, flags, index, count}.
IRQ_INFO = struct.Struct("<IIII")
IRQ_INFO_EVENTFD = 1 << 0
IRQ_INFO_MASKABLE = 1 << 1
IRQ_INFO_AUTOMASKED = 1 << 2
IRQ_INFO_NORESIZE = 1 << 3

# "VFIO_USER_DEVICE_SET_IRQS": struct vfio_irq_set {argsz, flags, index, start, count, data}.
IRQ_SET = struct.Struct("<IIIII")
IRQ_SET_DATA_NONE = 1 << 0
IRQ_SET_DATA_BOOL = 1 << 1
IRQ_SET_DATA_EVENTFD = 1 << 2
IRQ_SET_ACTION_MASK = 1 << 3
IRQ_SET_ACTION_UNMASK = 1 << 4
IRQ_SET_ACTION_TRIGGER = 1 << 5
IRQ_SET_DATA_MASK = IRQ_SET_DATA_NONE | IRQ_SET_DATA_BOOL | IRQ_SET_DATA_EVENTFD
IRQ_SET_ACTION_MASK_ALL = IRQ_SET_ACTION_MASK | IRQ_SET_ACTION_UNMASK | IRQ_SET_ACTION_TRIGGER

# "VFIO_USER_REGION_READ" / "VFIO_USER_REGION_WRITE": {u64 offset, u32 region, u32 count}.
REGION_RW = struct.Struct("<QII")

#: The largest message this server reads: a REGION_WRITE of max_data_xfer_size, or a VERSION
#: with a generous JSON. Anything larger is refused and the connection closed: the stream cannot
#: be resynchronized without reading what the client claims to send.
MAX_DATA_XFER = DEFAULT_MAX_DATA_XFER
MAX_MESSAGE = HEADER.size + REGION_RW.size + MAX_DATA_XFER
#: The most fds one message may carry here (announced as max_msg_fds).
MAX_MSG_FDS = 8


class ProtocolError(Exception):
    """A message the server refuses: an error reply carrying `errno`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code


def einval(message: str) -> ProtocolError:
    return ProtocolError(errno.EINVAL, message)


@dataclass(frozen=True)
class Header:
    msg_id: int
    command: int
    size: int
    flags: int
    error: int

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        return cls(*HEADER.unpack(data))

    def pack(self) -> bytes:
        return HEADER.pack(self.msg_id, self.command, self.size, self.flags, self.error)

    @property
    def is_command(self) -> bool:
        return self.flags & TYPE_MASK == TYPE_COMMAND

    @property
    def no_reply(self) -> bool:
        return bool(self.flags & FLAG_NO_REPLY)


def command_name(command: int) -> str:
    return COMMAND_NAMES.get(command, f"command {command}")


def reply(msg_id: int, command: int, payload: bytes = b"") -> bytes:
    """A reply message: the command's header with the Reply type."""
    return HEADER.pack(msg_id, command, HEADER.size + len(payload), TYPE_REPLY, 0) + payload


def error_reply(msg_id: int, command: int, code: int) -> bytes:
    """Only the header: "If an error occurs, the reply message must only include the reply
    header" ("Header")."""
    return HEADER.pack(msg_id, command, HEADER.size, TYPE_REPLY | FLAG_ERROR, code)
