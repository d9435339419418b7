"""`mmiofilter replay` as a CI gate: --fail-on, progress on stderr, stdin and .gz traces,
skipped accesses per BAR with a --bar hint, QEMU's error messages told apart from trace
events, profile names, and Ctrl-C with a partial report (exit 130)."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mmiofilter import cli
from mmiofilter.replay import DeviceError, Malformed, QemuVfioParser, replay
from mmiofilter.replay.items import TraceAccess, TraceItem

from .test_replay import DEV, POLICY, POLICY_TOML, SCENARIO, mmiotrace_lines, qemu_lines

ALLOW_ALL = '[[rule]]\nname = "all"\nstart = 0\nsize = 0x10000\naction = "allow"\n'


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    p = {
        "policy": tmp_path / "policy.toml",
        "allow": tmp_path / "allow.toml",
        "qemu": tmp_path / "qemu.log",
        "gz": tmp_path / "mmio.txt.gz",
    }
    p["policy"].write_text(POLICY_TOML)
    p["allow"].write_text(ALLOW_ALL)
    p["qemu"].write_text("\n".join(qemu_lines(SCENARIO)) + "\n")
    p["gz"].write_bytes(gzip.compress(("\n".join(mmiotrace_lines(SCENARIO)) + "\n").encode()))
    return p


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    rc = cli.main(["replay", *argv, "--json", "--page-size", "4K"])
    cap = capsys.readouterr()
    return rc, json.loads(cap.out), cap.err


def test_fail_on(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    pol, trace = str(files["policy"]), str(files["qemu"])
    rc, out, err = run(capsys, pol, trace, "--fail-on", "changed-reads,blocked")
    assert rc == 1 and out["schema"] == 1 and out["command"] == "replay"
    assert out["failed"] == ["changed-reads: 5", "blocked: 5"]  # 3 blocked + 2 partial
    assert "FAILED (--fail-on): changed-reads: 5; blocked: 5" in err
    # the same trace under a policy that allows all: nothing to fail on
    rc, out, _ = run(capsys, str(files["allow"]), trace, "--fail-on", "changed-reads,blocked")
    assert rc == 0 and out["failed"] == []
    rc, out, _ = run(capsys, pol, trace, "--fail-on", "malformed")
    assert rc == 0
    files["qemu"].write_text(files["qemu"].read_text() + "vfio_region_read  (garbage)\n")
    rc, out, _ = run(capsys, pol, trace, "--fail-on", "malformed")
    assert rc == 1 and out["failed"] == ["malformed: 1"]
    # `nothing`: BAR2 of this trace saw no access
    rc, out, _ = run(capsys, pol, trace, "--fail-on", "nothing", "--bar", "2", "--bar-size", "64K")
    assert rc == 1 and out["failed"] == ["nothing: 1"]
    assert cli.main(["replay", pol, trace, "--fail-on", "chnaged-reads"]) == 2
    assert "did you mean 'changed-reads'" in capsys.readouterr().err


def test_skipped_per_bar_and_hint(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(capsys, str(files["policy"]), str(files["qemu"]), "--bar", "2",
                     "--bar-size", "64K")  # fmt: skip
    assert rc == 0 and out["accesses"] == 0
    assert out["skipped_by_bar"] == {"BAR0": len(SCENARIO)}
    assert "replay another BAR with --bar 0" in out["hint"]
    assert cli.main(["replay", str(files["policy"]), str(files["qemu"]), "--bar", "2",
                     "--bar-size", "64K"]) == 0  # fmt: skip
    assert "HINT: BAR2 saw no access; the trace has accesses to BAR0: 17" in (
        capsys.readouterr().out
    )


def test_gz_and_stdin(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, str(files["policy"]), str(files["gz"]))
    assert rc == 0 and out["accesses"] == len(SCENARIO) and out["format"] == "mmiotrace"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mmiofilter.cli", "replay", str(files["policy"]), "-", "--json"],
        input=files["qemu"].read_text(), capture_output=True, text=True, timeout=120, env=env,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accesses"] == len(SCENARIO)
    bad = files["gz"].with_name("bad.gz")
    bad.write_bytes(gzip.compress(b"R 4 1.0 1 0x0 0x0 0x0 0\n" * 100)[:40])
    assert cli.main(["replay", str(files["policy"]), str(bad)]) == 2
    assert "bad.gz" in capsys.readouterr().err


def test_qemu_failed_messages_are_device_errors() -> None:
    # As hw/vfio/region.c error_report()s them: the function name, "(", and "failed: %m".
    p = QemuVfioParser()
    w = f"qemu-system-x86_64: vfio_region_write({DEV}:region0+0x1000, 0xdead,4) failed: Bad address"
    r = f"qemu-system-x86_64: vfio_region_read({DEV}:region0+0x1000, 4) failed: Bad address"
    for text in (w, r):
        [item] = p.feed(1, text)
        assert isinstance(item, DeviceError), item
        assert "failed" in item.text
    # a real trace line next to it still parses; a broken one is still malformed
    ok = p.feed(2, f"vfio_region_read  ({DEV}:region0+0x10, 4) = 0x1")
    assert any(isinstance(i, TraceAccess) for i in ok)
    assert isinstance(p.feed(3, "vfio_region_read  (nonsense)")[0], Malformed)


def test_profile_names_are_policies(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    trace = tmp_path / "q.log"
    trace.write_text(
        "\n".join(qemu_lines([(0x88000, 4, True, 1), (0x0, 4, False, 0x140000A1)], setup=False))
    )
    rc, out, _ = run(capsys, "nvidia-gv100", str(trace), "--bar-size", "16M")
    # config_mirror = "virtualize": the NV_PCFG write goes to the config target, not the device
    assert rc == 0 and out["writes"]["blocked"] == 0
    rc, out, _ = run(capsys, "nvidia-gv100", str(trace), "--bar-size", "16M",
                     "-o", "config_mirror=deny")  # fmt: skip
    assert rc == 0 and out["writes"]["blocked"] == 1
    rc, out, _ = run(capsys, "nvidia-gv100", str(trace), "--bar-size", "16M",
                     "-o", "config_mirror=allow")  # fmt: skip
    assert rc == 0 and out["writes"]["blocked"] == 0
    assert cli.main(["replay", "nvidia-gv10", str(trace)]) == 2
    assert "did you mean 'nvidia-gv100'" in capsys.readouterr().err


def test_progress_and_interrupt_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[int] = []

    def items() -> Iterator[TraceItem]:
        for i in range(10_000):
            if i == 9_000:
                raise KeyboardInterrupt
            yield TraceAccess(i + 1, 0x3000, 4, False, 0)

    rep = replay(items(), POLICY, bar_size=0x10000, progress=lambda r, n: seen.append(n),
                 progress_every=1000)  # fmt: skip
    assert rep.interrupted and rep.accesses == 9_000
    assert seen == list(range(1000, 9001, 1000))
    assert "INTERRUPTED" in rep.format_text()


def test_ctrl_c_prints_the_partial_report_and_exits_130(files: dict[str, Path]) -> None:
    # A trace on a pipe that never ends: the replay is mid-stream when SIGINT comes.
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmiofilter.cli", "replay", str(files["policy"]), "-",
         "--progress", "--bar-size", "64K", "--format", "qemu"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stderr is not None
    chunk = ("\n".join(qemu_lines(SCENARIO * 50)) + "\n").encode()
    deadline = time.monotonic() + 60
    err = io.BytesIO()
    os.set_blocking(proc.stderr.fileno(), False)
    while time.monotonic() < deadline and b"replay: " not in err.getvalue():
        proc.stdin.write(chunk)
        proc.stdin.flush()
        err.write(proc.stderr.read() or b"")
    assert b"access(es) of BAR0" in err.getvalue()  # the progress line
    proc.send_signal(signal.SIGINT)
    proc.stdin.close()
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert proc.wait(timeout=60) == 130
    assert "INTERRUPTED after" in out and "replayed " in out
