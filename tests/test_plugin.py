"""The pytest plugin's fixtures work in a test suite that is not this package's.

`tests/plugin_consumer` holds such a suite: no conftest, no fixtures of its own, files named
`consumer_*.py` so that this package's run never collects them (where `tests/conftest.py` would
be in scope). Each test here copies it out of the repository and runs pytest on the copy in a
subprocess, so only the plugin can provide its fixtures; `-W error::...MappingKeptWarning`
makes a teardown that cannot unmap a device fail the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import mmiofilter

CONSUMER = Path(__file__).resolve().parent / "plugin_consumer"
PLUGIN = "mmiofilter.testing.pytest_plugin"
ENTRY_POINT = "mmiofilter"  # the name under [project.entry-points.pytest11]


def consumer_copy(tmp_path: Path) -> Path:
    """The consumer suite alone in a fresh directory, with an empty ini file as its root."""
    suite = tmp_path / "consumer"
    shutil.copytree(CONSUMER, suite, ignore=shutil.ignore_patterns("__pycache__"))
    assert not list(suite.rglob("conftest.py")), "the consumer suite must need no conftest"
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return suite


def run_pytest(tmp_path: Path, *plugin_args: str) -> subprocess.CompletedProcess[str]:
    suite = consumer_copy(tmp_path)
    # The same mmiofilter as this process, also when it is imported from the source tree
    # rather than installed. (Only modules come from there: conftest files are found by path.)
    source = str(Path(mmiofilter.__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *plugin_args,
            "-p",
            "no:cacheprovider",
            "-o",
            "python_files=consumer_*.py",
            "-W",
            f"error::{PLUGIN}.MappingKeptWarning",
            "-q",
            str(suite),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def check(run: subprocess.CompletedProcess[str]) -> None:
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    last = out.strip().splitlines()[-1]
    # every consumer test ran: none skipped for a missing fixture or dependency
    assert " passed" in last and "skipped" not in last and "error" not in last, last


def test_fixtures_with_the_plugin_named_on_the_command_line(tmp_path: Path) -> None:
    # `-p no:mmiofilter` first: when the entry point is installed too, pluggy would refuse the
    # same module under a second name.
    check(run_pytest(tmp_path, "-p", f"no:{ENTRY_POINT}", "-p", PLUGIN))


def test_fixtures_through_the_pytest11_entry_point(tmp_path: Path) -> None:
    installed = [ep for ep in entry_points(group="pytest11") if ep.name == ENTRY_POINT]
    if not installed:
        pytest.skip(
            "the pytest11 entry point is not installed: add it to pyproject.toml and "
            "pip install -e ."
        )
    assert installed[0].value == PLUGIN
    check(run_pytest(tmp_path))


def test_the_package_run_does_not_collect_the_consumer_suite(
    pytestconfig: pytest.Config,
) -> None:
    # Collected here, the consumer tests would run without the plugin (when it is not
    # installed) or next to tests/conftest.py, which proves nothing.
    patterns = pytestconfig.getini("python_files")
    assert not any(Path(p.name).match(pat) for p in CONSUMER.glob("*.py") for pat in patterns)
