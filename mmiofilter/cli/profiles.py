"""`mmiofilter profiles` and `show PROFILE|VENDOR:DEVICE`: what profiles offer."""

from __future__ import annotations

import argparse
from typing import Any

from ..devices import profile_for_ids, profiles
from ..devices.nvidia import NvidiaProfile
from ..devices.profile import Profile
from .base import CliError, did_you_mean, print_json, register, table


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _ids(p: Profile) -> list[str]:
    return [f"{v:04x}:{d:04x}" for v, d in p.ids]


def _run_profiles(args: argparse.Namespace) -> int:
    items: list[dict[str, Any]] = [
        {"name": p.name, "title": p.title, "ids": _ids(p)} for p in profiles().values()
    ]
    if args.json:
        print_json("profiles", {"profiles": items})
        return 0
    for line in table([[it["name"], it["title"]] for it in items], indent=""):
        print(line)
    print()
    for line in table([[it["name"], ", ".join(it["ids"]) or "any PCI device"] for it in items],
                      indent=""):  # fmt: skip
        print(line)
    return 0


def _find(text: str) -> tuple[Profile, str | None]:
    """A profile by name, or the one a `vendor:device` PCI ID gets (with a note when that is
    the generic profile)."""
    if text in profiles():
        return profiles()[text], None
    v, sep, d = text.partition(":")
    if sep:
        try:
            vendor, device = int(v, 16), int(d, 16)
        except ValueError:
            vendor = device = -1
        if 0 <= vendor <= 0xFFFF and 0 <= device <= 0xFFFF:
            p = profile_for_ids(vendor, device)
            note = None
            if not p.ids:
                note = (f"no profile is made for {vendor:04x}:{device:04x}: it gets the generic "
                        f"{p.name!r} profile")  # fmt: skip
            return p, note
    raise CliError(
        f"no profile {text!r}{did_you_mean(text, list(profiles()))} (profiles: "
        f"{', '.join(profiles())}; or a PCI ID vendor:device such as 10de:1db1)"
    )


def _show_profile(p: Profile) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": p.name, "title": p.title, "ids": _ids(p),
        "options": [{"name": o.name, "choices": list(o.choices), "default": o.default,
                     "help": o.help} for o in p.options],
        "regions": [],
    }  # fmt: skip
    if isinstance(p, NvidiaProfile):
        regions = sorted(p.map.regions, key=lambda r: (r.bar, r.offset, -r.size, r.name))
        out["regions"] = [
            {"name": r.name, "kind": r.kind, "bar": r.bar, "offset": r.offset, "size": r.size,
             "category": r.category, "source": r.source, "confirmed": r.confirmed,
             "note": r.note}
            for r in regions
        ]  # fmt: skip
    return out


def _run_show(args: argparse.Namespace) -> int:
    profile, note = _find(args.profile)
    out = _show_profile(profile)
    if args.json:
        print_json("show", {"query": args.profile, "note": note, **out})
        return 0
    if note:
        print(f"note: {note}")
    print(f"{out['name']}: {out['title']}")
    print(f"devices: {', '.join(out['ids']) or 'any PCI device'}")
    print("options:")
    rows = [[o["name"], " | ".join(o["choices"]) or "(list)", f"default {o['default']!r}",
             o["help"]] for o in out["options"]]  # fmt: skip
    for line in table(rows):
        print(line)
    if out["regions"]:
        print("register map:")
        rows = [[f"BAR{r['bar']}", f"{r['offset']:#x}", f"{r['offset'] + r['size']:#x}",
                 r["category"], r["name"], "" if r["confirmed"] else "UNCONFIRMED"]
                for r in out["regions"]]  # fmt: skip
        for line in table(rows):
            print(line)
    return 0


def _configure_show(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "profile", metavar="PROFILE|VENDOR:DEVICE",
        help="a profile name (see `profiles`) or a PCI ID such as 10de:1db1",
    )  # fmt: skip
    _json_flag(p)


register("profiles", "list the device profiles", _json_flag, _run_profiles)
register(
    "show", "show a profile's options and register map (by name or PCI ID)", _configure_show,
    _run_show,
)  # fmt: skip
