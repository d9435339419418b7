"""`mmiofilter demo`: with a KVM guest where there is one, through the Python API where not."""

from __future__ import annotations

import pytest

from mmiofilter import cli
from mmiofilter.kvm import machine as kvm_machine
from mmiofilter.kvm.demo import run_demo

EXPECTED = [
    "masked (NV_PMC_ENABLE)",
    "blocked (ioctrl@0xa00000)",
    "blocked (NV_PMINION_FALCON_IMEM_PORTS)",
    "redirected (NV_PCFG -> config)",
    "blocked (NV_PCFG1)",
    "blocked (NV_PROM_DATA)",
    "emulated (demo-emulated)",
    "ok  the guest's ring-interrupt ack reached 0x12004C",
    "ok  MSI re-arm landed in the VMM's config space at 0x704",
]


def test_demo_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    for text in EXPECTED:
        assert text in out
    assert "BROKEN" not in out
    if kvm_machine.kvm_available() is None:
        assert "took no exit" in out
    assert "read-direct, no exit" in out  # reads of NV_PMC_BOOT_0's page


def test_demo_without_kvm_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_kvm() -> str:
        return "no /dev/kvm in this test"

    monkeypatch.setattr(kvm_machine, "kvm_available", no_kvm)
    lines: list[str] = []
    assert run_demo(lines.append)
    text = "\n".join(lines)
    assert "No KVM guest here (no /dev/kvm in this test)" in text
    for expected in EXPECTED:
        assert expected in text
