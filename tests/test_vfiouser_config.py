"""The config space `serve` emulates for its client (mmiofilter/vfiouser/config.py)."""

from __future__ import annotations

from mmiofilter.devices.pciconfig_build import build_config, io_bar, mem_bar
from mmiofilter.vfiouser.config import EmulatedConfig

BAR0, BAR1, BAR2 = 0x10, 0x14, 0x18


def test_an_io_bar_with_address_bit_2_does_not_make_the_next_bar_writable() -> None:
    # an I/O BAR's bit 2 is an address bit, not the 64-bit flag a memory BAR has there
    cfg = EmulatedConfig(
        build_config(0x10DE, 0x1DB1, bars=io_bar(0x1004) + mem_bar(0xF000_0000)), {0: 0x100}
    )
    cfg.write(BAR1, 4, 0xFFFF_FFFF)
    assert cfg.read(BAR1, 4) == 0  # not served: reads as 0, and stays so


def test_a_64_bit_memory_bar_sizes_both_dwords() -> None:
    data = build_config(0x10DE, 0x1DB1, bars=mem_bar(0x1_0000_0000, is_64bit=True))
    cfg = EmulatedConfig(data, {0: 1 << 24})
    cfg.write(BAR0, 4, 0xFFFF_FFFF)
    cfg.write(BAR1, 4, 0xFFFF_FFFF)
    assert cfg.read(BAR0, 4) & ~0xF == 0xFF00_0000
    assert cfg.read(BAR1, 4) == 0xFFFF_FFFF
    assert cfg.read(BAR2, 4) == 0
