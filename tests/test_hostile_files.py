"""Regressions from the first fuzz campaign: hostile TOML that made Python itself raise
something other than the library's documented errors."""

from __future__ import annotations

import pytest

import mmiofilter as mf
from mmiofilter.devices import load_policy_file
from mmiofilter.devices.regmap import MapError, parse_map

HUGE = "9" * 4400  # past Python's int_max_str_digits: not even printable in decimal
DEEP = "a = " + "[" * 5000 + "]" * 5000 + "\n"


@pytest.mark.parametrize(
    "text",
    [
        f"fill = {HUGE}\n",  # tomllib itself refuses the integer
        f"fill = 0x{'f' * 4000}\n",  # tomllib accepts it; printing it in the error would fail
        DEEP,
        f'[[rule]]\nname = "a"\nstart = 0\nsize = -0x{"f" * 4000}\naction = "deny"\n',
        f'[[rule]]\nname = "a"\nstart = 0\nsize = 4\naction = "deny"\npriority = 0x{"f" * 4000}\n',
        f'profile = "nvidia-gv100"\n[options]\nnvlink = 0x{"f" * 4000}\n',
    ],
    ids=["huge-decimal", "huge-fill", "deep-nesting", "huge-size", "huge-priority", "huge-option"],
)
def test_hostile_policy_files_get_a_policy_error(text: str) -> None:
    with pytest.raises(mf.PolicyError):
        load_policy_file(text).resolve(None)


@pytest.mark.parametrize(
    "text",
    [
        DEEP,
        f"family = {HUGE}\n",
        'family = "x"\ntitle = "t"\n[[register]]\nbits = { A = "' + "9" * 4301 + '" }\n',
    ],
    ids=["deep-nesting", "huge-decimal", "huge-bit-number"],
)
def test_hostile_register_maps_get_a_map_error(text: str) -> None:
    with pytest.raises(MapError):
        parse_map(text, "<test>")
