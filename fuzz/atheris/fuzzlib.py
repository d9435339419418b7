"""What every atheris harness shares: running `check(data)` under atheris, and reporting.

A harness module defines `check(data: bytes) -> None`, which raises on a finding and returns
on anything else (including the library's documented errors, which it catches itself). The
same function runs under atheris (`python fuzz/atheris/X_fuzz.py [libFuzzer flags]`) and in
pytest (tests/test_fuzz_findings.py), so a test needs no atheris to replay a finding.

Two environment variables, set by `fuzz/run`, let a campaign go on past a bug it already
found instead of stopping at its first crash for the rest of the budget:
- MF_FUZZ_KNOWN: a file of finding signatures (one a line) to ignore;
- MF_FUZZ_REPORT: a file to which a new finding appends one JSON line (signature, traceback).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

Check = Callable[[bytes], None]


#: What gets coverage instrumentation: the library and the TOML parser under it.
INSTRUMENTED = ["mmiofilter", "tomllib"]


@contextlib.contextmanager
def instrumented(campaign: bool) -> Iterator[None]:
    """Imports in this block get atheris' coverage instrumentation when `campaign` (the harness
    runs as a script); under pytest they are plain imports. Instrumenting only these modules
    starts in a second; `atheris.instrument_all()` took 16 s here, too slow for a CI smoke."""
    if not campaign:
        yield
        return
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    with atheris.instrument_imports(include=INSTRUMENTED):
        yield


def signature(exc: BaseException) -> str:
    """Type and innermost mmiofilter frame: one bug, one signature, whatever input hits it."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "mmiofilter" in f.filename and "/fuzz/" not in f.filename]
    if not frames:
        return type(exc).__name__
    where = (ours or frames)[-1]
    path = where.filename
    if "mmiofilter/" in path:
        path = "mmiofilter/" + path.rsplit("mmiofilter/", 1)[1]
    return f"{type(exc).__name__} at {path}:{where.lineno} in {where.name}"


def _known() -> set[str]:
    path = os.environ.get("MF_FUZZ_KNOWN")
    if not path or not Path(path).exists():
        return set()
    return {line for line in Path(path).read_text().splitlines() if line}


def _report(exc: BaseException, sig: str) -> None:
    path = os.environ.get("MF_FUZZ_REPORT")
    if not path:
        return
    text = "".join(traceback.format_exception(exc))
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"signature": sig, "traceback": text}) + "\n")


def fuzz(check: Check) -> None:
    """Run `check` under atheris with the command line's libFuzzer flags."""
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    known = _known()

    def one_input(data: bytes) -> None:
        try:
            check(data)
        except Exception as exc:  # RecursionError and AssertionError included: all findings
            sig = signature(exc)
            if sig in known:
                return  # already reported by this campaign: keep exploring past it
            _report(exc, sig)
            raise

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
