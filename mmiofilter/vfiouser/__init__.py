"""Serve a filtered device over vfio-user (QEMU's docs/interop/vfio-user.rst).

`mmiofilter serve` runs `Server` over a `FilteredDevice`: a device source (`SimulatedSource`,
`VfioSource`) with a `BarFilter` in front of every BAR. The client (QEMU's vfio-user-pci)
maps the layout's direct areas and sends every other access as a message the filter decides.
See docs/vfio-user.md.
"""

from .device import FilteredDevice, ReloadRefused
from .server import Server
from .simulated import SimulatedSource
from .source import DeviceSource, SourceError

__all__ = [
    "DeviceSource",
    "FilteredDevice",
    "ReloadRefused",
    "Server",
    "SimulatedSource",
    "SourceError",
]
