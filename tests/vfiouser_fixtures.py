"""A served simulated GV100 for the vfio-user tests: the server in a thread, a source that
records every access reaching the device, and a policy the test may change before a reload."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from mmiofilter.backends import Backend, CallbackBackend
from mmiofilter.devices import PolicyFile, get_profile, load_policy_file
from mmiofilter.rules import Policy
from mmiofilter.vfiouser import FilteredDevice, Server, SimulatedSource

#: The mirror setting the tests use: the profile's default (redirected to the config space).
MIRROR = "virtualize"

NV_PMC_ENABLE, NVLINK_BIT = 0x200, 1 << 25
LINK_DISABLE, LINK_FIELD = 0xA00148, 0x3F0000
ISOLATED_LINKS = 0x3C0000  # KEEP_LINKS 0x030000 kept: links 2..5 disabled


class RecordingSource(SimulatedSource):
    """The simulated device, with every BAR access that reaches it logged."""

    def __init__(self) -> None:
        super().__init__("nvidia-gv100")
        self.log: list[tuple[int, int, bool, int]] = []

    def bar_backend(self, index: int) -> Backend:
        def read(offset: int, width: int) -> int:
            self.log.append((offset, width, False, 0))
            return self.bar.device_read(offset, width)

        def write(offset: int, width: int, value: int) -> None:
            self.log.append((offset, width, True, value))
            self.bar.device_write(offset, width, value)

        return CallbackBackend(read, write)


def profile_policy(extra_toml: str = "", mirror: str = MIRROR) -> str:
    return f'profile = "nvidia-gv100"\n[options]\nconfig_mirror = "{mirror}"\n{extra_toml}'


@dataclass
class Served:
    path: str
    source: RecordingSource
    device: FilteredDevice
    server: Server
    thread: threading.Thread
    policy: list[str] = field(default_factory=list)  # the current policy text

    def isolation_holds(self) -> bool:
        bar = self.source.bar
        return bool(
            bar.read32(NV_PMC_ENABLE) & NVLINK_BIT
            and bar.read32(LINK_DISABLE) & LINK_FIELD == ISOLATED_LINKS
        )


def serve(policy_text: str | None = None) -> Iterator[Served]:
    text = [policy_text if policy_text is not None else profile_policy()]

    def load() -> PolicyFile:
        return load_policy_file(text[0])

    source = RecordingSource()
    device = FilteredDevice(source, load)
    source.log.clear()  # attach's discovery reads, before any client
    path = os.path.join(tempfile.mkdtemp(prefix="vfu-"), "dev.sock")
    server = Server(device, path)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    s = Served(path, source, device, server, thread, text)
    try:
        yield s
    finally:
        server.request_stop()
        thread.join(10)
        device.close()


def defaults_policy_file() -> PolicyFile:
    prof = get_profile("nvidia-gv100")
    return PolicyFile(where="defaults", extra=Policy([]), profile=prof, choices=prof.choices({}))
