"""`mmiofilter profiles`, `show PROFILE` and `check FILE`: what profiles offer, what a policy
file compiles to."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..devices import profiles
from ..devices.nvidia import NvidiaProfile
from ..guards import FspGuard
from ..rules import Rule
from .base import CliError, register
from .source import add_source_argument, load_source


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _rule(r: Rule) -> dict[str, Any]:
    d = {"name": r.name, "bar": r.bar, "start": r.start, "size": r.size, "action": r.action,
         "value": r.value, "mask": r.mask, "priority": r.priority}  # fmt: skip
    if r.action == "redirect":
        d.update(target=r.target, target_offset=r.target_offset)
    if isinstance(r, FspGuard):
        d.update(kind=r.kind, registers=r.register_ranges(), deny_types=sorted(r.deny_types))
    return d


def _rule_line(r: Rule) -> str:
    extra = f" mask={r.mask:#x} value={r.value:#x}" if r.action == "mask" else ""
    extra += f" value={r.value:#x}" if r.action == "emulate" else ""
    extra += f" target={r.target}+{r.target_offset:#x}" if r.action == "redirect" else ""
    extra += f" priority={r.priority}" if r.priority else ""
    if isinstance(r, FspGuard):
        extra += f" kind={r.kind} deny_types={','.join(f'{t:#04x}' for t in sorted(r.deny_types))}"
    return f"  BAR{r.bar} [{r.start:#x}, {r.end:#x})  {r.action:<8} {r.name}{extra}"


def _run_profiles(args: argparse.Namespace) -> int:
    items = [
        {"name": p.name, "title": p.title, "ids": [f"{v:04x}:{d:04x}" for v, d in p.ids]}
        for p in profiles().values()
    ]
    if args.json:
        print(json.dumps({"profiles": items}, indent=2))
        return 0
    for it in items:
        ids = ", ".join(it["ids"]) or "any PCI device"
        print(f"{it['name']:<14} {it['title']}\n{'':<14} devices: {ids}")
    return 0


def _show_profile(args: argparse.Namespace) -> dict[str, Any]:
    if args.profile not in profiles():
        raise CliError(f"no profile {args.profile!r} (profiles: {', '.join(profiles())})")
    p = profiles()[args.profile]
    out: dict[str, Any] = {
        "name": p.name, "title": p.title,
        "ids": [f"{v:04x}:{d:04x}" for v, d in p.ids],
        "options": [{"name": o.name, "choices": list(o.choices), "default": o.default,
                     "help": o.help} for o in p.options],
        "regions": [],
    }  # fmt: skip
    if isinstance(p, NvidiaProfile):
        out["regions"] = [
            {"name": r.name, "kind": r.kind, "bar": r.bar, "offset": r.offset, "size": r.size,
             "category": r.category, "source": r.source, "confirmed": r.confirmed,
             "note": r.note}
            for r in p.map.regions
        ]  # fmt: skip
    return out


def _run_show(args: argparse.Namespace) -> int:
    out = _show_profile(args)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{out['name']}: {out['title']}")
    print(f"devices: {', '.join(out['ids']) or 'any PCI device'}")
    print("options:")
    for o in out["options"]:
        print(f"  {o['name']} = {' | '.join(o['choices'])}  (default {o['default']}): {o['help']}")
    if out["regions"]:
        print("register map:")
    for r in out["regions"]:
        flag = "" if r["confirmed"] else "  UNCONFIRMED"
        print(f"  BAR{r['bar']} [{r['offset']:#x}, {r['offset'] + r['size']:#x}) "
              f"{r['category']:<13} {r['name']}{flag}\n      source: {r['source']}")  # fmt: skip
    return 0


def _configure_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("profile", metavar="PROFILE", help="a profile name (see `profiles`)")
    _json_flag(p)


def _configure_check(p: argparse.ArgumentParser) -> None:
    add_source_argument(p)
    _json_flag(p)


def _run_check(args: argparse.Namespace) -> int:
    source = load_source(args)
    policy, resolved = source.resolve()
    pf = source.policy_file
    if args.json:
        print(json.dumps({
            "source": source.label,
            "profile": pf.profile.name if pf.profile else None,
            "options": pf.choices,
            "fill": policy.fill, "partial": policy.partial, "unaligned": policy.unaligned,
            "rules": [_rule(r) for r in policy.rules],
            "deferred": resolved.deferred, "warnings": resolved.warnings,
        }, indent=2))  # fmt: skip
        return 0
    print(f"{source.label}: valid")
    if pf.profile:
        opts = ", ".join(f"{k} = {v}" for k, v in pf.choices.items())
        print(f"profile: {pf.profile.name} ({opts})")
    print(f"fill = {policy.fill:#04x}, partial = {policy.partial}, unaligned = {policy.unaligned}")
    print(f"rules ({len(policy.rules)}):")
    for r in policy.rules:
        print(_rule_line(r))
    for note in resolved.deferred:
        print(f"deferred: {note}")
    for w in resolved.warnings:
        print(f"WARNING: {w}")
    return 0


register("profiles", "list the device profiles", _json_flag, _run_profiles)
register("show", "show a profile's options and register map", _configure_show, _run_show)
register(
    "check",
    "validate a policy file (or a profile with --option) and print the rules it compiles to",
    _configure_check,
    _run_check,
)
