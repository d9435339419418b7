"""The admin's CLI: `check` compiles what it validates and lists every problem, --strict,
--json (errors too), `show` by PCI ID, did-you-mean, one JSON shape per command, aligned and
offset-sorted tables, and `layout --map` (SVG and text grid)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from mmiofilter import cli
from mmiofilter.devices.pciconfig_build import build_config, mem_bar, msix_cap

GUARD_CLASH = """
[[guard]]
name = "fsp"
kind = "fsp"

[[rule]]
name = "over-the-queue"
start = 0x8F2C00
size = 4
action = "deny"
priority = 1
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    rc, out, _ = run(capsys, *argv, "--json")
    return rc, json.loads(out)


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# ---- check compiles -------------------------------------------------------------------------


def test_check_refuses_a_policy_that_cannot_compile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A guard outranked on one of its registers: BarFilter and layout refuse it, so must check.
    path = write(tmp_path, "clash.toml", GUARD_CLASH)
    rc, out, _ = run(capsys, "check", path, "--bar-size", "16M", "--page-size", "4096,65536")
    assert rc == 1
    assert "INVALID" in out and "valid\n" not in out
    assert (
        "BAR0 (4 KiB, 64 KiB pages): does not compile: rule 'fsp': guard register byte 0x8f2c00 "
        "is owned by rule over-the-queue" in out
    )
    rc, j = run_json(capsys, "check", path, "--bar-size", "16M")
    assert rc == 1 and j["valid"] is False and j["ok"] is False and len(j["errors"]) == 1
    assert (j["schema"], j["command"]) == (1, "check")


def test_check_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        '[[rule]]\nname = "a"\nstart = 0\nsize = 4\naction = "dney"\n'
        '[[rule]]\nname = "b"\nstart = 8\nsize = 0\naction = "deny"\n'
        '[[rule]]\nname = "c"\nstart = 16\nsize = 4\nacton = "deny"\n'
    )
    rc, j = run_json(capsys, "check", write(tmp_path, "bad.toml", text))
    assert rc == 1
    assert len(j["errors"]) == 3
    assert "action 'dney'" in j["errors"][0] and "size must be at least 1" in j["errors"][1]
    assert "unknown field(s) acton" in j["errors"][2]


def test_check_rules_outside_each_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        '[[rule]]\nname = "a"\nstart = 0x10000\nsize = 4\naction = "deny"\n'
        '[[rule]]\nname = "b"\nstart = 0x2000\nsize = 4\naction = "deny"\nbar = 2\n'
        '[[rule]]\nname = "c"\nstart = 0x20000\nsize = 4\naction = "deny"\n'
    )
    path = write(tmp_path, "out.toml", text)
    rc, j = run_json(capsys, "check", path, "--bar-size", "0=64K", "--bar-size", "2=4K")
    assert rc == 1
    assert [e.split(":")[0] for e in j["errors"]] == ["rule 'a'", "rule 'c'", "rule 'b'"]
    rc, j = run_json(capsys, "check", path, "--bar-size", "0=256K", "--bar-size", "2=16K",
                     "--page-size", "4K,16K")  # fmt: skip
    assert rc == 0 and j["valid"]
    assert [(c["bar"], c["page_size"]) for c in j["compiled"]] == [
        (0, 4096), (0, 16384), (2, 4096), (2, 16384)]  # fmt: skip


MASK0 = '[[rule]]\nname = "pmc"\nstart = 0x200\nsize = 4\naction = "mask"\nvalue = 2\n'


def test_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "m.toml", MASK0)
    rc, j = run_json(capsys, "check", path, "--bar-size", "4K")
    assert rc == 0 and j["valid"] and j["ok"]
    assert any("mask rule with mask 0" in w for w in j["warnings"])
    rc, j = run_json(capsys, "check", path, "--bar-size", "4K", "--strict")
    assert rc == 1 and j["valid"] and not j["ok"]
    rc, out, _ = run(capsys, "check", path, "--bar-size", "4K", "--strict")
    assert rc == 1 and "valid, but --strict: 1 warning(s)" in out
    # unconfirmed register facts of the profile are warnings: strict refuses them
    rc, j = run_json(capsys, "check", "nvidia-gv100", "--strict")
    assert rc == 1 and any("unconfirmed" in w for w in j["warnings"])
    fixed = write(tmp_path, "f.toml", MASK0 + "mask = 2\n")
    assert run_json(capsys, "check", fixed, "--bar-size", "4K", "--strict")[0] == 0


def test_nvidia_gpu_without_a_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 10de:ffff: an NVIDIA 3D controller (class 0x0302) that no profile names
    dump = tmp_path / "config"
    dump.write_bytes(build_config(0x10DE, 0xFFFF, class_code=0x030200,
                                  bars=mem_bar(0xF0000000), caps=[msix_cap(4)]))  # fmt: skip
    rc, j = run_json(capsys, "check", "--config", str(dump), "--bar-size", "16M")
    assert j["profile"] == "pci" and rc == 0
    assert any("NVIDIA 3D controller no NVIDIA profile knows" in w for w in j["warnings"])
    assert run_json(capsys, "check", "--config", str(dump), "--bar-size", "16M", "--strict")[0] == 1
    # not a display controller (class 0x0680): no such warning
    dump.write_bytes(build_config(0x10DE, 0xFFFF, class_code=0x068000,
                                  bars=mem_bar(0xF0000000), caps=[msix_cap(4)]))  # fmt: skip
    rc, j = run_json(capsys, "check", "--config", str(dump), "--bar-size", "16M")
    assert not any("NVIDIA" in w for w in j["warnings"])


def test_json_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "check", str(tmp_path / "nope.toml"), "--json")
    assert rc == 2 and "nope.toml" in err
    j = json.loads(out)
    assert j == {"schema": 1, "command": "check", "ok": False, "errors": [j["errors"][0]]}
    rc, j = run_json(capsys, "check", write(tmp_path, "t.toml", "x = ["))
    assert rc == 1 and "invalid TOML" in j["errors"][0]


# ---- CLI basics ---------------------------------------------------------------------------


def test_did_you_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "check", "nvidia-gv10")
    assert rc == 2 and "did you mean 'nvidia-gv100'" in err
    rc, _, err = run(capsys, "check", "nvidia-gv100", "-o", "nvlnk=isolate")
    assert rc == 2 and "did you mean 'nvlink'" in err
    rc, _, err = run(capsys, "check", "nvidia-gv100", "--strcit")
    assert rc == 2 and "did you mean '--strict'" in err
    rc, _, err = run(capsys, "chek", "x")
    assert rc == 2 and "did you mean 'check'" in err
    rc, _, err = run(capsys, "show", "nvidia-gh10")
    assert rc == 2 and "did you mean 'nvidia-gh100'" in err


def test_show_by_pci_id(capsys: pytest.CaptureFixture[str]) -> None:
    rc, j = run_json(capsys, "show", "10de:1db1")
    assert rc == 0 and j["name"] == "nvidia-gv100" and j["note"] is None
    rc, j = run_json(capsys, "show", "8086:1234")
    assert rc == 0 and j["name"] == "pci" and "no profile is made for 8086:1234" in j["note"]
    offsets = [
        (r["bar"], r["offset"]) for r in run_json(capsys, "show", "nvidia-gv100")[1]["regions"]
    ]
    assert offsets == sorted(offsets)


def test_one_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pol = write(tmp_path, "p.toml", '[[rule]]\nname = "a"\nstart = 0\nsize = 4\naction = "deny"\n')
    for argv in (["profiles"], ["show", "pci"], ["check", pol, "--bar-size", "4K"],
                 ["layout", pol, "--bar-size", "64K"]):  # fmt: skip
        rc, j = run_json(capsys, *argv)
        assert rc == 0 and j["schema"] == 1 and j["command"] == argv[0], argv


def columns(lines: list[str]) -> set[int]:
    """Where each line's cells start (after the indent)."""
    starts: set[int] = set()
    for line in lines:
        starts |= {m.start() for m in re.finditer(r"(?<=  )\S", line)}
    return starts


def test_tables_aligned_and_sorted(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "check", "nvidia-gv100")
    assert rc == 0
    rows = [ln for ln in out.splitlines() if ln.startswith("  BAR0  0x")]
    assert len(rows) > 5
    # every row's action column starts at the same place, and rows go by offset
    action_at = {
        ln.index(m.group(0)) for ln in rows if (m := re.search(r" (readonly|mask|deny|audit) ", ln))
    }
    assert len(action_at) == 1
    starts = [int(ln.split()[1], 16) for ln in rows]
    assert starts == sorted(starts)


# ---- layout --map --------------------------------------------------------------------------


def test_layout_map_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        '[[rule]]\nname = "a"\nstart = 0x1000\nsize = 4\naction = "deny"\n'
        '[[rule]]\nname = "b"\nstart = 0x1100\nsize = 4\naction = "readonly"\n'
        '[[rule]]\nname = "c"\nstart = 0xF00000\nsize = 0x20000\naction = "deny"\n'
    )
    pol = write(tmp_path, "p.toml", text)
    rc, out, _ = run(capsys, "layout", pol, "--bar-size", "16M", "--page-size", "4K,64K",
                     "--map", "-")  # fmt: skip
    assert rc == 0
    blocks = out.split("BAR0: ")[1:]
    assert len(blocks) == 2  # one per page size
    small = blocks[0]
    assert "4,096 page(s); one cell = 1 page(s)" in small
    grid = [ln.split()[1] for ln in small.splitlines()[1:65]]
    assert len(grid) == 64 and all(len(g) == 64 for g in grid)
    assert grid[0] == ".#" + "." * 62  # page 1 traps
    assert "".join(grid).count("#") == 1 + 32
    runs = small.split("runs:")[1]
    # 4,096 pages collapse into 5 runs; the trapped ones name their rules
    assert len([ln for ln in runs.splitlines() if ln.strip()]) == 5
    assert "[0x0001000, 0x0002000)          1 page(s)  trapped   a, b" in runs
    assert "[0x0f00000, 0x0f20000)         32 page(s)  trapped   c" in runs
    assert "256 page(s); one cell = 1 page(s)" in blocks[1]


def test_layout_map_svg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svg = tmp_path / "bar.svg"
    rc, out, _ = run(capsys, "layout", "nvidia-gv100", "--page-size", "4K,64K", "--map", str(svg))
    assert rc == 0 and str(svg) in out
    root = ET.parse(svg).getroot()
    ns = {"s": "http://www.w3.org/2000/svg"}
    rects = root.findall("s:rect", ns)
    trapped = [r for r in rects if r.get("class") == "trapped"]
    direct = [r for r in rects if r.get("class") == "direct"]
    assert trapped and direct
    assert len(rects) < 100  # runs, not 4,096 pages
    texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "NV_PCFG" in texts and "NV_PROM_DATA" in texts
    assert "4 KiB pages" in texts and "64 KiB pages" in texts
    # every band of a row spans the same width: the BAR
    widths = [float(r.get("width", 0)) for r in trapped + direct]
    assert min(widths) >= 6
