"""`mmiofilter check`: does a policy compile, for every BAR it names at every page size asked,
and what should the admin know before deploying it. All problems at once, not the first.

Exit status: 0 valid (warnings allowed unless --strict), 1 invalid (or warnings under
--strict), 2 a usage error (no such file, bad option).
"""

from __future__ import annotations

import argparse
import mmap
import warnings
from collections.abc import Callable
from typing import Any

from ..backends import CallbackBackend
from ..devices import Resolved
from ..devices.nvidia import NvidiaProfile
from ..devices.pciconfig import ConfigError
from ..devices.targets import inert_targets
from ..errors import PolicyError
from ..filter import BarFilter
from ..guards import FspGuard
from ..lint import PolicyWarning, inert_rules
from ..policy_toml import parse_guard, parse_rule, read_document
from ..rules import Policy, Rule
from .base import bar_arg, human_size, page_sizes_arg, parse_size, print_json, register, table
from .source import Source, add_source_argument, load_source

EXIT_INVALID = 1
PCI_VENDOR_NVIDIA = 0x10DE  # include/linux/pci_ids.h PCI_VENDOR_ID_NVIDIA
PCI_BASE_CLASS_DISPLAY = 0x03  # include/linux/pci_ids.h: VGA 0x0300, 3D 0x0302, other 0x0380


def bar_size_arg(text: str) -> tuple[int | None, int]:
    """`16M` (for every BAR whose size is otherwise unknown) or `2=64K` (BAR 2)."""
    bar: int | None = None
    if "=" in text:
        b, _, text = text.partition("=")
        bar = bar_arg(b)
    try:
        return bar, parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _configure(p: argparse.ArgumentParser) -> None:
    add_source_argument(p)
    p.add_argument(
        "--page-size", type=page_sizes_arg, default=None, metavar="P[,P...]",
        help=f"page sizes to compile for, e.g. 4096,65536 (default: this host's, "
        f"{mmap.PAGESIZE})",
    )  # fmt: skip
    p.add_argument(
        "--bar-size", type=bar_size_arg, action="append", default=[], metavar="[BAR=]N",
        help="size of a BAR the device or profile does not give (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--strict", action="store_true",
        help="warnings are errors: unconfirmed facts the rules rely on, rules that do "
        "nothing, an NVIDIA GPU without an NVIDIA profile",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object, errors too")


# ---- collecting problems ------------------------------------------------------------------


def file_problems(path: str) -> list[str]:
    """Every malformed rule and guard of a policy file, each with its own message. The
    loader stops at the first; an admin fixing a file wants the list."""
    try:
        doc, where = read_document(path)
    except PolicyError as e:
        return [str(e)]
    out: list[str] = []
    for key, parse in (("rule", parse_rule), ("guard", parse_guard)):
        entries = doc.get(key, [])
        if not isinstance(entries, list):
            continue  # the loader says so
        parser: Callable[[object, int, str], Rule] = parse
        for i, entry in enumerate(entries):
            try:
                parser(entry, i, where)
            except PolicyError as err:
                out.append(str(err))
    return out


def _sizes(args: argparse.Namespace, source: Source, bars: list[int]) -> dict[int, int | None]:
    given: dict[int | None, int] = dict(args.bar_size)
    return {b: given.get(b) or source.bar_size(b) or given.get(None) for b in bars}


def compile_problems(
    policy: Policy, sizes: dict[int, int | None], page_sizes: list[int]
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Compile each BAR at each page size, as `layout` and the VMM will: the errors (one per
    distinct message, with the page sizes it occurs at), warnings, and what compiled.

    A BAR of unknown size is compiled as the smallest power of two holding its rules (BAR sizes
    are powers of two): enough to find every error that does not depend on the size, with a
    warning that the layout is not the device's."""
    errors: list[str] = []
    warns: list[str] = []
    compiled: list[dict[str, Any]] = []
    backend = CallbackBackend(lambda o, w: 0, lambda o, w, v: None)
    for bar, given in sizes.items():
        size = given
        if size is None:
            extent = max([r.end for r in policy.for_bar(bar)] + page_sizes)
            size = 1 << (extent - 1).bit_length()
            warns.append(
                f"BAR{bar}: size unknown, compiled as {human_size(size)} (the smallest BAR "
                f"holding its rules): give --device or --bar-size {bar}=SIZE for the real layout"
            )
        outside = [r for r in policy.for_bar(bar) if r.end > size]
        for r in outside:
            errors.append(
                f"rule {r.name!r}: [{r.start:#x}, {r.end:#x}) lies outside BAR{bar} of size "
                f"{size:#x}"
            )
        if outside:
            continue
        failed: dict[str, list[int]] = {}
        for ps in page_sizes:
            try:
                targets = inert_targets(policy, bar)  # the VMM's to hand; check touches none
                f = BarFilter(size, policy, backend, bar=bar, page_size=ps, targets=targets)
            except (PolicyError, ValueError) as e:
                failed.setdefault(str(e).removeprefix(f"BAR{bar}: "), []).append(ps)
                continue
            lay = f.layout
            compiled.append({"bar": bar, "bar_size": size, "size_known": given is not None,
                             "page_size": ps, "pages": lay.pages,
                             "trapped_pages": lay.trapped_count,
                             "direct_bytes": lay.direct_bytes})  # fmt: skip
        for msg, pss in failed.items():
            at = ", ".join(human_size(p) for p in pss)
            errors.append(f"BAR{bar} ({at} pages): does not compile: {msg}")
    return errors, warns, compiled


def policy_warnings(source: Source, policy: Policy, resolved: Resolved) -> list[str]:
    out = list(resolved.warnings)
    out += inert_rules(policy.rules)
    cfg = source.config
    if (
        cfg is not None
        and cfg.vendor == PCI_VENDOR_NVIDIA
        and cfg.class_code >> 16 == PCI_BASE_CLASS_DISPLAY
        and not isinstance(source.policy_file.profile, NvidiaProfile)
    ):
        kind = {0x00: "VGA", 0x02: "3D"}.get((cfg.class_code >> 8) & 0xFF, "display")
        out.append(
            f"device {cfg.vendor:04x}:{cfg.device:04x} is an NVIDIA {kind} controller no "
            "NVIDIA profile knows: the generic `pci` profile traps MSI-X only (no NVLink "
            "isolation, no firmware-path block); write the rules for this GPU"
        )
    return out


# ---- output -------------------------------------------------------------------------------


def rule_json(r: Rule) -> dict[str, Any]:
    d = {"name": r.name, "bar": r.bar, "start": r.start, "size": r.size, "action": r.action,
         "value": r.value, "mask": r.mask, "priority": r.priority}  # fmt: skip
    if isinstance(r, FspGuard):
        d.update(kind=r.kind, registers=r.register_ranges(), deny_types=sorted(r.deny_types))
        d.update(deny_prc=sorted(r.deny_prc))
    return d


def rule_row(r: Rule) -> list[str]:
    extra = f"mask={r.mask:#x} value={r.value:#x}" if r.action == "mask" else ""
    extra += f"value={r.value:#x}" if r.action == "emulate" else ""
    extra += f" priority={r.priority}" if r.priority else ""
    if isinstance(r, FspGuard):
        extra += f" kind={r.kind} deny_types={','.join(f'{t:#04x}' for t in sorted(r.deny_types))}"
        extra += f" deny_prc={','.join(f'{t:#04x}' for t in sorted(r.deny_prc))}"
    if r.action == "redirect":
        extra += f" -> {getattr(r, 'target', '?')}+{getattr(r, 'target_offset', 0):#x}"
    return [f"BAR{r.bar}", f"{r.start:#x}", f"{r.end:#x}", r.action, r.name, extra.strip()]


def by_offset(rules: tuple[Rule, ...]) -> list[Rule]:
    return sorted(rules, key=lambda r: (r.bar, r.start, r.end, r.name))


def _run(args: argparse.Namespace) -> int:
    pages: list[int] = args.page_size or [mmap.PAGESIZE]
    errors: list[str] = []
    source: Source | None = None
    policy: Policy | None = None
    resolved = Resolved(rules=[])
    compiled: list[dict[str, Any]] = []
    with warnings.catch_warnings():
        # check reports inert rules itself, once, in its own list
        warnings.simplefilter("ignore", PolicyWarning)
        try:
            source = load_source(args)
        except (PolicyError, ConfigError) as e:
            path = args.source
            errors = (file_problems(path) if path else []) or [str(e)]
        if source is not None:
            try:
                policy, resolved = source.resolve()
            except (PolicyError, ConfigError) as e:
                errors.append(str(e))
    warns: list[str] = []
    if source is not None and policy is not None:
        bars = sorted({r.bar for r in policy.rules} or {0})
        errs, size_warns, compiled = compile_problems(policy, _sizes(args, source, bars), pages)
        errors += errs
        warns = policy_warnings(source, policy, resolved) + size_warns
    valid = not errors
    ok = valid and not (args.strict and warns)
    status = 0 if ok else EXIT_INVALID
    label = source.label if source else (args.source or "")
    if args.json:
        out: dict[str, Any] = {"source": label, "ok": ok, "valid": valid, "strict": args.strict,
                               "errors": errors, "warnings": warns,
                               "deferred": resolved.deferred, "page_sizes": pages}  # fmt: skip
        if source is not None and policy is not None:
            pf = source.policy_file
            out.update(
                profile=pf.profile.name if pf.profile else None, options=pf.choices,
                device=source.address, fill=policy.fill, partial=policy.partial,
                unaligned=policy.unaligned,
                rules=[{**rule_json(r), "source": resolved.sources.get(r.name)}
                       for r in by_offset(policy.rules)],
                compiled=compiled,
            )  # fmt: skip
        print_json("check", out)
        return status
    if not valid:
        print(f"{label}: INVALID: {len(errors)} problem(s)")
        for problem in errors:
            print(f"ERROR: {problem}")
    else:
        verdict = "valid" if ok else f"valid, but --strict: {len(warns)} warning(s)"
        print(f"{label}: {verdict}")
    for w in warns:
        print(f"WARNING: {w}")
    if source is None or policy is None:
        return status
    pf = source.policy_file
    if pf.profile:
        opts = ", ".join(f"{k} = {v}" for k, v in pf.choices.items())
        print(f"profile: {pf.profile.name} ({opts})")
    if source.address:
        print(f"device: {source.address}")
    print(f"fill = {policy.fill:#04x}, partial = {policy.partial}, unaligned = {policy.unaligned}")
    print(f"rules ({len(policy.rules)}):")
    ordered = by_offset(policy.rules)
    for r, line in zip(ordered, table([rule_row(r) for r in ordered]), strict=True):
        print(line)
        if r.name in resolved.sources:
            print(f"      source: {' '.join(resolved.sources[r.name].split())}")
    if compiled:
        print("compiled:")
        rows = [
            [f"BAR{c['bar']}", human_size(c["bar_size"]), f"{human_size(c['page_size'])} pages",
             f"{c['trapped_pages']:,} of {c['pages']:,} trapped"]
            for c in compiled
        ]  # fmt: skip
        for line in table(rows):
            print(line)
    for note in resolved.deferred:
        print(f"deferred: {note}")
    return status


register(
    "check",
    "compile a policy file (or a profile) for every BAR it names and every page size asked; "
    "report every problem and warning",
    _configure,
    _run,
)
