"""The plain-Python helpers of mmiofilter.testing, as another component's tests use them: no
fixture anywhere in this file, inside `@given`, in a unittest TestCase, and in plain code."""

from __future__ import annotations

import os
import unittest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmiofilter as mf
from mmiofilter.testing import (
    BarFilterFactory,
    DeviceFactory,
    FakeDevice,
    GpuSpec,
    InterleavedBar,
    ModelFilterFactory,
    ProfilePolicy,
    Raw,
    Send,
    SendResult,
    assert_driver_served,
    assert_fsp_guarded,
    assert_security,
    bar_filter,
    device_of,
    driver_sends,
    fake_device,
    gpu_specs,
    hostile_sends,
    mailbox_accesses,
    mailbox_sequences,
    model_filter,
    profile_policies,
    register_accesses,
    run_mailbox,
    simulated_gpu,
    strategies,
)

FW = 0x12
POLICY = mf.Policy([mf.Rule("flash", 0x100, 0x10, "deny"), mf.Rule("ro", 0x200, 8, "readonly")])


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_fake_device_closes_its_memfd() -> None:
    with fake_device(0x3000, initial=b"\x11\x22") as dev:
        assert os.readlink(f"/proc/self/fd/{dev.fd}").startswith("/memfd:")
        assert dev.read(0, 2) == 0x2211
        fd = dev.fd
    assert dev.released and not fd_is_open(fd)


@settings(max_examples=10, deadline=None)
@given(backend=st.sampled_from(["memory", "fd", "callback"]), data=st.data())
def test_bar_filter_with_every_backend_in_given(backend: str, data: st.DataObject) -> None:
    with bar_filter(POLICY, size=0x1000, backend=backend) as f:
        dev = device_of(f)
        assert isinstance(dev, FakeDevice) and dev.size == 0x1000
        for acc in data.draw(st.lists(strategies.accesses(0x1000, POLICY), max_size=10)):
            f.access(*acc)
        assert dev.read(0x100, 8) == 0 and dev.read(0x200, 8) == 0  # never written
        if backend == "callback":
            assert_security(POLICY, dev.log)


def test_a_filter_outliving_its_block_keeps_its_device() -> None:
    with bar_filter(POLICY, size=0x1000, backend="fd") as f:
        dev = device_of(f)
    assert not dev.released  # `f` is still bound: its memfd must stay
    other = os.open("/dev/null", os.O_RDONLY)
    try:
        assert other != dev.fd  # the number is not free for another file
    finally:
        os.close(other)
    assert f.write(0x300, 4, 7) is mf.Outcome.PASS and dev.read32(0x300) == 7
    del f
    assert dev.released


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_model_filter_and_plain_factories(data: st.DataObject) -> None:
    devices = DeviceFactory()
    filters, models = BarFilterFactory(devices), ModelFilterFactory()
    policy = data.draw(strategies.policies(0x2000))
    f = filters(policy, size=0x2000, backend="callback")
    m, lone = models(policy, size=0x2000), model_filter(policy, size=0x2000)
    for acc in data.draw(st.lists(strategies.accesses(0x2000, policy), max_size=8)):
        assert f.access(*acc) == m.access(*acc) == lone.access(*acc)
    assert filters.device(f).log == models.device(m).log == lone.device.log  # type: ignore[attr-defined]
    del f
    devices.close()
    assert devices.devices == []


class TestWithUnittest(unittest.TestCase):
    """The helpers in a unittest TestCase (pytest runs it; so would `python -m unittest`)."""

    def test_bar_filter(self) -> None:
        with bar_filter(POLICY, size=0x1000) as f:
            self.assertEqual(f.read(0x100, 4), 0xFFFFFFFF)
            self.assertIs(f.write(0x200, 4, 1), mf.Outcome.BLOCKED)

    @settings(max_examples=10, deadline=None)
    @given(spec=gpu_specs("gv100"))
    def test_simulated_v100(self, spec: GpuSpec) -> None:
        with simulated_gpu(spec) as gpu:
            f, _ = gpu.attach()
            units = [r for r in f.policy.rules if r.name.startswith("ioctrl@")]
            self.assertEqual(len(units), len(spec.units))
            pmc = gpu.regmap.find("NV_PMC_ENABLE")
            nvlink = pmc.field("NVLINK").mask
            f.write(pmc.offset, 4, 0)  # the guest tries to turn NVLink off and on again
            self.assertEqual(gpu.read32(pmc.offset) & nvlink, nvlink)


@settings(max_examples=10, deadline=None)
@given(pp=profile_policies(), data=st.data())
def test_profile_policies_on_their_registers(pp: ProfilePolicy, data: st.DataObject) -> None:
    assert pp.profile in ("nvidia-gv100", "nvidia-gh100", "pci")
    for bar, size in pp.bar_sizes.items():
        if pp.guards and bar == 0:
            continue  # the FSP guard decides from protocol state: see the mailbox tests
        with bar_filter(pp.policy, size=size, bar=bar, backend="callback") as f:
            for acc in data.draw(st.lists(register_accesses(pp, bar=bar), max_size=15)):
                f.access(*acc)
            assert_security(pp.policy, device_of(f).log, bar=bar)


@settings(max_examples=8, deadline=None)
@given(sends=st.lists(driver_sends(channels=(0, 1, 2)), max_size=4))
def test_a_driver_alone_is_served(sends: list[Send]) -> None:
    with simulated_gpu(GpuSpec("gh100")) as gpu:
        f, _ = gpu.attach()
        assert gpu.fsp is not None
        results = run_mailbox(f, sends)
        # what the profile's guard refuses: FIRMWARE_UPDATE, and the PRC sub-messages of its
        # nvlink and persistent_settings defaults
        (guard,) = [r for r in f.policy.rules if isinstance(r, mf.FspGuard)]
        assert_driver_served(results, gpu.fsp, guard.deny_types, guard.deny_prc)
        assert_fsp_guarded(gpu.fsp, guard.deny_types, guard.deny_prc)


@settings(max_examples=12, deadline=None)
@given(steps=mailbox_sequences(), send=hostile_sends(), raw=mailbox_accesses())
def test_the_guard_holds_under_hostile_interleavings(
    steps: list[Send | Raw], send: Send, raw: Raw
) -> None:
    with simulated_gpu(GpuSpec("gh100")) as gpu:
        f, _ = gpu.attach()
        assert gpu.fsp is not None
        results = run_mailbox(f, [*steps, raw, send])
        assert isinstance(results[-1], SendResult)
        assert_fsp_guarded(gpu.fsp, {FW})


def my_driver_boot(bar: InterleavedBar, cot: bytes) -> int:
    """A guest driver's own code under test: one COT packet on channel 0, the open driver's
    register order, then the reply's error code (or -1 when the mailbox never got ready)."""
    emem, queue, msgq = 0x8F2AC0, 0x8F2C00, 0x8F2C80
    packet = (0xC0000000).to_bytes(4, "little") + (0x14_10DE7E).to_bytes(4, "little") + cot
    packet += bytes(-len(packet) % 4)
    for _ in range(8):
        if bar.read(queue, 4) == bar.read(queue + 4, 4) and bar.read(msgq, 4) == bar.read(
            msgq + 4, 4
        ):
            break
    else:
        return -1
    bar.write(emem, 4, 1 << 24)  # EMEMC: offset 0, auto-increment on write
    for i in range(0, len(packet), 4):
        bar.write(emem + 4, 4, int.from_bytes(packet[i : i + 4], "little"))
    bar.write(queue + 4, 4, len(packet) - 4)
    bar.write(queue, 4, 0)  # the doorbell
    head, tail = bar.read(msgq, 4), bar.read(msgq + 4, 4)
    if head == tail:
        return -1
    bar.write(emem, 4, head | 1 << 25)  # EMEMC: auto-increment on read
    words = [bar.read(emem + 4, 4) for _ in range(5)]
    bar.write(msgq + 4, 4, head)
    bar.write(msgq, 4, head)
    return words[4]


@settings(max_examples=12, deadline=None)
@given(injections=st.lists(st.tuples(st.integers(0, 30), mailbox_accesses()), max_size=4))
def test_my_own_driver_against_hostile_interleavings(injections: list[tuple[int, Raw]]) -> None:
    with simulated_gpu(GpuSpec("gh100")) as gpu:
        f, _ = gpu.attach()
        assert gpu.fsp is not None
        error = my_driver_boot(InterleavedBar(f, injections), bytes(860))
        assert_fsp_guarded(gpu.fsp, {FW})
        if not injections:  # alone, the driver boots
            assert error == 0 and [m.nvdm_type for m in gpu.fsp.messages] == [0x14]


def test_without_the_guard_the_same_steps_reach_the_fsp() -> None:
    # The helpers can fail: with firmware_update = "allow" the guard lets firmware updates by.
    with simulated_gpu(GpuSpec("gh100")) as gpu:
        f, _ = gpu.attach('profile = "nvidia-gh100"\n[options]\nfirmware_update = "allow"\n')
        assert gpu.fsp is not None
        run_mailbox(f, [Send(FW, bytes(100))])
        with pytest.raises(AssertionError, match="denied NVDM type"):
            assert_fsp_guarded(gpu.fsp, {FW})
