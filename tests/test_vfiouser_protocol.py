"""The vfio-user server against a client written from QEMU's docs/interop/vfio-user.rst:
every command the server handles, and the malformed and hostile ones it must refuse without
reaching the device."""

from __future__ import annotations

import errno
import logging
import mmap
import os
import socket
import struct
from collections.abc import Iterator

import pytest

from tests.vfiouser_client import CONFIG_REGION, HDR, NO_REPLY, Client
from tests.vfiouser_fixtures import (
    NV_PMC_ENABLE,
    NVLINK_BIT,
    Served,
    profile_policy,
    serve,
)

PAGE = mmap.PAGESIZE


@pytest.fixture
def served() -> Iterator[Served]:
    yield from serve()


@pytest.fixture
def client(served: Served) -> Iterator[Client]:
    with Client(served.path) as c:
        c.version()
        yield c


def err(r: object) -> int:
    assert not r.ok, r  # type: ignore[attr-defined]
    assert r.body == b""  # "the reply message must only include the reply header"  # type: ignore[attr-defined]
    return r.error  # type: ignore[attr-defined,no-any-return]


# ---- negotiation and info -------------------------------------------------------------------


def test_version_negotiates_capabilities(served: Served) -> None:
    with Client(served.path) as c:
        caps = c.version({"max_msg_fds": 8, "max_data_xfer_size": 1 << 20})["capabilities"]
        assert isinstance(caps, dict)
        assert caps["max_data_xfer_size"] == 1 << 20 and caps["pgsizes"] == 4096
        assert caps["max_msg_fds"] >= 1
        assert err(c.call("VERSION", struct.pack("<HH", 0, 0))) == errno.EINVAL  # only once


@pytest.mark.parametrize(
    "body, code",
    [
        (struct.pack("<HH", 1, 0), errno.ENOTSUP),  # another major
        (struct.pack("<HH", 0, 0) + b'{"capabilities": {}}', errno.EINVAL),  # no NUL
        (struct.pack("<HH", 0, 0) + b"{not json\0", errno.EINVAL),
        (struct.pack("<HH", 0, 0) + b"[1, 2]\0", errno.EINVAL),  # not an object
        (struct.pack("<HH", 0, 0) + b'{"capabilities": 3}\0', errno.EINVAL),
        (b"\0", errno.EINVAL),  # shorter than major + minor
    ],
)
def test_bad_version_is_refused(served: Served, body: bytes, code: int) -> None:
    with Client(served.path) as c:
        assert err(c.call("VERSION", body)) == code
        c.version()  # the connection is still usable


def test_commands_before_version_are_refused(served: Served) -> None:
    with Client(served.path) as c:
        assert err(c.call("REGION_READ", struct.pack("<QII", 0, 0, 4))) == errno.EINVAL
    assert served.source.log == []


def test_device_info(client: Client) -> None:
    flags, regions, irqs = client.device_info()
    assert flags == 0x3  # VFIO_DEVICE_FLAGS_RESET | VFIO_DEVICE_FLAGS_PCI
    assert (regions, irqs) == (9, 5)  # VFIO_PCI_NUM_REGIONS, VFIO_PCI_NUM_IRQS


def test_bar0_reports_the_layouts_direct_areas_as_sparse_mmap(
    served: Served, client: Client
) -> None:
    info, fds = client.region_info(0)
    try:
        assert info.flags == 0xF  # READ | WRITE | MMAP | CAPS
        assert info.size == served.source.bar.size
        layout = served.device.filters[0].layout
        assert info.areas == [tuple(a) for a in layout.direct] and info.areas
        assert len(fds) == 1
        # the pages with protected registers are not among them
        for reg in (NV_PMC_ENABLE, 0xA00148, 0x88000):
            assert not any(o <= reg < o + n for o, n in info.areas)
        # a direct page is the device's own memory: a store through the map reaches it
        off = info.areas[0][0]
        m = mmap.mmap(fds[0], info.size, offset=info.offset)
        m[off : off + 4] = b"\x78\x56\x34\x12"
        assert served.source.bar.read32(off) == 0x12345678
        assert client.read32(off) == 0x12345678
        m.close()
    finally:
        for fd in fds:
            os.close(fd)


def test_the_exported_fd_does_not_reach_trapped_pages(served: Served, client: Client) -> None:
    """A client mapping the fd outside the sparse areas (QEMU would not; a hostile client may)
    gets memory the device never sees."""
    info, fds = client.region_info(0)
    m = mmap.mmap(fds[0], info.size)
    before = served.source.bar.read32(NV_PMC_ENABLE)
    m[NV_PMC_ENABLE : NV_PMC_ENABLE + 4] = b"\0\0\0\0"
    link = 0xA00148
    m[link : link + 4] = b"\0\0\0\0"
    assert served.source.bar.read32(NV_PMC_ENABLE) == before
    assert served.isolation_holds()
    m.close()
    os.close(fds[0])


def test_region_info_with_a_short_argsz_says_the_size_needed(client: Client) -> None:
    r = client.call("DEVICE_GET_REGION_INFO", struct.pack("<IIIIQQ", 32, 0, 0, 0, 0, 0))
    assert r.ok
    full, _flags, _index, cap_offset, _size, _ = struct.unpack("<IIIIQQ", r.body)
    assert full > 32 and cap_offset == 0 and len(r.body) == 32
    assert not _flags & 0x8 and r.fds == []  # no CAPS without the capability, no fd yet
    for fd in r.fds:
        os.close(fd)


def test_other_regions(client: Client) -> None:
    cfg, fds = client.region_info(CONFIG_REGION)
    assert (cfg.flags, cfg.size, fds) == (0x3, 4096, [])
    for index in (1, 2, 3, 4, 5, 6, 8):  # only BAR0 is simulated
        info, fds = client.region_info(index)
        assert (info.size, info.flags, fds) == (0, 0, [])
    r = client.call("DEVICE_GET_REGION_INFO", struct.pack("<IIIIQQ", 32, 0, 9, 0, 0, 0))
    assert err(r) == errno.EINVAL


# ---- accesses ---------------------------------------------------------------------------------


def test_trapped_accesses_go_through_the_filter(
    served: Served, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mmiofilter")
    assert client.read32(0x0) == 0x140000A1  # NV_PMC_BOOT_0: allowed, on a trapped page
    client.write32(NV_PMC_ENABLE, 0)  # clearing NVLINK is masked
    assert client.read32(NV_PMC_ENABLE) & NVLINK_BIT
    client.write32(0xA00148, 0)  # the link-disable bits hold
    assert served.isolation_holds()
    assert served.device.filters[0].counters()["NV_PMC_ENABLE"] >= 2
    assert any("masked by rule NV_PMC_ENABLE" in r.message for r in caplog.records)
    # exact widths reach the device
    assert client.read(0, 0x2, 2) == served.source.bar.buf[2:4]
    assert all(w in (1, 2, 4, 8) for _, w, _, _ in served.source.log)


def test_config_space(served: Served, client: Client) -> None:
    assert client.read(CONFIG_REGION, 0, 4) == struct.pack("<HH", 0x10DE, 0x1DB1)
    assert client.read(CONFIG_REGION, 0x09, 3) == bytes([0x00, 0x02, 0x03])  # class 0x030200
    whole = client.read(CONFIG_REGION, 0, 4096)  # QEMU reads it whole
    assert len(whole) == 4096
    # BAR0 sizing as a guest does it: 16 MiB, 32-bit memory
    assert client.write(CONFIG_REGION, 0x10, b"\xff" * 4).ok
    assert client.read(CONFIG_REGION, 0x10, 4) == struct.pack("<I", 0xFF000000)
    assert client.read(CONFIG_REGION, 0x14, 4) == bytes(4)  # BAR1 is not simulated
    assert client.write(CONFIG_REGION, 0, b"\x34\x12").ok  # IDs are read-only
    assert client.read(CONFIG_REGION, 0, 2) == b"\xde\x10"
    assert client.write(CONFIG_REGION, 4, b"\x06\x00").ok  # memory + bus master
    assert client.read(CONFIG_REGION, 4, 2) == b"\x06\x00"
    assert served.source.log == []  # config space is not BAR0


def test_the_mirror_is_the_served_config_space(served: Served, client: Client) -> None:
    assert client.read32(0x88000) == 0x1DB110DE
    client.write32(0x88004, 0x6)  # the command register through the mirror
    assert client.read(CONFIG_REGION, 4, 2) == b"\x06\x00"
    assert client.write(CONFIG_REGION, 0x3C, b"\x0b").ok
    assert client.read32(0x8803C) & 0xFF == 0x0B


@pytest.mark.parametrize(
    "body, what",
    [
        (struct.pack("<QII", 0x1000000, 0, 4), "offset past BAR0"),
        (struct.pack("<QII", 0xFFFFFE, 0, 4), "crossing the end of BAR0"),
        (struct.pack("<QII", 2**64 - 4, 0, 8), "offset wrapping"),
        (struct.pack("<QII", 0, 0, 3), "a 3-byte MMIO access"),
        (struct.pack("<QII", 0, 0, 16), "a 16-byte MMIO access"),
        (struct.pack("<QII", 0, 0, 0), "count 0"),
        (struct.pack("<QII", 0, 0, 2**32 - 1), "count past max_data_xfer_size"),
        (struct.pack("<QII", 0, 1, 4), "BAR1 (absent)"),
        (struct.pack("<QII", 0, 9, 4), "region 9"),
        (struct.pack("<QII", 4095, CONFIG_REGION, 2), "past config space"),
        (struct.pack("<QI", 0, 0), "truncated payload"),
        (struct.pack("<QII", 0, 0, 4) + b"xxxx", "data in a read"),
    ],
)
def test_bad_region_reads_are_refused_without_a_device_access(
    served: Served, client: Client, body: bytes, what: str
) -> None:
    assert err(client.call("REGION_READ", body)) == errno.EINVAL, what
    assert served.source.log == [], what
    assert client.read32(0) == 0x140000A1  # still served


@pytest.mark.parametrize(
    "body, what",
    [
        (struct.pack("<QII", 0, 0, 4) + b"\0\0", "less data than count"),
        (struct.pack("<QII", 0, 0, 2) + b"\0\0\0\0", "more data than count"),
        (struct.pack("<QII", 0x1000000, 0, 4) + bytes(4), "past BAR0"),
        (struct.pack("<QII", NV_PMC_ENABLE, 0, 3) + bytes(3), "3 bytes"),
    ],
)
def test_bad_region_writes_are_refused_without_a_device_access(
    served: Served, client: Client, body: bytes, what: str
) -> None:
    assert err(client.call("REGION_WRITE", body)) == errno.EINVAL, what
    assert served.source.log == [], what
    assert served.isolation_holds()


def test_fds_where_none_belong_are_refused_and_closed(served: Served, client: Client) -> None:
    r, w = os.pipe()
    try:
        reply = client.call("REGION_READ", struct.pack("<QII", 0, 0, 4), fds=[r])
        assert err(reply) == errno.EINVAL
        reply = client.call("DEVICE_GET_INFO", struct.pack("<IIII", 16, 0, 0, 0), fds=[r, w])
        assert err(reply) == errno.EINVAL
    finally:
        os.close(r)
        os.close(w)
    assert served.source.log == []
    own = set(os.listdir("/proc/self/fd"))
    assert client.read32(0) == 0x140000A1
    assert set(os.listdir("/proc/self/fd")) <= own  # the server kept none of them


def test_no_reply_commands_are_done_silently(served: Served, client: Client) -> None:
    write = struct.pack("<QII", 0x400010, 0, 4) + b"\x34\x12\0\0"
    client.send("REGION_WRITE", write, flags=NO_REPLY)
    client.send("REGION_READ", struct.pack("<QII", 2**40, 0, 4), flags=NO_REPLY)  # refused, quiet
    assert client.read32(0x400010) == 0x1234  # the next reply is this read's


@pytest.mark.parametrize(
    "command, flags, what",
    [(99, 0, "unknown command"), ("DEVICE_GET_REGION_IO_FDS", 0, "unsupported"),
     ("REGION_WRITE_MULTI", 0, "not negotiated"), ("DEVICE_GET_INFO", 0x1, "a reply"),
     ("DEVICE_GET_INFO", 0x40, "unknown flag")],
)  # fmt: skip
def test_unknown_or_misdirected_messages(
    client: Client, command: str | int, flags: int, what: str
) -> None:
    r = client.call(command, struct.pack("<IIII", 16, 0, 0, 0), flags=flags)
    assert err(r) in (errno.ENOSYS, errno.EINVAL), what
    client.device_info()


# ---- framing --------------------------------------------------------------------------------


def test_a_truncated_header_ends_that_connection_only(served: Served) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(served.path)
    s.sendall(HDR.pack(1, 4, 32, 0, 0)[:10])
    s.close()
    with Client(served.path) as c:
        c.version()
        c.device_info()
    assert served.thread.is_alive()


@pytest.mark.parametrize("size, code", [(8, errno.EINVAL), (2**32 - 1, errno.E2BIG)])
def test_a_size_that_breaks_framing_closes_the_connection(
    served: Served, size: int, code: int
) -> None:
    with Client(served.path) as c:
        c.version()
        c.send("DEVICE_GET_INFO", struct.pack("<IIII", 16, 0, 0, 0), size=size)
        assert err(c.recv()) == code
        with pytest.raises((ConnectionError, OSError)):
            c.recv()
    with Client(served.path) as c:
        c.version()
    assert served.source.log == []


def test_one_client_at_a_time(served: Served, client: Client) -> None:
    second = Client(served.path, timeout=0.5)
    try:
        second.send("VERSION", struct.pack("<HH", 0, 0))
        with pytest.raises(TimeoutError):
            second.recv()  # not served while the first client is
        client.device_info()
        client.close()
        second.sock.settimeout(10)
        r = second.recv()  # the first is gone: the second is served
        assert r.ok and r.command == 1
    finally:
        second.close()


# ---- interrupts ---------------------------------------------------------------------------------


def test_irq_info(client: Client) -> None:
    assert client.irq_info(1) == (0x9, 1)  # MSI: EVENTFD | NORESIZE, one vector
    assert client.irq_info(0)[1] == 0  # no INTx pin
    assert client.irq_info(2)[1] == 0  # no MSI-X
    r = client.call("DEVICE_GET_IRQ_INFO", struct.pack("<IIII", 16, 0, 5, 0))
    assert err(r) == errno.EINVAL


EVENTFD_TRIGGER, NONE_TRIGGER, BOOL_TRIGGER = 0x4 | 0x20, 0x1 | 0x20, 0x2 | 0x20


def test_set_irqs_eventfd_and_trigger(client: Client) -> None:
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        assert client.set_irqs(EVENTFD_TRIGGER, 1, 0, 1, fds=[efd]).ok
        assert client.set_irqs(NONE_TRIGGER, 1, 0, 1).ok  # the client triggers it
        assert os.eventfd_read(efd) == 1
        assert client.set_irqs(BOOL_TRIGGER, 1, 0, 1, data=b"\x01").ok
        assert os.eventfd_read(efd) == 1
        assert client.set_irqs(0x1 | 0x8, 1, 0, 1).ok  # mask: a trigger does nothing
        assert client.set_irqs(NONE_TRIGGER, 1, 0, 1).ok
        with pytest.raises(BlockingIOError):
            os.eventfd_read(efd)
        assert client.set_irqs(0x1 | 0x10, 1, 0, 1).ok  # unmask
        assert client.set_irqs(NONE_TRIGGER, 1, 0, 1).ok
        assert os.eventfd_read(efd) == 1
        assert client.set_irqs(0x1 | 0x20, 1, 0, 0).ok  # count 0, start 0: disable all
        assert client.set_irqs(NONE_TRIGGER, 1, 0, 1).ok
        with pytest.raises(BlockingIOError):
            os.eventfd_read(efd)
    finally:
        os.close(efd)


@pytest.mark.parametrize(
    "flags, index, start, count, data, nfds, what",
    [
        (EVENTFD_TRIGGER, 1, 0, 2, b"", 2, "more sub-indices than MSI has"),
        (EVENTFD_TRIGGER, 1, 1, 1, b"", 1, "start past the vectors"),
        (EVENTFD_TRIGGER, 2, 0, 1, b"", 1, "MSI-X (none)"),
        (EVENTFD_TRIGGER, 7, 0, 1, b"", 1, "index past the IRQ types"),
        (0x4 | 0x2 | 0x20, 1, 0, 1, b"", 1, "two data types"),
        (0x4 | 0x8 | 0x20, 1, 0, 1, b"", 1, "two actions"),
        (0x4 | 0x8, 1, 0, 1, b"", 1, "a mask eventfd (unsupported)"),
        (0x100 | 0x1 | 0x20, 1, 0, 1, b"", 0, "unknown flag"),
        (BOOL_TRIGGER, 1, 0, 1, b"", 0, "bools missing"),
        (NONE_TRIGGER, 1, 0, 1, b"\x01", 0, "data with DATA_NONE"),
        (NONE_TRIGGER, 1, 0, 1, b"", 1, "an fd with DATA_NONE"),
        (EVENTFD_TRIGGER, 1, 0, 1, b"\0\0\0\0", 1, "fds in the payload"),
    ],
)
def test_bad_set_irqs(
    client: Client,
    flags: int,
    index: int,
    start: int,
    count: int,
    data: bytes,
    nfds: int,
    what: str,
) -> None:
    fds = [os.eventfd(0) for _ in range(nfds)]
    try:
        assert err(client.set_irqs(flags, index, start, count, data, fds)) == errno.EINVAL, what
    finally:
        for fd in fds:
            os.close(fd)


def test_set_irqs_refuses_fds_that_are_not_eventfds(client: Client) -> None:
    r, w = os.pipe()
    try:
        assert err(client.set_irqs(EVENTFD_TRIGGER, 1, 0, 1, fds=[r])) == errno.EINVAL
    finally:
        os.close(r)
        os.close(w)


# ---- DMA and reset -------------------------------------------------------------------------


def test_dma_map_and_unmap(served: Served, client: Client) -> None:
    mem = os.memfd_create("guest-ram")
    os.ftruncate(mem, 16 * PAGE)
    try:
        assert client.dma_map(0x3, 0, 0x100000, 16 * PAGE, fds=[mem]).ok
        assert served.source.dma[0][:2] == (0x100000, 16 * PAGE)
        assert err(client.dma_map(0x3, 0, 0x100000 + PAGE, PAGE, fds=[mem])) == errno.EEXIST
        assert client.dma_map(0x1, 0, 0x800000, PAGE).ok  # no fd: recorded only
        assert err(client.dma_unmap(0x100000, PAGE)) == errno.EINVAL  # not the exact window
        r = client.dma_unmap(0x100000, 16 * PAGE)
        assert r.ok and r.body == struct.pack("<IIQQ", 24, 0, 0x100000, 16 * PAGE)
        assert served.source.dma == []
    finally:
        os.close(mem)


@pytest.mark.parametrize(
    "flags, offset, address, size, nfds, what",
    [
        (0x3, 0, 0x1000, 0, 1, "size 0"),
        (0x3, 0, 0x1001, PAGE, 1, "unaligned address"),
        (0x3, 0, 0x1000, 100, 1, "partial page"),
        (0x4, 0, 0x1000, PAGE, 1, "unknown flag"),
        (0x3, 0, 0x1000, PAGE, 2, "two fds"),
        (0x3, 64 * PAGE, 0x1000, PAGE, 1, "offset past the fd"),
        (0x3, 0, 2**64 - PAGE, 2 * PAGE, 1, "address wrapping"),
    ],
)
def test_bad_dma_map(
    client: Client, flags: int, offset: int, address: int, size: int, nfds: int, what: str
) -> None:
    fds = []
    for _ in range(nfds):
        fd = os.memfd_create("m")
        os.ftruncate(fd, 4 * PAGE)
        fds.append(fd)
    try:
        assert err(client.dma_map(flags, offset, address, size, fds)) in (errno.EINVAL,), what
    finally:
        for fd in fds:
            os.close(fd)
    client.device_info()


def test_a_dma_map_fd_that_cannot_be_mapped(client: Client) -> None:
    s1, s2 = socket.socketpair()
    try:
        assert err(client.dma_map(0x3, 0, 0x1000, PAGE, fds=[s1.fileno()])) == errno.EINVAL
    finally:
        s1.close()
        s2.close()


def test_reset(served: Served, client: Client) -> None:
    assert client.call("DEVICE_RESET").ok
    assert served.source.resets == 1
    assert err(client.call("DEVICE_RESET", b"junk")) == errno.EINVAL


def test_a_disconnect_releases_dma_and_irq_fds(served: Served) -> None:
    mem = os.memfd_create("guest-ram")
    os.ftruncate(mem, PAGE)
    efd = os.eventfd(0)
    with Client(served.path) as c:
        c.version()
        assert c.dma_map(0x3, 0, 0, PAGE, fds=[mem]).ok
        assert c.set_irqs(EVENTFD_TRIGGER, 1, 0, 1, fds=[efd]).ok
    os.close(mem)
    os.close(efd)
    with Client(served.path) as c:  # the next client is served once the first is gone
        c.version()
    assert served.source.dma == []
    assert served.source.irq_fds.get(1) == [-1]


# ---- reload -----------------------------------------------------------------------------------


def _reload(served: Served, text: str) -> None:
    served.policy[0] = text
    served.device.reload()


def test_reload_applies_a_policy_that_keeps_the_mapped_pages(
    served: Served, client: Client
) -> None:
    _info, fds = client.region_info(0)
    for fd in fds:
        os.close(fd)
    # a register on an already trapped page (NV_PMC_BOOT_0's) becomes denied
    extra = '[[rule]]\nname = "no-boot"\nstart = 0\nsize = 4\naction = "deny"\n'
    _reload(served, profile_policy(extra))
    assert client.read32(0) == 0xFFFFFFFF  # the policy's fill
    assert client.read32(NV_PMC_ENABLE) & NVLINK_BIT


def test_reload_that_would_trap_a_mapped_page_is_refused(served: Served, client: Client) -> None:
    from mmiofilter.vfiouser import ReloadRefused

    info, fds = client.region_info(0)
    for fd in fds:
        os.close(fd)
    mapped = info.areas[0][0]
    extra = f'[[rule]]\nname = "late"\nstart = {mapped}\nsize = 4\naction = "deny"\n'
    with pytest.raises(ReloadRefused, match=r"would trap 1 page\(s\) of BAR0.*late"):
        _reload(served, profile_policy(extra))
    # nothing changed: the old policy decides
    client.write32(mapped, 0x5A5A5A5A)
    assert client.read32(mapped) == 0x5A5A5A5A
    assert "late" not in served.device.filters[0].counters()


def test_reload_with_a_broken_policy_keeps_the_old_one(served: Served, client: Client) -> None:
    from mmiofilter.errors import PolicyError

    with pytest.raises(PolicyError):
        _reload(served, 'profile = "nvidia-gv100"\n[options]\nnvlink = "maybe"\n')
    client.write32(NV_PMC_ENABLE, 0)
    assert served.isolation_holds()
