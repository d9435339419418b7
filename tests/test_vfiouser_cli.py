"""`mmiofilter serve` as an operator runs it: a process, a socket, signals; and the --vfio
path's errors on a machine without a VFIO device."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmiofilter.cli import main
from tests.vfiouser_client import Client
from tests.vfiouser_fixtures import profile_policy

NV_PMC_BOOT_0 = 0x0


def _start(args: list[str], sock: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-m", "mmiofilter.cli", "serve", *args, "--socket", sock],
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 30
    while not os.path.exists(sock):
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            raise AssertionError(f"serve did not start: {p.communicate()[1]}")
        time.sleep(0.05)
    return p


def _stop(p: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    p.send_signal(sig)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    return err


@pytest.fixture
def sock() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="vfu-")
    yield str(Path(d) / "gpu.sock")


def test_serve_with_a_policy_file_then_sighup_and_sigterm(sock: str, tmp_path: Path) -> None:
    policy = tmp_path / "v100.toml"
    policy.write_text(profile_policy())
    p = _start([str(policy), "--simulate", "nvidia-gv100"], sock)
    try:
        with Client(sock) as c:
            c.version()
            assert c.read32(NV_PMC_BOOT_0) == 0x140000A1
            info, fds = c.region_info(0)
            for fd in fds:
                os.close(fd)
            # a reload that keeps the mapped pages: BOOT_0 becomes denied
            extra = '[[rule]]\nname = "no-boot"\nstart = 0\nsize = 4\naction = "deny"\n'
            policy.write_text(profile_policy(extra))
            p.send_signal(signal.SIGHUP)
            for _ in range(100):
                if c.read32(NV_PMC_BOOT_0) == 0xFFFFFFFF:
                    break
                time.sleep(0.05)
            assert c.read32(NV_PMC_BOOT_0) == 0xFFFFFFFF
            # one that would trap a mapped page is refused: the old policy stays
            mapped = info.areas[0][0]
            late = f'[[rule]]\nname = "late"\nstart = {mapped}\nsize = 4\naction = "deny"\n'
            policy.write_text(profile_policy(extra + late))
            p.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            c.write32(mapped, 0x5A5A5A5A)
            assert c.read32(mapped) == 0x5A5A5A5A
    finally:
        err = _stop(p)
    assert "policy reloaded" in err
    assert "refused: it would trap 1 page(s) of BAR0" in err and "late" in err
    assert "server stopped" in err
    assert not os.path.exists(sock)


def test_sigint_stops_a_server_with_a_client_connected(sock: str, tmp_path: Path) -> None:
    policy = tmp_path / "v100.toml"
    policy.write_text(profile_policy())
    p = _start([str(policy), "--simulate", "nvidia-gv100"], sock)
    with Client(sock) as c:
        c.version()
        c.send_raw(struct.pack("<HHIII", 1, 9, 32, 0, 0)[:8])  # stalls mid-header
        err = _stop(p, signal.SIGINT)
    assert "server stopped" in err


def test_simulate_works_without_a_policy(sock: str) -> None:
    p = _start(["--simulate", "nvidia-gv100"], sock)
    try:
        with Client(sock) as c:
            c.version()
            assert c.read32(0x88000) == 0x1DB110DE  # the mirror, redirected to config space
    finally:
        _stop(p)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--simulate", "nvidia-gh100"], "no simulated device for that profile"),
        (["--simulate", "nope"], "no profile 'nope'"),
        (["--vfio", "/dev/vfio/devices/vfio99"], "No such file or directory (is the device bound"),
        (["--vfio", "0000:ff:1f.7"], "no IOMMU group"),
        (["--vfio", "eth0"], "expected /dev/vfio/devices/vfioN or a PCI address"),
        (["/nonexistent.toml", "--simulate", "nvidia-gv100"], "no such file"),
    ],
)
def test_serve_errors(
    sock: str, args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if args[0] == "--vfio":
        policy = tmp_path / "p.toml"
        policy.write_text(profile_policy())
        args = [str(policy), *args]
    assert main(["serve", *args, "--socket", sock]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not os.path.exists(sock)


def test_vfio_needs_a_policy(sock: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--vfio", "/dev/vfio/devices/vfio0", "--socket", sock]) == 2
    assert "--vfio needs a POLICY file" in capsys.readouterr().err


def test_vfio_on_something_that_is_not_a_vfio_device(tmp_path: Path) -> None:
    from mmiofilter.vfiouser import SourceError
    from mmiofilter.vfiouser.vfio import VfioSource

    fake = tmp_path / "devices"
    fake.mkdir()
    # /dev/null opens read-write, but answers no VFIO ioctl
    with pytest.raises(SourceError, match=r"Inappropriate ioctl|not a VFIO device|iommu"):
        src = VfioSource.__new__(VfioSource)
        src._fds = []
        src.iommufd = src.container = -1
        src.name = "test"
        try:
            src._open_cdev("/dev/null")
        finally:
            src.close()


def test_serve_refuses_a_path_that_is_not_a_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text(profile_policy())
    regular = tmp_path / "file"
    regular.write_text("keep me")
    assert main(["serve", str(policy), "--simulate", "nvidia-gv100", "--socket", str(regular)]) == 2
    assert "exists and is not a socket" in capsys.readouterr().err
    assert regular.read_text() == "keep me"


def _vfio_device() -> tuple[str | None, str]:
    """A device to serve for real: MMIOFILTER_VFIO_DEVICE (a cdev or PCI address) with
    MMIOFILTER_VFIO_POLICY (its policy file)."""
    dev, policy = os.environ.get("MMIOFILTER_VFIO_DEVICE"), os.environ.get("MMIOFILTER_VFIO_POLICY")
    if dev and policy:
        return dev, policy
    found = sorted(Path("/dev/vfio/devices").glob("vfio*")) if Path("/dev/vfio").exists() else []
    where = f" ({', '.join(map(str, found))} present)" if found else " (none on this machine)"
    return None, (
        "no VFIO device to serve: set MMIOFILTER_VFIO_DEVICE (/dev/vfio/devices/vfioN or a PCI "
        f"address bound to vfio-pci) and MMIOFILTER_VFIO_POLICY{where}"
    )


def test_serve_a_real_vfio_device(sock: str) -> None:
    dev, policy = _vfio_device()
    if dev is None:
        pytest.skip(policy)
    p = _start([policy, "--vfio", dev], sock)
    try:
        with Client(sock) as c:
            c.version()
            flags, regions, _ = c.device_info()
            assert flags & 0x2 and regions == 9
            ids = c.read(7, 0, 4)  # the VFIO config region, through the server
            assert ids not in (b"\xff\xff\xff\xff", bytes(4))
            info, fds = c.region_info(0)
            assert info.size > 0 and fds == [] and not info.flags & 0x4  # never mapped
    finally:
        _stop(p)
