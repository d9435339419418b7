"""`mmiofilter demo`: a guest driver against a simulated V100 under the default policy."""

from __future__ import annotations

import argparse

from .base import register


def _configure(p: argparse.ArgumentParser) -> None:
    del p  # no options: the demo is one fixed scenario


def _run(args: argparse.Namespace) -> int:
    from ..kvm.demo import run_demo  # the KVM package only when the demo runs

    return 0 if run_demo() else 1


register(
    "demo",
    "boot a guest against a simulated V100 BAR0 under the default policy and show what the "
    "filter passed, masked and blocked",
    _configure,
    _run,
)
