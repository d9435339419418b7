"""Policy files: valid ones parse to the same Policy; bad ones say which rule and field."""

from __future__ import annotations

from pathlib import Path

import pytest

import mmiofilter as mf
from mmiofilter import Rule

GOOD = """
fill = 0x00
partial = "split"
unaligned = "deny"

[[rule]]
name = "pmc-enable-nvlink"
start = 0x200
size = 4
action = "mask"
mask = 0x02000000
value = 0x02000000

[[rule]]
name = "fw"
start = 0xE4A0
size = 0x104
action = "readonly"
priority = 5
bar = 0
"""


def test_good_policy_from_text_and_path(tmp_path: Path) -> None:
    want = mf.Policy(
        [
            Rule("pmc-enable-nvlink", 0x200, 4, "mask", mask=0x02000000, value=0x02000000),
            Rule("fw", 0xE4A0, 0x104, "readonly", priority=5),
        ],
        fill=0,
        partial="split",
        unaligned="deny",
    )
    assert mf.Policy.from_toml(GOOD) == want
    p = tmp_path / "policy.toml"
    p.write_text(GOOD)
    assert mf.Policy.from_toml(p) == want
    assert mf.Policy.from_toml(str(p)) == want


def test_empty_policy_defaults() -> None:
    p = mf.Policy.from_toml("# nothing\n")
    assert p.rules == () and p.fill == 0xFF and p.partial == "deny" and p.unaligned == "allow"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[rule]]\nname="a"\nstart=0\nsize=4\nacton="deny"\n',
            r"rule #0 \('a'\): unknown field\(s\) acton",
        ),
        ('[[rule]]\nname="a"\nstart=0\nsize=4\n', r"rule #0 \('a'\): missing field 'action'"),
        (
            '[[rule]]\nname="a"\nstart="0x10"\nsize=4\naction="deny"\n',
            r"rule #0 \('a'\): field 'start' must be an integer, not '0x10'",
        ),
        (
            '[[rule]]\nname="a"\nstart=0\nsize=4\naction="deny"\n[[rule]]\nname="b"\nstart=0\n'
            'size=4\naction="block"\n',
            r"rule 'b': action 'block' is not one of",
        ),
        (
            '[[rule]]\nname="a"\nstart=0\nsize=1\naction="emulate"\nvalue=0x1FF\n',
            r"rule 'a': value of 2 bytes does not fit",
        ),
        ('[[rule]]\nname="a"\nstart=0\nsize=true\naction="deny"\n', "field 'size' must be an"),
        ("fill = 300\n", "fill must be a byte"),
        ('partial = "maybe"\n', "partial 'maybe'"),
        ("rules = 1\n", r"unknown key\(s\) rules"),
        ("rule = 1\n", r"'rule' must be an array of tables"),
        ('[[rule]\nname="a"\n', "invalid TOML"),
        ("rule = [1]\n", "rule #0: must be a table"),
    ],
)
def test_bad_policy_text(text: str, message: str) -> None:
    with pytest.raises(mf.PolicyError, match=message):
        mf.Policy.from_toml(text)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(mf.PolicyError, match=r"nope\.toml: cannot read the policy file"):
        mf.Policy.from_toml(tmp_path / "nope.toml")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('[[rule]]\nname="a"\nstart=0\nsize=0\naction="deny"\n')
    with pytest.raises(mf.PolicyError, match=r"bad.toml: rule 'a': size must be at least 1"):
        mf.Policy.from_toml(p)
