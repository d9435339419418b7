"""Audit that leaves the process: event timestamps and labels, the JSON-lines, syslog and
Prometheus-textfile sinks, `drain`, the background drainer, attach's label and warnings, and
the warning for a rule that does nothing."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import mmiofilter as mf
from mmiofilter import audit
from mmiofilter.devices import attach, load_policy_file
from mmiofilter.devices.pciconfig_build import build_config, mem_bar
from mmiofilter.lint import PolicyWarning
from mmiofilter.simulated.gv100 import simulated_bar0

POLICY = mf.Policy(
    [
        mf.Rule("flash", 0x1000, 0x100, "deny"),
        mf.Rule("doorbell", 0x2000, 4, "audit"),
        mf.Rule('odd "name"\\', 0x3000, 4, "readonly"),
    ]
)


def make(label: str = "0000:65:00.0/bar0", ring: int = 64) -> mf.BarFilter:
    return mf.BarFilter(
        0x10000, POLICY, mf.MemoryBackend(bytearray(0x10000)), label=label, ring_capacity=ring
    )


def test_events_carry_time_and_label() -> None:
    f = make()
    before = time.time_ns()
    f.write(0x1000, 4, 0xDEAD)
    f.read(0x2000, 4)
    after = time.time_ns()
    events = f.drain_events()
    assert [e.rule for e in events] == ["flash", "doorbell"]
    for e in events:
        assert before <= e.time_ns <= after  # made in C, at the access
        assert e.label == "0000:65:00.0/bar0"
        assert abs(e.time - e.time_ns / 1e9) < 1e-6
    assert events[0].time_ns <= events[1].time_ns
    # The timestamp is not part of equality: equal accesses make equal events.
    assert events[0] == mf.Event(0, 0, 0x1000, 4, True, 0xDEAD, mf.Outcome.BLOCKED, "flash",
                                 label="0000:65:00.0/bar0")  # fmt: skip


@pytest.mark.parametrize("label", [5, "a\nb", "x" * 257])
def test_bad_label(label: Any) -> None:
    with pytest.raises(ValueError, match="label"):
        make(label)


def test_json_lines_and_drops(tmp_path: Path) -> None:
    f, g = make(ring=2), make("0000:66:00.0/bar0")
    for i in range(5):  # 5 events in a ring of 2: 3 lost
        f.write(0x1000, 4, i)
    g.read(0x2000, 4)
    sink = audit.JsonLines(tmp_path / "audit.jsonl")
    batches = audit.drain([f, g], sink)
    assert [len(b.events) for b in batches] == [2, 1]
    assert audit.drain(f, [sink])[0].new_dropped == 0  # counted once
    sink.close()
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["dropped", "event", "event", "event"]
    assert records[0] == {"schema": 1, "type": "dropped", "filter": "0000:65:00.0/bar0",
                          "bar": 0, "count": 3, "total": 3}  # fmt: skip
    ev = records[1]
    assert (ev["rule"], ev["outcome"], ev["write"], ev["value"], ev["seq"]) == (
        "flash", "blocked", True, 3, 3)  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", ev["time"])
    assert records[3]["filter"] == "0000:66:00.0/bar0" and records[3]["outcome"] == "pass"


def parse_prom(text: str) -> dict[str, float]:
    """A small reader of the text format: `name{labels} value` lines, comments checked."""
    out: dict[str, float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) mmiofilter_\w+ .+", line), line
            continue
        m = re.fullmatch(r'(mmiofilter_\w+)\{((?:\w+="(?:[^"\\]|\\.)*",?)*)\} (\d+)', line)
        assert m, line
        out[f"{m.group(1)}{{{m.group(2)}}}"] = float(m.group(3))
    return out


def test_prometheus_textfile(tmp_path: Path) -> None:
    f = make(ring=2)
    path = tmp_path / "mf.prom"
    sink = audit.PrometheusTextfile(path)
    for i in range(3):
        f.write(0x1000, 4, i)
    f.read(0x3000, 4)
    audit.drain(f, sink)
    f.write(0x1000, 4, 9)
    audit.drain(f, sink)
    m = parse_prom(path.read_text())
    lab = 'filter="0000:65:00.0/bar0",bar="0"'
    assert m[f'mmiofilter_rule_hits_total{{{lab},rule="flash"}}'] == 4
    assert m[f'mmiofilter_rule_hits_total{{{lab},rule="doorbell"}}'] == 0
    # a name with a quote and a backslash is escaped, not a broken file
    assert m[f'mmiofilter_rule_hits_total{{{lab},rule="odd \\"name\\"\\\\"}}'] == 1
    # 3 flash writes into a ring of 2 (the readonly read passes: no event): 2 drained and 1
    # lost, then 1 more drained
    assert m[f'mmiofilter_events_total{{{lab},rule="flash",outcome="blocked"}}'] == 3
    assert m[f"mmiofilter_events_dropped_total{{{lab}}}"] == 1
    assert sorted(os.listdir(tmp_path)) == ["mf.prom"]  # the temporary file was renamed
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    with pytest.raises(ValueError, match=r"\.prom"):
        audit.PrometheusTextfile(tmp_path / "mf.txt")


def test_syslog_datagrams(tmp_path: Path) -> None:
    addr = str(tmp_path / "log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(addr)
    server.settimeout(5)
    try:
        sink = audit.Syslog(addr, tag="mf-test")
        f = make()
        f.write(0x1000, 2, 0xBEEF)
        f.read(0x2000, 4)
        audit.drain(f, sink)
        got = [server.recv(4096).decode() for _ in range(2)]
        sink.close()
    finally:
        server.close()
    pid = os.getpid()
    # daemon (3) * 8 + warning (4) = 28; + info (6) = 30 (RFC 5424 numbering)
    assert got[0] == (f"<28>mf-test[{pid}]: 0000:65:00.0/bar0: blocked 2-byte write at 0x1000 "
                      "value 0xbeef rule flash seq 0")  # fmt: skip
    assert got[1].startswith(f"<30>mf-test[{pid}]: 0000:65:00.0/bar0: pass 4-byte read at 0x2000")


def test_syslog_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        audit.Syslog(str(tmp_path / "nope"))


class Broken:
    def write(self, batches: Any) -> None:
        raise OSError("disk full")

    def close(self) -> None:
        pass


def test_a_broken_sink_does_not_silence_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = make()
    f.write(0x1000, 4, 1)
    good = audit.JsonLines(tmp_path / "a.jsonl")
    with caplog.at_level(logging.ERROR, logger="mmiofilter"):
        audit.drain(f, [Broken(), good])
    good.close()
    assert "disk full" in caplog.text
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 1


def test_background_drainer(tmp_path: Path) -> None:
    f = make(ring=4)
    path = tmp_path / "bg.jsonl"
    with audit.Drainer(f, audit.JsonLines(path), interval=0.01) as d:
        for i in range(40):  # more than the ring holds: the drainer keeps up between writes
            f.write(0x1000, 4, i)
            deadline = time.monotonic() + 5
            while lib_pending(f) and time.monotonic() < deadline:
                time.sleep(0.001)
    assert d.drains >= 2
    values = [json.loads(x)["value"] for x in path.read_text().splitlines()]
    assert values == list(range(40))  # nothing lost, nothing left behind at stop
    with pytest.raises(ValueError, match="interval"):
        audit.Drainer(f, [], interval=0)


def lib_pending(f: mf.BarFilter) -> int:
    from mmiofilter._core import lib

    return int(lib.mf_events_pending(f._f))


def test_stop_drains_what_is_left(tmp_path: Path) -> None:
    f = make()
    path = tmp_path / "s.jsonl"
    d = audit.Drainer([f], [audit.JsonLines(path)], interval=3600).start()
    f.write(0x1000, 4, 7)
    d.stop()
    assert json.loads(path.read_text())["value"] == 7
    d.stop()  # twice is harmless


# ---- a rule that does nothing --------------------------------------------------------------

MASK0 = '[[rule]]\nname = "pmc"\nstart = 0x200\nsize = 4\naction = "mask"\nvalue = 2\n'


def test_mask_rule_without_mask_warns(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="mmiofilter"),
        pytest.warns(PolicyWarning, match=r"rule 'pmc': a mask rule with mask 0 forces no bit"),
    ):
        mf.Policy.from_toml(MASK0)
    assert "forces no bit" in caplog.text
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a mask that forces a bit is no warning
        mf.Policy.from_toml(MASK0 + "mask = 2\n")


def test_an_fsp_guard_giving_the_pmu_soe_channel_away_warns() -> None:
    guard = '[[guard]]\nname = "fsp"\nkind = "fsp"\npriority = 1\n'
    with pytest.warns(PolicyWarning, match=r"guard 'fsp': channels = 5 gives the guest channel 4"):
        mf.Policy.from_toml(guard + "channels = 5\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default (4) and fewer are no warning
        mf.Policy.from_toml(guard)
        mf.Policy.from_toml(guard + "channels = 1\n")


# ---- attach: the label from the device, warnings to the logger, strict -----------------------


def test_attach_label_and_nvlink_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dev = tmp_path / "0000:65:00.0"
    dev.mkdir()
    (dev / "config").write_bytes(build_config(0x10DE, 0x1DB1, bars=mem_bar(0xF0000000)))
    pf = load_policy_file(f'config = "{dev / "config"}"\n')
    vmm = {"config": mf.MemoryBackend(bytearray(4096))}  # the VMM's config space (the mirror's)
    with simulated_bar0("gv100") as bar:  # a device-info table with no NVLink unit
        with caplog.at_level(logging.WARNING, logger="mmiofilter"):
            f, _ = attach(pf, mf.MemoryBackend(bar.buf), bar.size, targets=vmm)
        assert f.label == "0000:65:00.0/bar0"
        assert "lists no NVLink (IOCTRL) unit" in caplog.text
        f.write(0x300000, 4, 1)  # the VBIOS ROM window: firmware_update = "deny"
        assert f.drain_events()[0].label == "0000:65:00.0/bar0"
        with pytest.raises(mf.PolicyError, match=r"strict: .*no NVLink"):
            attach(pf, mf.MemoryBackend(bar.buf), bar.size, targets=vmm, strict=True)
        g, _ = attach(pf, mf.MemoryBackend(bar.buf), bar.size, targets=vmm, label="vm7/gpu0")
        assert g.label == "vm7/gpu0"
        del f, g
