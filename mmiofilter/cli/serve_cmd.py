"""`mmiofilter serve`: a filtered device for an unmodified QEMU, over vfio-user."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from ..devices import PolicyFile, get_profile, load_policy_file
from ..rules import Policy
from .base import CliError, register


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "policy", nargs="?", metavar="POLICY",
        help="a policy file (default with --simulate: the profile's defaults)",
    )  # fmt: skip
    p.add_argument("--socket", required=True, metavar="PATH", help="the UNIX socket to serve on")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--simulate", metavar="PROFILE",
        help="serve the project's simulated device for PROFILE (nvidia-gv100)",
    )  # fmt: skip
    src.add_argument(
        "--vfio", metavar="DEVICE",
        help="serve a real device bound to vfio-pci: /dev/vfio/devices/vfioN (iommufd) or a "
        "PCI address such as 0000:3b:00.0 (its VFIO group)",
    )  # fmt: skip
    p.add_argument("--verbose", "-v", action="store_true", help="log every refused access too")


def _loader(args: argparse.Namespace) -> tuple[Callable[[], PolicyFile], str]:
    if args.policy is not None:
        path = Path(args.policy)
        if not path.is_file():
            raise CliError(f"policy {args.policy}: no such file")
        return (lambda: load_policy_file(path)), str(path)
    if args.simulate is None:
        raise CliError("--vfio needs a POLICY file (the admin's choices for this device)")
    profile = get_profile(args.simulate, "--simulate")

    def defaults() -> PolicyFile:
        return PolicyFile(
            where=f"profile {profile.name} (defaults)",
            extra=Policy([]),
            profile=profile,
            choices=profile.choices({}, f"profile {profile.name}"),
        )

    return defaults, f"profile {profile.name} defaults"


def _run(args: argparse.Namespace) -> int:
    from ..vfiouser import DeviceSource, FilteredDevice, Server, SourceError

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="mmiofilter serve: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    load, _ = _loader(args)
    source: DeviceSource
    try:
        if args.simulate is not None:
            from ..vfiouser.simulated import SimulatedSource

            source = SimulatedSource(args.simulate)
        else:
            from ..vfiouser.vfio import VfioSource

            source = VfioSource(args.vfio)
    except SourceError as e:
        raise CliError(str(e)) from None
    try:
        device = FilteredDevice(source, load)
    except BaseException:
        source.close()
        raise
    try:
        server = Server(device, args.socket)
    except BaseException:
        device.close()
        raise
    server.install_signals()
    try:
        server.serve()
    finally:
        server.restore_signals()
        device.close()
    return 0


register(
    "serve",
    "serve a filtered device to QEMU's vfio-user-pci over a UNIX socket (SIGHUP reloads the "
    "policy)",
    _configure,
    _run,
)
