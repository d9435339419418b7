"""The `mmiofilter` command: `bench` (shape of its output only: never timing values) and
`layout` (page layouts worked out by hand), errors and help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mmiofilter import bench, cli

# A quick bench with fewer accesses still: the test checks the report's shape, not figures.
QUICK = ["bench", "--quick", "--json", "--accesses", "500"]

POSITIVE_KEYS = (
    "batch_ns_10",
    "batch_ns_10000",
    "batch_ratio",
    "batch_dense_ns",
    "batch_ns_10000_hot10",
    "batch_ratio_hot10",
    "batch_floor_ns_10",
    "batch_floor_ns_10000",
    "read_ns_10",
    "read_ns_10000",
    "compile_64g_1000_ms",
    "construct_64g_1000_ms",
    "footprint_64g_1000_bytes",
    "compile_64g_10000_ms",
    "construct_64g_10000_ms",
    "footprint_64g_10000_bytes",
)
TARGET_KEYS = (
    "batch_ns_10000",
    "batch_ratio",
    "read_ns_10",
    "read_ns_10000",
    "compile_64g_1000_ms",
    "footprint_64g_1000_bytes",
)


def check_bench_report(report: dict[str, Any]) -> None:
    for key in POSITIVE_KEYS:
        value = report[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), key
        assert value > 0, key
    # The model is developed alongside; the bench reports null (with a note) when unusable.
    for key in ("model_read_ns", "model_read_ns_10000"):
        assert report[key] is None or report[key] > 0, key
    assert report["model_note"] is None or isinstance(report["model_note"], str)
    for key in TARGET_KEYS:
        t = report["targets"][key]
        assert t["value"] == report[key]
        assert isinstance(t["target"], str) and t["target"].startswith("<=")
        assert t["met"] in (True, False)
    machine = report["machine"]
    assert isinstance(machine["cpu"], str) and machine["cpu"]
    assert isinstance(machine["cores"], int) and machine["cores"] > 0
    assert isinstance(machine["python"], str) and isinstance(machine["kernel"], str)
    for name, variant in report["variants"].items():
        assert variant["median_ns"] > 0, name
        assert abs(sum(variant["outcomes"].values()) - 1) < 1e-9, name
        assert 0 <= variant["events_per_access"] <= 1, name
    assert report["params"]["quick"] is True
    # the driver workload's exits are replayed (no KVM needed): a read-only mapping never costs
    # more exits than trapping, and nothing beats the byte-granular floor
    for page in ("4096", "65536"):
        d = report["workload_exits"][page]
        assert d["page_trap"] >= d["read_direct"] >= d["byte_minimum"] >= 0, page
    for key in ("read_direct_read_exits", "read_direct_write_exits"):
        assert report[key] is None or isinstance(report[key], int), key


def test_bench_quick_json_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(QUICK) == 0
    out = capsys.readouterr().out
    check_bench_report(json.loads(out))


def test_bench_quick_json_subprocess() -> None:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mmiofilter.cli", *QUICK],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    check_bench_report(json.loads(proc.stdout))


def test_bench_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--quick", "--accesses", "500"]) == 0
    out = capsys.readouterr().out
    assert "batch, 10,000 rules (per access)" in out
    assert "<= 25 ns" in out and "<= 1.5x" in out and "<= 1.5 us" in out
    assert "machine:" in out and "mix:" in out


def test_bench_bad_accesses(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--quick", "--accesses", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--accesses" in err


# ---- layout -----------------------------------------------------------------------------

ONE_DENY = """
[[rule]]
name = "nvlink-disable"
start = 0x1000
size = 4
action = "deny"
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(ONE_DENY, encoding="utf-8")
    return path


def layout_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert cli.main(["layout", *args, "--json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_layout_text(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["layout", str(policy_file), "--bar-size", "64K", "--page-size", "4K"]) == 0
    out = capsys.readouterr().out
    # one 4-byte deny rule at 0x1000 traps page 1 of a 64 KiB BAR; pages 0 and 2..15 are direct
    assert "[0x0, 0x1000)  4 KiB" in out
    assert "[0x2000, 0x10000)  56 KiB" in out
    assert "trapped pages: 1 " in out
    assert "[0x1000, 0x2000)" in out
    assert "4,092 B" in out  # collateral: the page less the rule's 4 bytes


def test_layout_json(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = layout_json(capsys, str(policy_file), "--bar-size", "0x10000", "--page-size", "4096")
    assert r["direct"] == [[0, 0x1000], [0x2000, 0xE000]]
    assert r["trapped_pages"] == 1
    assert r["trapped_areas"] == [[0x1000, 0x1000]]
    assert r["collateral"] == 0x1000 - 4
    assert (r["bar"], r["bar_size"], r["page_size"], r["rules"], r["pages"]) == (
        0,
        0x10000,
        0x1000,
        1,
        16,
    )


READ_DIRECT = """
[[rule]]
name = "ro"
start = 0x1000
size = 4
action = "readonly"

[[rule]]
name = "m"
start = 0x2004
size = 4
action = "mask"
mask = 1
value = 1

[[rule]]
name = "d"
start = 0x2010
size = 4
action = "deny"
"""


def test_layout_read_direct(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """readonly traps page 1 for writes only (read-direct); page 2 also holds a deny: trapped."""
    path = tmp_path / "rd.toml"
    path.write_text(READ_DIRECT, encoding="utf-8")
    r = layout_json(capsys, str(path), "--bar-size", "64K", "--page-size", "4K")
    assert r["direct"] == [[0, 0x1000], [0x3000, 0xD000]]
    assert r["read_direct"] == [[0x1000, 0x1000]]
    assert (r["read_direct_pages"], r["fully_trapped_pages"], r["trapped_pages"]) == (1, 1, 2)
    assert r["fully_trapped_areas"] == [[0x2000, 0x1000]]
    assert r["collateral"] == r["collateral_write_bytes"] == 0x2000 - 12
    assert r["collateral_read_bytes"] == 0x1000 - 4  # the deny's page less the deny
    assert cli.main(["layout", str(path), "--bar-size", "64K", "--page-size", "4K"]) == 0
    out = capsys.readouterr().out
    assert "read-direct areas: 1, 4 KiB mapped read-only" in out
    assert "trapped pages: 1 (4 KiB) in 1 area(s)" in out


def test_layout_large_page_traps_all(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # with 64 KiB pages the one page of the BAR holds the rule: nothing is direct
    r = layout_json(capsys, str(policy_file), "--bar-size", "64K", "--page-size", "64K")
    assert r["direct"] == []
    assert r["trapped_pages"] == 1
    assert r["collateral"] == 0x10000 - 4


def test_layout_partial_last_page(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 0x10800 bytes: page 16 is partial, hence trapped (contract §4)
    r = layout_json(capsys, str(policy_file), "--bar-size", "67584", "--page-size", "4K")
    assert r["direct"] == [[0, 0x1000], [0x2000, 0xE000]]
    assert r["trapped_pages"] == 2
    assert r["collateral"] == (0x1000 - 4) + 0x800


def test_layout_other_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bar2.toml"
    path.write_text(ONE_DENY + "bar = 2\n", encoding="utf-8")
    r = layout_json(capsys, str(path), "--bar-size", "64K", "--page-size", "4K")
    assert r["direct"] == [[0, 0x10000]] and r["rules"] == 0
    r = layout_json(capsys, str(path), "--bar-size", "64K", "--page-size", "4K", "--bar", "2")
    assert r["direct"] == [[0, 0x1000], [0x2000, 0xE000]] and r["bar"] == 2


def test_layout_64g(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = layout_json(capsys, str(policy_file), "--bar-size", "64G", "--page-size", "64K")
    assert r["direct"] == [[0x10000, 64 * 2**30 - 0x10000]]


def assert_one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> None:
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    for w in words:
        assert w in captured.err


@pytest.mark.parametrize("size", ["64Q", "", "-4K", "0", "0x", "4.5K", "K"])
def test_layout_bad_size(policy_file: Path, capsys: pytest.CaptureFixture[str], size: str) -> None:
    assert cli.main(["layout", str(policy_file), "--bar-size", size]) == 2
    assert_one_line_error(capsys, "--bar-size")


def test_layout_bad_page_size(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["layout", str(policy_file), "--bar-size", "64K", "--page-size", "3K"]) == 2
    assert_one_line_error(capsys, "page size")


def test_layout_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["layout", str(tmp_path / "nope.toml"), "--bar-size", "64K"]) == 2
    assert_one_line_error(capsys, "nope.toml")


def test_layout_bad_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(ONE_DENY.replace('"deny"', '"block"'), encoding="utf-8")
    assert cli.main(["layout", str(path), "--bar-size", "64K"]) == 2
    assert_one_line_error(capsys, "block")


def test_layout_rule_outside_bar(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["layout", str(policy_file), "--bar-size", "0x800"]) == 2
    assert_one_line_error(capsys, "outside")


def test_layout_bad_bar(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["layout", str(policy_file), "--bar-size", "64K", "--bar", "6"]) == 2
    assert_one_line_error(capsys, "--bar")


def test_bad_size_subprocess(policy_file: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mmiofilter.cli", "layout", str(policy_file), "--bar-size", "1X"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


# ---- sizes, help, registration ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4096", 4096),
        ("0x1000", 4096),
        ("0X10", 16),
        ("4K", 4096),
        ("4k", 4096),
        ("64KiB", 65536),
        ("16M", 16 << 20),
        ("64G", 64 << 30),
        ("1T", 1 << 40),
        ("8B", 8),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert cli.parse_size(text) == value


@pytest.mark.parametrize(
    ("n", "text"),
    [(4092, "4,092 B (~4.0 KiB)"), (4096, "4 KiB"), (0xE000, "56 KiB"), (64 << 30, "64 GiB")],
)
def test_human_size(n: int, text: str) -> None:
    assert cli.human_size(n) == text


@pytest.mark.parametrize("argv", [["--help"], *[[name, "--help"] for name in cli.COMMANDS]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 0
    assert "usage: mmiofilter" in capsys.readouterr().out


def test_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert_one_line_error(capsys, "COMMAND")


def test_register_twice() -> None:
    with pytest.raises(ValueError, match="twice"):
        cli.register("layout", "again", lambda p: None, lambda a: 0)
