"""A vfio-user client for the tests, written from QEMU's docs/interop/vfio-user.rst (the
sections named in each method), independently of the server's own protocol module: the
structures are spelled out here again so a shared mistake cannot hide."""

from __future__ import annotations

import array
import json
import os
import socket
import struct
import time
from dataclasses import dataclass, field

HDR = struct.Struct("<HHIII")  # "Header"
REPLY, NO_REPLY, ERROR = 0x1, 0x10, 0x20
CMD = {
    "VERSION": 1,
    "DMA_MAP": 2,
    "DMA_UNMAP": 3,
    "DEVICE_GET_INFO": 4,
    "DEVICE_GET_REGION_INFO": 5,
    "DEVICE_GET_REGION_IO_FDS": 6,
    "DEVICE_GET_IRQ_INFO": 7,
    "DEVICE_SET_IRQS": 8,
    "REGION_READ": 9,
    "REGION_WRITE": 10,
    "DEVICE_RESET": 13,
    "REGION_WRITE_MULTI": 15,
}
CONFIG_REGION = 7


@dataclass
class Reply:
    msg_id: int
    command: int
    flags: int
    error: int
    body: bytes
    fds: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.flags & 0xF == REPLY and not self.flags & ERROR

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


@dataclass
class Sparse:
    flags: int
    size: int
    offset: int
    areas: list[tuple[int, int]]


class Client:
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.next_id = 1

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- raw ----------------------------------------------------------------------------

    def send_raw(self, data: bytes, fds: list[int] | None = None) -> None:
        anc = []
        if fds:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        self.sock.sendmsg([data], anc)

    def send(self, command: str | int, body: bytes = b"", fds: list[int] | None = None,
             flags: int = 0, size: int | None = None) -> int:  # fmt: skip
        cmd = CMD[command] if isinstance(command, str) else command
        msg_id = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFF
        total = HDR.size + len(body) if size is None else size
        self.send_raw(HDR.pack(msg_id, cmd, total, flags, 0) + body, fds)
        return msg_id

    def _recv(self, n: int, fds: list[int]) -> bytes:
        buf = b""
        while len(buf) < n:
            data, anc, _, _ = self.sock.recvmsg(n - len(buf), socket.CMSG_SPACE(64))
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(raw[: len(raw) - len(raw) % a.itemsize])
                    fds.extend(a)
            if not data:
                raise ConnectionError("server closed the connection")
            buf += data
        return buf

    def recv(self) -> Reply:
        fds: list[int] = []
        msg_id, cmd, size, flags, err = HDR.unpack(self._recv(HDR.size, fds))
        body = self._recv(size - HDR.size, fds) if size > HDR.size else b""
        return Reply(msg_id, cmd, flags, err, body, fds)

    def call(self, command: str | int, body: bytes = b"", fds: list[int] | None = None,
             flags: int = 0) -> Reply:  # fmt: skip
        msg_id = self.send(command, body, fds, flags)
        r = self.recv()
        assert r.msg_id == msg_id, (r.msg_id, msg_id)
        return r

    # ---- commands -------------------------------------------------------------------------

    def version(self, caps: dict[str, object] | None = None) -> dict[str, object]:
        """ "VFIO_USER_VERSION": major 0, minor 0, JSON with its NUL."""
        text = json.dumps({"capabilities": caps or {"max_msg_fds": 8}}).encode() + b"\0"
        r = self.call("VERSION", struct.pack("<HH", 0, 0) + text)
        assert r.ok, r
        major, minor = struct.unpack_from("<HH", r.body)
        assert (major, minor) == (0, 0)
        assert r.body.endswith(b"\0")
        got: dict[str, object] = json.loads(r.body[4:-1])
        return got

    def device_info(self) -> tuple[int, int, int]:
        """ "VFIO_USER_DEVICE_GET_INFO": flags, num_regions, num_irqs."""
        r = self.call("DEVICE_GET_INFO", struct.pack("<IIII", 16, 0, 0, 0))
        assert r.ok, r
        argsz, flags, regions, irqs = struct.unpack("<IIII", r.body)
        assert argsz == 16
        return flags, regions, irqs

    def region_info(self, index: int, argsz: int = 4096) -> tuple[Sparse, list[int]]:
        """ "VFIO_USER_DEVICE_GET_REGION_INFO" and its "VFIO region info cap sparse mmap"."""
        r = self.call("DEVICE_GET_REGION_INFO", struct.pack("<IIIIQQ", argsz, 0, index, 0, 0, 0))
        assert r.ok, r
        _full, flags, idx, cap_off, size, offset = struct.unpack_from("<IIIIQQ", r.body)
        assert idx == index
        areas: list[tuple[int, int]] = []
        at = cap_off
        while at:
            cid, ver, nxt = struct.unpack_from("<HHI", r.body, at)
            if cid == 1:  # VFIO_REGION_INFO_CAP_SPARSE_MMAP
                assert ver == 1
                n, _ = struct.unpack_from("<II", r.body, at + 8)
                areas = [struct.unpack_from("<QQ", r.body, at + 16 + 16 * i) for i in range(n)]
            at = nxt
        return Sparse(flags, size, offset, areas), r.fds

    def irq_info(self, index: int) -> tuple[int, int]:
        r = self.call("DEVICE_GET_IRQ_INFO", struct.pack("<IIII", 16, 0, index, 0))
        assert r.ok, r
        _, flags, idx, count = struct.unpack("<IIII", r.body)
        assert idx == index
        return flags, count

    def set_irqs(self, flags: int, index: int, start: int, count: int, data: bytes = b"",
                 fds: list[int] | None = None) -> Reply:  # fmt: skip
        body = struct.pack("<IIIII", 20 + len(data), flags, index, start, count) + data
        return self.call("DEVICE_SET_IRQS", body, fds)

    def read(self, region: int, offset: int, count: int) -> bytes:
        """ "VFIO_USER_REGION_READ"."""
        r = self.call("REGION_READ", struct.pack("<QII", offset, region, count))
        assert r.ok, (r, region, hex(offset), count)
        off, reg, n = struct.unpack_from("<QII", r.body)
        assert (off, reg, n) == (offset, region, count)
        return r.body[16:]

    def write(self, region: int, offset: int, data: bytes) -> Reply:
        """ "VFIO_USER_REGION_WRITE"."""
        return self.call("REGION_WRITE", struct.pack("<QII", offset, region, len(data)) + data)

    def read32(self, offset: int, region: int = 0) -> int:
        return int.from_bytes(self.read(region, offset, 4), "little")

    def write32(self, offset: int, value: int, region: int = 0) -> None:
        r = self.write(region, offset, value.to_bytes(4, "little"))
        assert r.ok, r

    def dma_map(self, flags: int, offset: int, address: int, size: int,
                fds: list[int] | None = None) -> Reply:  # fmt: skip
        return self.call("DMA_MAP", struct.pack("<IIQQQ", 32, flags, offset, address, size), fds)

    def dma_unmap(self, address: int, size: int) -> Reply:
        return self.call("DMA_UNMAP", struct.pack("<IIQQ", 24, 0, address, size))
