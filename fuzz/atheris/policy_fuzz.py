#!/usr/bin/env python3
"""Policy files: `Policy.from_toml` and `devices.load_policy_file(...).resolve(None)`.

Documented failure: PolicyError (README: "Bad input of any kind raises AccessError or
PolicyError"). A policy that parses must also compile in the C core for a 16 MiB BAR, or be
refused there with a PolicyError too: Python and C must agree on what a valid rule is.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzzlib import fuzz, instrumented

with instrumented(__name__ == "__main__"):
    import mmiofilter as mf
    from mmiofilter.devices import load_policy_file
    from mmiofilter.devices.policyfile import PolicyFile

BAR_SIZE = 16 << 20  # a V100's BAR0, the size the shipped profiles are written for


def _compile(policy: mf.Policy) -> None:
    backend = mf.CallbackBackend(lambda off, width: 0, lambda off, width, value: None)
    for bar in sorted({r.bar for r in policy.rules} or {0}):
        try:
            mf.BarFilter(BAR_SIZE, policy, backend, bar=bar, page_size=4096)
        except mf.PolicyError:
            pass  # a rule outside this BAR: refused, as documented


def check(data: bytes) -> None:
    # bytes, not str: a str without '\n' and '=' is taken for a path, and the fuzzer must not
    # open files.
    try:
        _compile(mf.Policy.from_toml(data))
    except mf.PolicyError:
        pass
    try:
        pf: PolicyFile = load_policy_file(data)
    except mf.PolicyError:
        return
    try:
        policy, _resolved = pf.resolve(None)
    except mf.PolicyError:
        return
    _compile(policy)


if __name__ == "__main__":
    fuzz(check)
