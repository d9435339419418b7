"""What a CLI command acts on: a profile name or a policy file, turned into rules."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..devices import PolicyFile, Resolved, load_policy_file, profiles
from ..devices.nvidia import NvidiaProfile
from ..devices.regmap import RegisterMap
from ..rules import Policy
from .base import CliError


@dataclass(frozen=True)
class Source:
    label: str
    policy_file: PolicyFile

    def resolve(self) -> tuple[Policy, Resolved]:
        """The rules known without a device (device-info units are deferred)."""
        return self.policy_file.resolve(None)

    @property
    def register_map(self) -> RegisterMap | None:
        p = self.policy_file.profile
        return p.map if isinstance(p, NvidiaProfile) else None

    def bar_size(self, bar: int) -> int | None:
        m = self.register_map
        try:
            return m.bar(bar).size if m else None
        except KeyError:
            return None


def add_source_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="PROFILE|FILE", help="a profile name or a policy file")
    p.add_argument(
        "--option", "-o", action="append", default=[], metavar="NAME=VALUE",
        help="a profile option, when PROFILE is a profile name (repeatable)",
    )  # fmt: skip


def load_source(args: argparse.Namespace) -> Source:
    """A profile name (with --option choices) or a policy file path."""
    name: str = args.source
    if name in profiles():
        profile = profiles()[name]
        given: dict[str, object] = {}
        for item in args.option:
            key, sep, value = item.partition("=")
            if not sep:
                raise CliError(f"--option {item!r}: expected NAME=VALUE")
            given[key.strip()] = value.strip()
        choices = profile.choices(given, f"profile {name}")
        return Source(name, PolicyFile(where=name, extra=Policy([]), profile=profile,
                                       choices=choices))  # fmt: skip
    if args.option:
        raise CliError("--option applies to a profile name; a policy file has [options]")
    path = Path(name)
    if not path.is_file():
        raise CliError(f"{name}: neither a profile ({', '.join(profiles())}) nor a policy file")
    return Source(str(path), load_policy_file(path))
