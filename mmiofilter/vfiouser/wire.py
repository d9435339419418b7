"""Messages over the UNIX socket, with file descriptors as SCM_RIGHTS ancillary data
(vfio-user.rst, "Socket": AF_UNIX; fds travel with DMA_MAP, SET_IRQS and region info)."""

from __future__ import annotations

import array
import errno
import os
import socket
from dataclasses import dataclass, field

from .protocol import HEADER, MAX_MESSAGE, MAX_MSG_FDS, Header, ProtocolError

_FD_SPACE = socket.CMSG_SPACE(MAX_MSG_FDS * array.array("i").itemsize)


class Disconnected(Exception):
    """The client closed the socket (possibly in the middle of a message)."""


class FramingError(Exception):
    """The byte stream cannot be trusted any more (a size past the limit, fds overflowing the
    ancillary buffer): the server answers once, if it can, and closes the connection."""

    def __init__(self, header: Header | None, code: int, message: str) -> None:
        super().__init__(message)
        self.header = header
        self.errno = code


@dataclass
class Message:
    header: Header
    body: bytes
    fds: list[int] = field(default_factory=list)

    def close_fds(self) -> None:
        """Close every fd still owned by the message (the handler takes the ones it keeps)."""
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()


def _take_fds(ancdata: list[tuple[int, int, bytes]], flags: int, into: list[int]) -> bool:
    """Append the fds of SCM_RIGHTS items to `into`; False if the kernel truncated them."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            into.extend(fds)
    return not flags & socket.MSG_CTRUNC


def _recv_exact(sock: socket.socket, n: int, fds: list[int], *, started: bool) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            data, anc, flags, _ = sock.recvmsg(n - len(buf), _FD_SPACE)
        except InterruptedError:
            continue
        except ConnectionResetError:
            data, anc, flags = b"", [], 0
        ok = _take_fds(anc, flags, fds)
        if not data:
            raise Disconnected(
                "client closed the connection" + (" mid-message" if started or buf else "")
            )
        if not ok:
            raise FramingError(None, errno.EINVAL, "more fds than one message may carry")
        buf += data
    return bytes(buf)


def receive(sock: socket.socket) -> Message:
    """One message. The caller owns the returned fds (Message.close_fds)."""
    fds: list[int] = []
    try:
        raw = _recv_exact(sock, HEADER.size, fds, started=False)
        header = Header.unpack(raw)
        if header.size < HEADER.size:
            raise FramingError(
                header, errno.EINVAL, f"message size {header.size} is smaller than the header"
            )
        if header.size > MAX_MESSAGE:
            raise FramingError(
                header, errno.E2BIG, f"message size {header.size} is past the limit {MAX_MESSAGE}"
            )
        body = _recv_exact(sock, header.size - HEADER.size, fds, started=True)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    if len(fds) > MAX_MSG_FDS:
        msg = Message(header, body, fds)
        msg.close_fds()
        raise FramingError(header, errno.EINVAL, f"{len(fds)} fds in one message")
    return Message(header, body, fds)


def send(sock: socket.socket, data: bytes, fds: list[int] | None = None) -> None:
    """One message; `fds` ride with its first byte."""
    anc = []
    if fds:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    sent = sock.sendmsg([data], anc)
    if sent < len(data):
        sock.sendall(data[sent:])


__all__ = ["Disconnected", "FramingError", "Message", "ProtocolError", "receive", "send"]
