"""The plain-Python helpers of mmiofilter.testing: fake devices, filters, simulated GPUs, the
package's surface. (tests/test_plugin.py runs them from outside, against the installed wheel.)"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import warnings

import pytest

import mmiofilter as mf
import mmiofilter.testing as testing
from mmiofilter.testing import (
    DeviceFactory,
    FakeDevice,
    GpuSpec,
    MappingKeptWarning,
    bar_filter,
    device_of,
    fake_device,
    simulated_gpu,
)
from mmiofilter.testing.devices import sweep
from mmiofilter.testing.mailbox import Send, assert_fsp_guarded, run_mailbox

BACKENDS = ("memory", "fd", "callback")


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_all_lists_every_lazy_name_and_each_resolves() -> None:
    assert len(testing.__all__) == len(set(testing.__all__))
    assert set(testing.__all__) == set(testing._WHERE)
    for name in testing.__all__:
        assert getattr(testing, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        testing.nope  # noqa: B018


def test_importing_the_plain_helpers_does_not_import_hypothesis() -> None:
    code = (
        "import sys, mmiofilter.testing as t\n"
        "from mmiofilter.testing import bar_filter, fake_device, simulated_gpu, run_mailbox\n"
        "import mmiofilter.testing.pytest_plugin\n"
        "print('hypothesis' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("backend", BACKENDS)
def test_bar_filter_releases_its_device_at_the_end_of_the_block(backend: str) -> None:
    with bar_filter([mf.Rule("ro", 0, 4, "readonly")], size=0x2000, backend=backend) as f:
        dev = device_of(f)
        assert f.write(0, 4, 1) is mf.Outcome.BLOCKED and f.write(4, 4, 2) is mf.Outcome.PASS
        assert dev.read32(4) == 2
        fd = dev.fd
    del f
    gc.collect()  # a callback backend sits in a reference cycle
    assert dev.released and not fd_is_open(fd)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_device_closed_under_a_live_filter_waits_for_it(backend: str) -> None:
    dev = FakeDevice(0x1000)
    with bar_filter([], device=dev, backend=backend) as f:
        pass
    with pytest.warns(MappingKeptWarning, match="outlived close"):
        assert dev.close() is False
    assert not dev.released
    assert f.write(8, 4, 0xAB) is mf.Outcome.PASS and dev.read32(8) == 0xAB  # still its memory
    del f
    gc.collect()
    assert dev.released and sweep() == 0


def test_an_fd_filter_never_writes_to_a_file_that_reused_its_number(tmp_path: object) -> None:
    # Closing the memfd under a live filter would free its number for the next open(); the
    # filter's pwrite would then land in that file.
    dev = FakeDevice(0x1000)
    f = mf.BarFilter(0x1000, mf.Policy([]), dev.fd_backend(), page_size=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MappingKeptWarning)
        dev.close()
    path = os.path.join(str(tmp_path), "victim")
    victim = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(victim, bytes(16))
        f.write(0, 4, 0x41414141)
        assert os.pread(victim, 4, 0) == bytes(4)
    finally:
        os.close(victim)
    del f


def test_the_device_factory_releases_what_its_caller_drops() -> None:
    factory = DeviceFactory()
    fds = []
    for _ in range(50):
        dev = factory(0x1000)
        fds.append(dev.fd)
    del dev
    assert factory.devices == [] and not any(fd_is_open(fd) for fd in set(fds))
    kept = factory(0x1000)
    factory.close()
    assert kept.released


def test_the_context_managers_close() -> None:
    with fake_device(0x1000, initial=b"\x01") as dev:
        assert dev.read(0, 1) == 1
    assert dev.released
    with FakeDevice(0x1000) as dev2:
        pass
    assert dev2.released
    with pytest.raises(ValueError, match="released"):
        dev2.read32(0)


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="'mmio' is not one of"), bar_filter([], backend="mmio"):
        pass
    with fake_device(0x1000) as dev:
        with (
            pytest.raises(ValueError, match="does not fit"),
            bar_filter([], device=dev, size=0x2000),
        ):
            pass
    with pytest.raises(ValueError, match="not a positive integer"):
        FakeDevice(0)
    with pytest.raises(ValueError, match="is not one of"):
        GpuSpec("gb100")


@pytest.mark.skipif("redirect" not in mf.ACTIONS, reason="the core has no redirect action yet")
def test_a_policy_with_redirect_rules_gets_fake_targets() -> None:  # pragma: no cover
    rule = mf.Rule("mirror", 0x100, 0x100, "redirect", target="config", target_offset=0)  # type: ignore[call-arg]
    with bar_filter([rule], size=0x1000, backend="callback") as f:
        f.write(0x104, 4, 0x1234)
        assert device_of(f, "config").read32(4) == 0x1234
        assert device_of(f).read32(0x104) == 0


def test_a_simulated_v100_is_attached_like_a_vmm_does() -> None:
    spec = GpuSpec("gv100", units=((18, 0xA00000),))
    with simulated_gpu(spec) as gpu:
        f, resolved = gpu.attach(backend="fd")
        rules = {r.name: r for r in f.policy.rules}
        assert rules["ioctrl@0xa00000"].action == "readonly"
        assert resolved.deferred == []
        # the link-disable bits stay set: inside the discovered unit, read-only outright
        before = gpu.read32(0xA00148)
        assert f.write(0xA00148, 4, 0) is mf.Outcome.BLOCKED
        assert gpu.read32(0xA00148) == before != 0
        # NV_PMC_ENABLE: the guest may write it, with the NVLink bit forced on
        assert f.write(0x200, 4, 0) is mf.Outcome.MASKED
        assert gpu.read32(0x200) == 1 << 25
        assert device_of(f) is gpu.device


def test_a_simulated_h100_routes_the_mailbox_to_its_fsp() -> None:
    with simulated_gpu(GpuSpec("gh100", units=((18, 0xA40000),))) as gpu:
        f, _ = gpu.attach()
        assert any(r.name == "ioctrl@0xa40000" for r in f.policy.rules)  # table in the memfd
        assert gpu.fsp is not None
        results = run_mailbox(f, [Send(0x14, bytes(860)), Send(0x12, bytes(2000))])
        assert [m.nvdm_type for m in gpu.fsp.messages] == [0x14]
        assert_fsp_guarded(gpu.fsp, {0x12})
        assert len(results) == 2
        f.write(0x100, 4, 7)  # outside the mailbox: plain memory
        assert gpu.read32(0x100) == 7 and gpu.fsp.other == {}
