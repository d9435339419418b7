"""The repository documents itself: the contract lives in docs/, nothing cites a design file
outside the repository, and every relative link in the README and docs/ leads to a file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _project_files() -> list[Path]:
    r = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:
        pytest.skip("needs a git checkout to know which files are the project's")
    return [ROOT / p for p in r.stdout.splitlines() if (ROOT / p).is_file()]


def test_nothing_cites_a_design_file_outside_the_repository() -> None:
    bad = re.compile(r"DESIGN(\.md| §)|\.\./shared")
    this = Path(__file__).resolve()
    hits = []
    for path in _project_files():
        if path == this or path.suffix not in {".py", ".c", ".h", ".md", ".toml", ".txt", ""}:
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if bad.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert hits == []


@pytest.mark.parametrize(
    "doc", ["README.md", *sorted(p.name for p in (ROOT / "docs").glob("*.md"))]
)
def test_relative_links_resolve(doc: str) -> None:
    path = ROOT / doc if doc == "README.md" else ROOT / "docs" / doc
    broken = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (path.parent / target.split("#", 1)[0]).exists():
            broken.append(target)
    assert broken == []


def test_the_contract_covers_the_public_api() -> None:
    contract = (ROOT / "docs/contract.md").read_text()
    for name in ("BarFilter", "Policy", "Rule", "MemoryBackend", "FdBackend", "CallbackBackend",
                 "AccessError", "PolicyError", "drain_events", "counters", "update",
                 "mf_table_compile", "mf_filter_new", "mf_access_mmio", "mf_filter_update",
                 "mf_filter_free", "mf_version", "read-direct", "redirect"):  # fmt: skip
        assert name in contract, name
