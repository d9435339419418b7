"""mmiofilter.testing works in a test suite that is not this package's.

`tests/plugin_consumer` holds such a suite: no conftest, no fixtures of its own, files named
`consumer_*.py` so that this package's run never collects them (where `tests/conftest.py` would
be in scope). The tests here copy it out of the repository, with the examples of
docs/testing-helpers.md (and of the README, once it carries them) written out as test files, and
run pytest on the copy in a subprocess, so only the plugin and the helpers can provide what it
uses; `-W error::...MappingKeptWarning` makes a teardown that cannot release a device fail.

The main proof runs against the installed wheel: it is built, installed into a fresh virtual
environment (with the system's site-packages for pytest, hypothesis and cffi), and the suite
runs with that environment's Python from a directory with no conftest.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import mmiofilter

ROOT = Path(__file__).resolve().parent.parent
CONSUMER = ROOT / "tests" / "plugin_consumer"
PLUGIN = "mmiofilter.testing.pytest_plugin"
ENTRY_POINT = "mmiofilter"  # the name under [project.entry-points.pytest11]
WARNING = f"error::{PLUGIN}.MappingKeptWarning"
#: The consumer files that exercise the fixtures; the installed-wheel run takes them all.
FIXTURE_FILES = ("consumer_basic.py", "consumer_factories_given.py", "consumer_strategies.py")
#: Documents whose marked examples must run as written.
DOCUMENTS = (ROOT / "docs" / "testing-helpers.md", ROOT / "README.md")
#: What a source tree holds that is not source: build output, caches, environments.
NOT_SOURCE = (
    ".git", ".venv*", "venv*", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", "*.so", "*.o", "*.a", "_core.c", "fuzz",
)  # fmt: skip
#: This environment's pip, installing into another one (pip >= 22.3).
PIP_INSTALL = (sys.executable, "-m", "pip", "--python")
_EXAMPLE = re.compile(r"<!-- example: (\w+) -->\s*```python\n(.*?)```", re.S)


def doc_examples() -> dict[str, str]:
    """`{file name: code}` of every marked example in DOCUMENTS."""
    out: dict[str, str] = {}
    for doc in DOCUMENTS:
        if doc.is_file():
            for name, code in _EXAMPLE.findall(doc.read_text(encoding="utf-8")):
                out[f"consumer_{doc.stem.replace('-', '_').lower()}_{name}.py"] = code
    return out


def consumer_copy(tmp_path: Path, files: Sequence[str] | None = None) -> Path:
    """The consumer suite (or `files` of it) alone in a fresh directory, with the documents'
    examples, and an empty ini file as its root."""
    suite = tmp_path / "consumer"
    shutil.copytree(CONSUMER, suite, ignore=shutil.ignore_patterns("__pycache__"))
    if files is not None:
        for p in suite.glob("consumer_*.py"):
            if p.name not in files:
                p.unlink()
    else:
        for name, code in doc_examples().items():
            (suite / name).write_text(code, encoding="utf-8")
    assert not list(suite.rglob("conftest.py")), "the consumer suite must need no conftest"
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return suite


def pytest_command(python: str, suite: Path, *plugin_args: str) -> list[str]:
    return [
        python,
        "-m",
        "pytest",
        *plugin_args,
        "-p",
        "no:cacheprovider",
        "-o",
        "python_files=consumer_*.py",
        "-W",
        WARNING,
        "-q",
        str(suite),
    ]


def source_env() -> dict[str, str]:
    # The same mmiofilter as this process, also when it is imported from the source tree
    # rather than installed. (Only modules come from there: conftest files are found by path.)
    source = str(Path(mmiofilter.__file__).resolve().parent.parent)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])),
    }


def run_pytest(tmp_path: Path, *plugin_args: str) -> subprocess.CompletedProcess[str]:
    suite = consumer_copy(tmp_path, FIXTURE_FILES)
    return subprocess.run(
        pytest_command(sys.executable, suite, *plugin_args),
        cwd=tmp_path,
        env=source_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def check(run: subprocess.CompletedProcess[str], *, skipped: int = 0) -> str:
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    last = out.strip().splitlines()[-1]
    # every consumer test ran: none skipped for a missing fixture or dependency
    assert " passed" in last and "error" not in last, last
    assert (f"{skipped} skipped" in last) if skipped else ("skipped" not in last), last
    return last


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


def test_the_docs_carry_the_given_example() -> None:
    examples = doc_examples()
    assert "consumer_testing_helpers_given.py" in examples
    assert "@given(" in examples["consumer_testing_helpers_given.py"]
    readme = {k: v for k, v in examples.items() if k.startswith("consumer_readme_")}
    for name, code in readme.items():  # once the README carries the example, the same one
        assert code == examples[name.replace("readme", "testing_helpers")], name


# ---- against the installed wheel ------------------------------------------------------------


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with the wheel built from this tree installed: its Python.
    The system's site-packages give it pytest, hypothesis and cffi."""
    tmp = tmp_path_factory.mktemp("wheel")
    source, dist, venv = tmp / "source", tmp / "dist", tmp / "venv"
    # A clean copy: setuptools builds in the source tree and never prunes its build/, where a
    # module deleted since the last build would live on and end up in the wheel.
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(dist)],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = list(dist.glob("mmiofilter-*.whl"))
    assert len(wheels) == 1, wheels
    # No pip of its own (ensurepip costs seconds): this environment's pip installs into it.
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=120,
    )
    python = str(venv / "bin" / "python")
    have = subprocess.run(
        [python, "-c", "import pytest, hypothesis, cffi"], capture_output=True, text=True
    )
    if have.returncode != 0:
        pytest.skip(f"the system Python lacks pytest, hypothesis or cffi: {have.stderr[-200:]}")
    installed = subprocess.run(
        [*PIP_INSTALL, python, "install", "-q", "--no-deps", "--no-index", str(wheels[0])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    yield Path(python)


def clean_env() -> dict[str, str]:
    """No PYTHONPATH: only what the environment installed is importable."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_the_installed_wheel_passes_the_consumer_suite(
    installed_venv: Path, tmp_path: Path
) -> None:
    venv = installed_venv.parent.parent
    where = subprocess.run(
        [str(installed_venv), "-c", f"import {PLUGIN} as p, mmiofilter; print(p.__file__)"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    # the wheel's files, not the source tree's (nor another installation's)
    assert Path(where.stdout.strip()).resolve().is_relative_to(venv.resolve()), where.stdout
    suite = consumer_copy(tmp_path)
    assert any(suite.glob("consumer_testing_helpers_*.py"))
    run = subprocess.run(
        pytest_command(str(installed_venv), suite),
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    check(run)


def test_the_installed_helpers_under_unittest(installed_venv: Path, tmp_path: Path) -> None:
    # No pytest at all: the helpers and strategies in a unittest TestCase.
    suite = consumer_copy(tmp_path)
    run = subprocess.run(
        [
            str(installed_venv),
            "-m",
            "unittest",
            "-q",
            "consumer_helpers",
            "consumer_testing_helpers_unittest",
        ],
        cwd=suite,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"Ran [1-9]\d* tests?", run.stderr), run.stderr


# ---- without hypothesis ---------------------------------------------------------------------

BLOCK_HYPOTHESIS = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoHypothesis(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "hypothesis" or name.startswith("hypothesis."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, NoHypothesis())
    """
)

WITHOUT_HYPOTHESIS_TESTS = textwrap.dedent(
    """
    import sys

    import pytest

    import mmiofilter as mf
    import mmiofilter.testing as t
    from mmiofilter.testing import (
        GpuSpec, Send, assert_fsp_guarded, bar_filter, device_of, fake_device, model_filter,
        run_mailbox, simulated_gpu,
    )


    def test_fixtures(mmio_device, bar_filter_factory, model_filter_factory):
        f = bar_filter_factory([mf.Rule("x", 0, 4, "deny")], device=mmio_device)
        assert f.read(0, 4) == 0xFFFFFFFF
        assert model_filter_factory([]).read(0, 4) == 0


    def test_plain_helpers():
        with fake_device(0x1000) as dev, bar_filter([], device=dev, backend="fd") as f:
            f.write(0, 4, 5)
            assert dev.read32(0) == 5 and device_of(f) is dev
        assert model_filter([]).read(0, 4) == 0
        with simulated_gpu(GpuSpec("gh100")) as gpu:
            f, _ = gpu.attach()
            run_mailbox(f, [Send(0x12, bytes(8))])
            assert_fsp_guarded(gpu.fsp, {0x12})
        assert "hypothesis" not in sys.modules


    def test_a_strategy_name_says_what_it_needs():
        with pytest.raises(ImportError, match="pip install mmiofilter.testing."):
            t.profile_policies


    def test_strategies_fixture_skips(mmio_strategies):
        raise AssertionError("mmio_strategies must skip without hypothesis")
    """
)


def test_the_plugin_and_helpers_work_without_hypothesis(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_no_hypothesis.py").write_text(WITHOUT_HYPOTHESIS_TESTS)
    # hypothesis' own pytest plugin cannot load either: block it as the missing package would
    main = (
        f"{BLOCK_HYPOTHESIS}\nimport pytest\n"
        "sys.exit(pytest.main(['-p', 'no:hypothesispytest', '-p', 'no:cacheprovider', "
        f"'-p', 'no:{ENTRY_POINT}', '-p', '{PLUGIN}', "
        f"'-W', '{WARNING}', '-q', '-rs', 'test_no_hypothesis.py']))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", main],
        cwd=tmp_path,
        env=source_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = check(run, skipped=1)
    assert "3 passed" in last, last
    assert "mmio_strategies needs hypothesis" in run.stdout, run.stdout
