"""A hypothesis fuzzer of the vfio-user message stream: whatever a client sends (valid,
truncated, oversized, with fds anywhere), the server replies with well-formed messages, keeps
the device's protected registers, leaks no fd, and serves the next client."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.vfiouser_client import CMD, HDR, Client
from tests.vfiouser_fixtures import Served, serve

COMMANDS = [*CMD.values(), 0, 11, 12, 14, 16, 17, 18, 0xFFFF]
FD_KINDS = ("eventfd", "memfd", "pipe")


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    yield from serve()


def _structured(command: int, draw: st.DrawFn) -> bytes:
    u32 = st.integers(0, 2**32 - 1)
    small = st.integers(0, 16)
    if command == CMD["VERSION"]:
        text = draw(st.sampled_from([b'{"capabilities":{}}\0', b"\0", b"{", b"[]\0", b""]))
        return struct.pack("<HH", draw(st.integers(0, 2)), draw(small)) + text
    if command in (CMD["REGION_READ"], CMD["REGION_WRITE"]):
        offset = draw(st.one_of(st.integers(0, 2**24 + 8), st.integers(0, 2**64 - 1)))
        region = draw(st.one_of(st.sampled_from([0, 7]), small))
        count = draw(st.one_of(st.sampled_from([1, 2, 4, 8]), st.integers(0, 8192), u32))
        data = draw(st.binary(max_size=16)) if command == CMD["REGION_WRITE"] else b""
        return struct.pack("<QII", offset, region, count) + data
    if command == CMD["DEVICE_SET_IRQS"]:
        return struct.pack("<IIIII", draw(st.sampled_from([20, 0, 24, 2**32 - 1])),
                           draw(st.integers(0, 0x7F)), draw(small), draw(small),
                           draw(small)) + draw(st.binary(max_size=8))  # fmt: skip
    if command == CMD["DMA_MAP"]:
        page = st.integers(0, 64).map(lambda n: n * 4096)
        return struct.pack("<IIQQQ", draw(st.sampled_from([32, 0, 31])), draw(st.integers(0, 7)),
                           draw(page), draw(st.one_of(page, st.integers(0, 2**64 - 1))),
                           draw(st.one_of(page, st.integers(0, 2**64 - 1))))  # fmt: skip
    if command == CMD["DMA_UNMAP"]:
        return struct.pack("<IIQQ", 24, draw(st.integers(0, 1)), draw(small) * 4096,
                           draw(small) * 4096)  # fmt: skip
    return struct.pack("<IIII", draw(u32), draw(st.integers(0, 3)), draw(small), draw(small))


@st.composite
def message(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    command = draw(st.sampled_from(COMMANDS))
    if draw(st.booleans()):
        body = _structured(command, draw)
    else:
        body = draw(st.binary(max_size=48))
    if draw(st.integers(0, 9)) == 0:  # truncate or pad the body
        body = body[: draw(st.integers(0, len(body)))]
    size = HDR.size + len(body)
    if draw(st.integers(0, 15)) == 0:
        size = draw(st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)))
    flags = draw(st.sampled_from([0, 0, 0, 0x10, 0x1, 0x20, 0x40]))
    fds = draw(st.lists(st.sampled_from(FD_KINDS), max_size=3)) if draw(
        st.integers(0, 4)) == 0 else []  # fmt: skip
    msg_id = draw(st.integers(0, 0xFFFF))
    return HDR.pack(msg_id, command, size, flags, 0) + body, fds


def _make_fd(kind: str) -> int:
    if kind == "eventfd":
        return os.eventfd(0)
    if kind == "memfd":
        fd = os.memfd_create("fuzz")
        os.ftruncate(fd, 65536)
        return fd
    r, w = os.pipe()
    os.close(w)
    return r


def _client_kinds_open(served: Served) -> int:
    """Open fds of the kinds this test sends (eventfds, its memfds, pipes), once the server has
    let go of the last client: what a leak of the client's fds would show up as."""
    for _ in range(400):
        if served.server.client is None:
            break
        time.sleep(0.005)
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target in ("anon_inode:[eventfd]",) or target.startswith(("/memfd:fuzz", "pipe:")):
            n += 1
    return n


@settings(
    max_examples=int(os.environ.get("VFIOUSER_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(negotiate=st.booleans(), stream=st.lists(message(), max_size=12))
def test_message_stream(
    served: Served, negotiate: bool, stream: list[tuple[bytes, list[str]]]
) -> None:
    before = _client_kinds_open(served)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(served.path)
    mine: list[int] = []
    try:
        if negotiate:
            body = struct.pack("<HH", 0, 0) + b'{"capabilities":{"max_msg_fds":8}}\0'
            sock.sendall(HDR.pack(0, 1, HDR.size + len(body), 0, 0) + body)
        for data, kinds in stream:
            fds = [_make_fd(k) for k in kinds]
            mine += fds
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
            try:
                sock.sendmsg([data], anc if fds else [])
            except (BrokenPipeError, ConnectionResetError):
                break  # the server closed a connection whose framing broke
        sock.shutdown(socket.SHUT_WR)
        received = b""
        got_fds: list[int] = []
        while True:
            try:
                chunk, anc, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(64))
            except ConnectionResetError:
                break
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got_fds += struct.unpack(f"{len(raw) // 4}i", raw[: len(raw) // 4 * 4])
            if not chunk:
                break
            received += chunk
        mine += got_fds
    finally:
        sock.close()
        for fd in mine:
            os.close(fd)
    # every reply is a well-formed reply message; an error reply is the header alone
    at = 0
    while at < len(received):
        _, _, size, flags, _ = HDR.unpack_from(received, at)
        assert flags & 0xF == 1, flags
        assert size >= HDR.size and at + size <= len(received)
        if flags & 0x20:
            assert size == HDR.size
        at += size
    assert served.thread.is_alive()
    assert served.isolation_holds()
    for offset, width, _, _ in served.source.log:
        assert width in (1, 2, 4, 8) and 0 <= offset and offset + width <= served.source.bar.size
    served.source.log.clear()
    assert _client_kinds_open(served) == before  # the server kept no fd of this client
    with Client(served.path) as c:  # and serves the next one
        c.version()
        assert c.read32(0) in (0x140000A1,)
