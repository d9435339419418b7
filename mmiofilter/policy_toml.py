"""Policy files: TOML text or a path, parsed into a Policy with errors that say where.

    fill = 0xFF            # optional, default 0xFF
    partial = "deny"       # optional: "deny" | "split"
    unaligned = "allow"    # optional: "allow" | "deny"

    [[rule]]
    name = "pmc-enable-nvlink"
    start = 0x200
    size = 4
    action = "mask"        # allow | audit | readonly | mask | redirect | emulate | deny
    mask = 0x02000000      # optional, default 0
    value = 0x02000000     # optional, default 0
    priority = 0           # optional, default 0
    bar = 0                # optional, default 0

    [[rule]]               # a redirect rule: its bytes are served by a target backend
    name = "pcfg-mirror"
    start = 0x88000
    size = 0x1000
    action = "redirect"
    target = "config"      # a target the filter is given (BarFilter(..., targets=...))
    target_offset = 0      # optional, default 0: where the rule's first byte lands

    [[guard]]              # a stateful guard (docs/fsp-guard.md)
    name = "fsp"
    kind = "fsp"           # the FSP mailbox guard; the only kind so far
    deny_types = [0x12, "inforom"]   # optional, default [0x12] (FIRMWARE_UPDATE)
    deny_prc = ["nvlink_mask", 0x01] # optional PRC (0x13) sub-messages refused, default []
    emem = 0x8F2AC0        # optional register blocks, default GH100's; queue, msgq likewise
    channels = 4           # optional, default 4: channels the guest may use (not GH100's PMU/SOE 4)
    max_packet = 1024      # optional, default 1024: the channel size
    priority = 1           # optional, default 0
    bar = 0                # optional, default 0

Unknown keys are errors: a misspelt `acton = "deny"` must not silently become no rule.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from .errors import PolicyError, shown
from .guards import FspGuard
from .rules import Policy, Rule

TOP_KEYS = {"fill", "partial", "unaligned", "rule", "guard"}
GUARD_KEYS = {
    "name",
    "kind",
    "deny_types",
    "deny_prc",
    "emem",
    "queue",
    "msgq",
    "channels",
    "max_packet",
    "priority",
    "bar",
}
GUARD_KINDS = ("fsp",)
RULE_KEYS = {
    "name",
    "start",
    "size",
    "action",
    "value",
    "mask",
    "priority",
    "bar",
    "target",
    "target_offset",
}
RULE_REQUIRED = ("name", "start", "size", "action")


def _read_source(source: object) -> tuple[str, str]:
    """(text, where) from a path or TOML text. A str is a path when it has no newline and no
    '=' (no TOML document can lack both and still hold a rule)."""
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and "=" not in source
    ):
        path = Path(os.fspath(source))
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as e:
            raise PolicyError(f"{path}: cannot read the policy file: {e}") from None
    if isinstance(source, bytes):
        try:
            return source.decode("utf-8"), "<policy>"
        except UnicodeDecodeError as e:
            raise PolicyError(f"<policy>: not UTF-8: {e}") from None
    if isinstance(source, str):
        return source, "<policy>"
    raise PolicyError(f"policy source must be TOML text or a path, not {type(source).__name__}")


def _entry(
    entry: object, what: str, index: int, where: str, keys: set[str]
) -> tuple[dict[str, Any], str]:
    """Check that a `[[rule]]` or `[[guard]]` entry is a table with known keys only; return it
    and the label its errors start with (by name when it has one)."""
    label = f"{where}: {what} #{index}"
    if not isinstance(entry, dict):
        raise PolicyError(f"{label}: must be a table")
    if isinstance(entry.get("name"), str):
        label += f" ({entry['name']!r})"
    unknown = sorted(set(entry) - keys)
    if unknown:
        raise PolicyError(f"{label}: unknown field(s) {', '.join(unknown)}")
    return entry, label


def _check_types(entry: dict[str, Any], label: str, strings: set[str], skip: set[str]) -> None:
    """Fields in `strings` are strings, the others (but `skip`) integers (and not bools)."""
    for key, v in entry.items():
        if key in skip:
            continue
        want = str if key in strings else int
        if not isinstance(v, want) or isinstance(v, bool):
            raise PolicyError(
                f"{label}: field '{key}' must be {'a string' if want is str else 'an integer'},"
                f" not {shown(v)}"
            )


def parse_rule(entry: object, index: int, where: str) -> Rule:
    """One `[[rule]]` table; errors name the rule (by name when it has one) and the field."""
    entry, label = _entry(entry, "rule", index, where, RULE_KEYS)
    for key in RULE_REQUIRED:
        if key not in entry:
            raise PolicyError(f"{label}: missing field '{key}'")
    _check_types(entry, label, {"name", "action", "target"}, set())
    try:
        return Rule(**entry)
    except PolicyError as e:
        raise PolicyError(f"{where}: {e}") from None


def parse_guard(entry: object, index: int, where: str) -> FspGuard:
    """One `[[guard]]` table, checked like a rule."""
    entry, label = _entry(entry, "guard", index, where, GUARD_KEYS)
    for key in ("name", "kind"):
        if key not in entry:
            raise PolicyError(f"{label}: missing field '{key}'")
    _check_types(entry, label, {"name", "kind"}, {"deny_types", "deny_prc"})
    if entry["kind"] not in GUARD_KINDS:
        raise PolicyError(
            f"{label}: kind {shown(entry['kind'])} is not one of {', '.join(GUARD_KINDS)}"
        )
    deny = entry.get("deny_types", [0x12])
    deny_prc = entry.get("deny_prc", [])
    for key, v in (("deny_types", deny), ("deny_prc", deny_prc)):
        if not isinstance(v, list):
            raise PolicyError(f"{label}: {key} must be a list, not {shown(v)}")
    lists = ("name", "kind", "deny_types", "deny_prc")
    args = {k: v for k, v in entry.items() if k not in lists}
    try:
        return FspGuard.at(entry["name"], deny_types=deny, deny_prc=deny_prc, **args)
    except PolicyError as e:
        raise PolicyError(f"{where}: {e}") from None


def read_document(source: object) -> tuple[dict[str, Any], str]:
    """The parsed TOML of a policy source, and a name for it in messages."""
    text, where = _read_source(source)
    try:
        return tomllib.loads(text), where
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{where}: invalid TOML: {e}") from None
    except ValueError as e:  # an integer of thousands of digits (int_max_str_digits)
        raise PolicyError(f"{where}: invalid TOML: {e}") from None
    except RecursionError:
        raise PolicyError(f"{where}: invalid TOML: nested too deeply") from None


def policy_from_document(
    doc: dict[str, Any], where: str, extra_keys: frozenset[str] = frozenset()
) -> Policy:
    """The Policy of a parsed file; `extra_keys` are top-level keys a caller handles itself
    (a device policy file's profile and options)."""
    unknown = sorted(set(doc) - TOP_KEYS - extra_keys)
    if unknown:
        hint = (
            " (a device policy file: load it with mmiofilter.devices.load_policy_file)"
            if {"profile", "device", "options", "config"} & set(unknown)
            else ""
        )
        raise PolicyError(f"{where}: unknown key(s) {', '.join(unknown)}{hint}")
    entries = doc.get("rule", [])
    if not isinstance(entries, list):
        raise PolicyError(f"{where}: 'rule' must be an array of tables ([[rule]])")
    rules: list[Rule] = [parse_rule(e, i, where) for i, e in enumerate(entries)]
    guards = doc.get("guard", [])
    if not isinstance(guards, list):
        raise PolicyError(f"{where}: 'guard' must be an array of tables ([[guard]])")
    rules += [parse_guard(e, i, where) for i, e in enumerate(guards)]
    options = {k: doc[k] for k in ("fill", "partial", "unaligned") if k in doc}
    try:
        return Policy(rules, **options)
    except PolicyError as e:
        raise PolicyError(f"{where}: {e}") from None


def policy_from_toml(source: object) -> Policy:
    doc, where = read_document(source)
    return policy_from_document(doc, where)
