"""One client connection: the commands of QEMU's docs/interop/vfio-user.rst, each checked
before anything reaches the device.

Every handler parses its fixed payload first (a short payload, an unknown flag, an index or
offset past a region, a count past max_data_xfer_size are EINVAL and never a device access),
then acts. Fds are accepted only where the document puts them (one with DMA_MAP, `count` with
SET_IRQS and DATA_EVENTFD); any other fd is closed and the command refused.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import struct
from collections.abc import Callable

from .._core import ffi
from ..errors import AccessError, BackendError
from ..results import Outcome
from . import protocol as p
from .device import FilteredDevice
from .dma import MAX_DMA_MAPS, DmaTable
from .protocol import ProtocolError, einval
from .wire import Message

log = logging.getLogger("mmiofilter")

Reply = tuple[bytes, list[int]]  # payload, fds to send with it


def _is_eventfd(fd: int) -> bool:
    try:
        return (
            stat.S_ISREG(os.fstat(fd).st_mode) is False
            and os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
        )
    except OSError:
        return False


class Session:
    def __init__(self, device: FilteredDevice) -> None:
        self.device = device
        self.negotiated = False
        self.dma = DmaTable()
        self.irq_fds: dict[int, list[int]] = {}  # eventfds we own, by IRQ index
        self.handled = 0
        self._handlers: dict[int, Callable[[Message], Reply]] = {
            p.VERSION: self.version,
            p.DMA_MAP: self.dma_map,
            p.DMA_UNMAP: self.dma_unmap,
            p.DEVICE_GET_INFO: self.get_info,
            p.DEVICE_GET_REGION_INFO: self.region_info,
            p.DEVICE_GET_IRQ_INFO: self.irq_info,
            p.DEVICE_SET_IRQS: self.set_irqs,
            p.REGION_READ: self.region_read,
            p.REGION_WRITE: self.region_write,
            p.DEVICE_RESET: self.reset,
        }

    # ---- dispatch ---------------------------------------------------------------------

    def handle(self, msg: Message) -> tuple[bytes, list[int]] | None:
        """The reply message (and its fds) for one command, or None for No_reply commands.
        Never raises for what the client sent; the message's fds are consumed."""
        h = msg.header
        try:
            if not h.is_command:
                raise einval(f"message type {h.flags & p.TYPE_MASK} is not a command")
            if h.flags & ~(p.TYPE_MASK | p.FLAG_NO_REPLY):
                raise einval(f"unknown header flags {h.flags:#x}")
            handler = self._handlers.get(h.command)
            if handler is None:
                raise ProtocolError(errno.ENOSYS, f"{p.command_name(h.command)} not supported")
            if h.command != p.VERSION and not self.negotiated:
                raise einval(f"{p.command_name(h.command)} before VERSION")
            if h.command == p.VERSION and self.negotiated:
                raise einval("VERSION after the version was negotiated")
            payload, fds = handler(msg)
        except ProtocolError as e:
            msg.close_fds()
            log.warning("client: %s refused (%s): %s", p.command_name(h.command),
                        errno.errorcode.get(e.errno, e.errno), e)  # fmt: skip
            if h.no_reply:
                return None
            return p.error_reply(h.msg_id, h.command, e.errno), []
        msg.close_fds()  # whatever a handler did not take
        self.handled += 1
        if h.no_reply:
            return None
        return p.reply(h.msg_id, h.command, payload), fds

    @staticmethod
    def _no_fds(msg: Message) -> None:
        if msg.fds:
            raise einval(f"{p.command_name(msg.header.command)} carries no fds, got {len(msg.fds)}")

    @staticmethod
    def _fixed(msg: Message, s: struct.Struct, exact: bool = False) -> tuple[int, ...]:
        body = msg.body
        if len(body) < s.size or (exact and len(body) != s.size):
            raise einval(
                f"{p.command_name(msg.header.command)}: payload of {len(body)} bytes, "
                f"{'exactly' if exact else 'at least'} {s.size} expected"
            )
        return s.unpack_from(body)

    # ---- commands -----------------------------------------------------------------------

    def version(self, msg: Message) -> Reply:
        self._no_fds(msg)
        major, minor = self._fixed(msg, p.VERSION_HEAD)
        if major != p.MAJOR:
            raise ProtocolError(
                errno.ENOTSUP, f"VERSION: major {major}, this server speaks {p.MAJOR}"
            )
        data = msg.body[p.VERSION_HEAD.size :]
        if data:
            if not data.endswith(b"\0") or b"\0" in data[:-1]:
                raise einval("VERSION: the JSON must end with its one NUL")
            try:
                caps = json.loads(data[:-1].decode())
            except (UnicodeDecodeError, ValueError) as e:
                raise einval(f"VERSION: the capabilities are not JSON: {e}") from None
            if not isinstance(caps, dict) or not isinstance(caps.get("capabilities", {}), dict):
                raise einval("VERSION: the capabilities must be a JSON object")
        answer = {
            "capabilities": {
                "max_msg_fds": p.MAX_MSG_FDS,
                "max_data_xfer_size": p.MAX_DATA_XFER,
                "pgsizes": p.DEFAULT_PGSIZE,
                "max_dma_maps": MAX_DMA_MAPS,
            }
        }
        self.negotiated = True
        out = p.VERSION_HEAD.pack(p.MAJOR, min(minor, p.MINOR)) + json.dumps(answer).encode()
        return out + b"\0", []

    def get_info(self, msg: Message) -> Reply:
        self._no_fds(msg)
        argsz, _, _, _ = self._fixed(msg, p.DEVICE_INFO)
        if argsz < p.DEVICE_INFO.size:
            raise einval(f"DEVICE_GET_INFO: argsz {argsz} is smaller than the reply")
        return p.DEVICE_INFO.pack(
            p.DEVICE_INFO.size,
            p.VFIO_DEVICE_FLAGS_PCI | p.VFIO_DEVICE_FLAGS_RESET,
            p.NUM_PCI_REGIONS,
            p.NUM_PCI_IRQS,
        ), []

    def region_info(self, msg: Message) -> Reply:
        self._no_fds(msg)
        argsz, _, index, _, _, _ = self._fixed(msg, p.REGION_INFO)
        if argsz < p.REGION_INFO.size:
            raise einval(f"DEVICE_GET_REGION_INFO: argsz {argsz} is smaller than the info")
        if index >= p.NUM_PCI_REGIONS:
            raise einval(f"DEVICE_GET_REGION_INFO: no region {index}")
        rw = p.REGION_FLAG_READ | p.REGION_FLAG_WRITE
        dev = self.device
        if index == p.CONFIG_REGION:
            size = dev.source.config.size
            return p.REGION_INFO.pack(p.REGION_INFO.size, rw, index, 0, size, 0), []
        if index not in dev.filters:
            return p.REGION_INFO.pack(p.REGION_INFO.size, 0, index, 0, 0, 0), []
        f = dev.filters[index]
        areas = dev.mappable(index)
        if not areas:
            return p.REGION_INFO.pack(p.REGION_INFO.size, rw, index, 0, f.size, 0), []
        cap = p.CAP_HEADER.pack(p.CAP_SPARSE_MMAP, 1, 0) + p.SPARSE_HEAD.pack(len(areas), 0)
        cap += b"".join(p.SPARSE_AREA.pack(off, n) for off, n in areas)
        full = p.REGION_INFO.size + len(cap)
        flags = rw | p.REGION_FLAG_MMAP | p.REGION_FLAG_CAPS
        if argsz < full:
            # "Message sizes": argsz says how much the full reply needs, and the client asks
            # again. No capability, so no CAPS flag (QEMU's client refuses CAPS with a zero
            # cap_offset, hw/vfio-user/device.c), and no fd yet.
            return p.REGION_INFO.pack(full, flags & ~p.REGION_FLAG_CAPS, index, 0, f.size, 0), []
        fd = dev.export(index, areas)
        log.info("BAR%d: %d sparse mmap area(s) exported to the client", index, len(areas))
        info = p.REGION_INFO.pack(full, flags, index, p.REGION_INFO.size, f.size, 0)
        return info + cap, [fd]

    def irq_info(self, msg: Message) -> Reply:
        self._no_fds(msg)
        argsz, _, index, _ = self._fixed(msg, p.IRQ_INFO)
        if argsz < p.IRQ_INFO.size:
            raise einval(f"DEVICE_GET_IRQ_INFO: argsz {argsz} is smaller than the info")
        if index >= p.NUM_PCI_IRQS:
            raise einval(f"DEVICE_GET_IRQ_INFO: no IRQ index {index}")
        info = self.device.source.irqs().get(index)
        count, flags = (info.count, info.flags) if info else (0, 0)
        return p.IRQ_INFO.pack(p.IRQ_INFO.size, flags, index, count), []

    def set_irqs(self, msg: Message) -> Reply:
        argsz, flags, index, start, count = self._fixed(msg, p.IRQ_SET)
        data = msg.body[p.IRQ_SET.size :]
        dtype, action = flags & p.IRQ_SET_DATA_MASK, flags & p.IRQ_SET_ACTION_MASK_ALL
        if flags & ~(p.IRQ_SET_DATA_MASK | p.IRQ_SET_ACTION_MASK_ALL):
            raise einval(f"SET_IRQS: unknown flags {flags:#x}")
        if dtype.bit_count() != 1 or action.bit_count() != 1:
            raise einval(f"SET_IRQS: flags {flags:#x} need one data type and one action")
        if argsz < p.IRQ_SET.size:
            raise einval(f"SET_IRQS: argsz {argsz} is smaller than the header")
        if index >= p.NUM_PCI_IRQS:
            raise einval(f"SET_IRQS: no IRQ index {index}")
        info = self.device.source.irqs().get(index)
        total = info.count if info else 0
        if dtype == p.IRQ_SET_DATA_NONE and count == 0 and start == 0:
            if data or msg.fds:
                raise einval("SET_IRQS: disabling all interrupts carries no data")
            self._set_fds(index, 0, [-1] * len(self.irq_fds.get(index, [])))
            return b"", []
        if count == 0 or start >= total or count > total - start:
            raise einval(f"SET_IRQS: sub-indices {start}+{count} are outside the {total} of "
                         f"IRQ index {index}")  # fmt: skip
        if dtype == p.IRQ_SET_DATA_EVENTFD:
            if data:
                raise einval("SET_IRQS: eventfds travel as SCM_RIGHTS, not in the payload")
            if action != p.IRQ_SET_ACTION_TRIGGER:
                raise einval("SET_IRQS: only TRIGGER eventfds are supported")
            if msg.fds and len(msg.fds) != count:
                raise einval(f"SET_IRQS: {len(msg.fds)} fds for {count} sub-indices")
            bad = [fd for fd in msg.fds if not _is_eventfd(fd)]
            if bad:
                raise einval(f"SET_IRQS: {len(bad)} of the fds are not eventfds")
            fds = list(msg.fds) or [-1] * count
            msg.fds.clear()  # ours now
            self._set_fds(index, start, fds)
            return b"", []
        self._no_fds(msg)
        if dtype == p.IRQ_SET_DATA_BOOL:
            if len(data) != count:
                raise einval(f"SET_IRQS: {len(data)} bools for {count} sub-indices")
            which = [start + i for i, b in enumerate(data) if b]
        else:
            if data:
                raise einval("SET_IRQS: DATA_NONE carries no data")
            which = list(range(start, start + count))
        for sub in which:
            # the device decides what a mask, unmask or trigger does (VFIO_DEVICE_SET_IRQS
            # for a real one: an INTx line is unmasked this way after each interrupt)
            try:
                self.device.source.irq_action(index, sub, action)
            except Exception as e:
                raise ProtocolError(errno.EIO, f"SET_IRQS: the device refused: {e}") from None
        return b"", []

    def _set_fds(self, index: int, start: int, fds: list[int]) -> None:
        slots = self.irq_fds.setdefault(index, [])
        while len(slots) < start + len(fds):
            slots.append(-1)
        try:
            self.device.source.set_irqs(index, start, fds)
        except Exception:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
            raise
        for i, fd in enumerate(fds):
            old = slots[start + i]
            if old >= 0:
                os.close(old)
            slots[start + i] = fd

    def _region(self, msg: Message) -> tuple[int, int, int, bytes]:
        offset, region, count = self._fixed(msg, p.REGION_RW)
        data = msg.body[p.REGION_RW.size :]
        name = p.command_name(msg.header.command)
        if count == 0 or count > p.MAX_DATA_XFER:
            raise einval(f"{name}: count {count} is not in 1..{p.MAX_DATA_XFER}")
        dev = self.device
        if region == p.CONFIG_REGION:
            size = dev.source.config.size
        elif region in dev.filters:
            size = dev.filters[region].size
        else:
            raise einval(f"{name}: region {region} has no accessible space")
        if offset >= size or count > size - offset:
            raise einval(f"{name}: {count} byte(s) at {offset:#x} pass the end of region "
                         f"{region} ({size:#x} bytes)")  # fmt: skip
        return offset, region, count, data

    def region_read(self, msg: Message) -> Reply:
        self._no_fds(msg)
        offset, region, count, data = self._region(msg)
        if data:
            raise einval(f"REGION_READ: {len(data)} bytes of data in a read")
        if region == p.CONFIG_REGION:
            out = self.device.source.config.read_bytes(offset, count)
        else:
            out = self._bar_access(region, offset, count, None).to_bytes(count, "little")
        return p.REGION_RW.pack(offset, region, count) + out, []

    def region_write(self, msg: Message) -> Reply:
        self._no_fds(msg)
        offset, region, count, data = self._region(msg)
        if len(data) != count:
            raise einval(f"REGION_WRITE: count {count} but {len(data)} bytes of data")
        if region == p.CONFIG_REGION:
            self.device.source.config.write_bytes(offset, data)
        else:
            self._bar_access(region, offset, count, int.from_bytes(data, "little"))
        return p.REGION_RW.pack(offset, region, count), []

    def _bar_access(self, region: int, offset: int, count: int, value: int | None) -> int:
        """One guest access of exactly `count` bytes through the BAR's filter."""
        if count not in (1, 2, 4, 8):
            raise einval(f"region {region}: a {count}-byte access is not one MMIO access "
                         "(1, 2, 4 or 8 bytes)")  # fmt: skip
        f = self.device.filters[region]
        try:
            if value is None:
                return f.read(offset, count)
            outcome = f.write(offset, count, value)
        except AccessError as e:
            raise einval(str(e)) from None
        except BackendError as e:
            log.error("%s", e)
            raise ProtocolError(errno.EIO, str(e)) from None
        if outcome is not Outcome.PASS:
            log.debug("BAR%d write %#x+%d: %s", region, offset, count, outcome.value)
        return 0

    def dma_map(self, msg: Message) -> Reply:
        argsz, flags, offset, address, size = self._fixed(msg, p.DMA_MAP_BODY, exact=True)
        if argsz != p.DMA_MAP_BODY.size:
            raise einval(f"DMA_MAP: argsz {argsz}, the structure is {p.DMA_MAP_BODY.size}")
        if len(msg.fds) > 1:
            raise einval(f"DMA_MAP: {len(msg.fds)} fds, at most one belongs")
        self.dma.check(flags, offset, address, size)
        fd = msg.fds.pop() if msg.fds else None
        w = self.dma.add(flags, offset, address, size, fd)
        if w.map is not None:
            vaddr = int(ffi.cast("uintptr_t", ffi.from_buffer(w.map)))
            try:
                self.device.source.dma_map(address, size, vaddr, flags)
            except Exception as e:
                self.dma.remove(address, size)
                raise ProtocolError(errno.EIO, f"DMA_MAP: the device refused: {e}") from None
        log.info("DMA window %#x+%#x mapped (%s)", address, size, "fd" if fd is not None else
                 "no fd")  # fmt: skip
        return b"", []

    def dma_unmap(self, msg: Message) -> Reply:
        self._no_fds(msg)
        _, flags, address, size = self._fixed(msg, p.DMA_UNMAP_BODY, exact=True)
        if flags:
            raise einval(f"DMA_UNMAP: flags {flags:#x} (none defined)")
        w = self.dma.windows.get(address)
        if w is None or w.size != size:
            raise einval(f"DMA_UNMAP: {address:#x}+{size:#x} is not a mapped window")
        if w.map is not None:
            self.device.source.dma_unmap(address, size)
        self.dma.remove(address, size)
        # "The server responds with the original DMA entry in the request."
        return msg.body, []

    def reset(self, msg: Message) -> Reply:
        self._no_fds(msg)
        if msg.body:
            raise einval(f"DEVICE_RESET: {len(msg.body)} bytes of payload, none belong")
        self.device.source.reset()
        log.info("device reset by the client")
        return b"", []

    # ---- end ----------------------------------------------------------------------------

    def close(self) -> None:
        """The client is gone: "all client memory regions are unmapped", "all IRQ file
        descriptors passed from the old client are closed" (Client Disconnection)."""
        for addr, w in list(self.dma.windows.items()):
            if w.map is not None:
                try:
                    self.device.source.dma_unmap(addr, w.size)
                except Exception as e:  # the device's own error: logged, cleanup goes on
                    log.error("DMA window %#x: unmap failed: %s", addr, e)
        self.dma.clear()
        for index, fds in self.irq_fds.items():
            try:
                self.device.source.set_irqs(index, 0, [-1] * len(fds))
            except Exception as e:
                log.error("IRQ index %d: cannot disable: %s", index, e)
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
        self.irq_fds.clear()
