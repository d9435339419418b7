"""Replay a real driver's MMIO trace through a policy before deploying it.

Parsers for Linux mmiotrace logs and QEMU vfio trace events turn a trace into items (accesses,
skipped accesses, malformed lines, notes); `replay()` runs the accesses through a `BarFilter`
over a model of the device and reports, per rule, what the policy would have passed, blocked,
masked or emulated, and which reads would have returned another value to the driver.
"""

from .engine import TraceDevice, replay
from .items import BarFound, DeviceError, Malformed, Note, Skipped, TraceAccess, TraceItem
from .mmiotrace import MmiotraceParser, parse_mmiotrace
from .qemu_vfio import QemuVfioParser, parse_qemu_vfio
from .report import NO_RULE, OUTCOMES, ChangedRead, ReplayReport, RuleStats
from .source import FORMATS, TraceSource, detect_format, open_trace, read_lines

__all__ = [
    "FORMATS",
    "NO_RULE",
    "OUTCOMES",
    "BarFound",
    "ChangedRead",
    "DeviceError",
    "Malformed",
    "MmiotraceParser",
    "Note",
    "QemuVfioParser",
    "ReplayReport",
    "RuleStats",
    "Skipped",
    "TraceAccess",
    "TraceDevice",
    "TraceItem",
    "TraceSource",
    "detect_format",
    "open_trace",
    "parse_mmiotrace",
    "parse_qemu_vfio",
    "read_lines",
    "replay",
]
