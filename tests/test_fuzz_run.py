"""fuzz/run, the campaign runner: results streamed as each harness finishes, progress lines,
libFuzzer's fork mode, merging into a corpus directory, and the JSON report.

These run the C harnesses (the quickest to start) for a few seconds each; they skip, saying
why, where clang cannot build them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
RUN = FUZZ / "run"
RUN_CMD = [sys.executable, str(RUN)]


@pytest.fixture(scope="module", autouse=True)
def c_harnesses() -> None:
    if not shutil.which("clang") or not shutil.which("make"):
        pytest.skip("clang or make is not installed (apt-get install clang)")
    build = subprocess.run(["make", "-C", str(FUZZ), "-s"], capture_output=True, text=True)
    if build.returncode != 0 and "fuzzer" in build.stderr:
        pytest.skip(f"clang cannot link libFuzzer here: {build.stderr.strip()[:200]}")
    assert build.returncode == 0, build.stderr


def test_each_harness_is_reported_as_it_finishes_with_progress_lines(tmp_path: Path) -> None:
    """One at a time, core then guard: core's line must arrive while guard still runs, and
    progress lines come every second with executions, rate and coverage."""
    proc = subprocess.Popen(
        [
            *RUN_CMD,
            "--time",
            "3",
            "--jobs",
            "1",
            "--progress",
            "1",
            "--findings",
            str(tmp_path),
            "core",
            "guard",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    arrivals: list[tuple[float, str]] = []
    for line in proc.stdout:
        arrivals.append((time.monotonic(), line.rstrip("\n")))
    end = time.monotonic()
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    done = {line.split()[0]: t for t, line in arrivals if line.split()[:1] in (["core"], ["guard"])}
    assert set(done) == {"core", "guard"}, arrivals
    # core's 3-second budget ended while guard's ran: its line was out seconds before the end
    assert end - done["core"] >= 2, arrivals
    progress = [line for _, line in arrivals if line.startswith("progress: ")]
    assert len(progress) >= 3, arrivals
    running = [p for p in progress if " execs " in p and " cov " in p and "/s" in p]
    assert any("core" in p for p in running) and any("guard" in p for p in running), progress


def test_fork_runs_one_harness_as_parallel_libfuzzer_jobs(tmp_path: Path) -> None:
    run = subprocess.run(
        [*RUN_CMD, "--time", "5", "--fork", "2", "--json", "--findings", str(tmp_path), "core"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(run.stdout)  # stdout holds the JSON document alone
    (core,) = doc["results"]
    assert core["harness"] == "core" and core["fork"] == 2
    assert core["jobs_started"] >= 2, core  # libFuzzer's fork parent started the jobs
    assert core["execs"] > 0 and core["cov"] and core["cov"] > 0, core
    assert "2 forked jobs" in run.stderr


def test_fork_takes_one_harness() -> None:
    run = subprocess.run(
        [sys.executable, str(RUN), "--time", "1", "--fork", "2", "core", "guard"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "--fork runs one harness" in run.stderr


def test_merge_adds_new_coverage_to_a_shared_corpus_dir(tmp_path: Path) -> None:
    """--corpus DIR --merge: what the run found that adds coverage lands in DIR/<harness>,
    named by content (so machines merging into one shared directory do not collide)."""
    shared = tmp_path / "shared" / "core"
    shared.mkdir(parents=True)
    for p in sorted((FUZZ / "corpus" / "core").iterdir())[:10]:
        shutil.copy(p, shared / p.name)
    committed = sorted(p.name for p in (FUZZ / "corpus" / "core").iterdir())

    def campaign(*extra: str) -> dict[str, object]:
        run = subprocess.run(
            [
                *RUN_CMD,
                "--time",
                "3",
                "--json",
                "--corpus",
                str(shared.parent),
                *extra,
                "--findings",
                str(tmp_path / "findings"),
                "core",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        result: dict[str, object] = json.loads(run.stdout)["results"][0]
        return result

    before = {p.name for p in shared.iterdir()}
    plain = campaign()
    assert {p.name for p in shared.iterdir()} == before and plain["merged"] is None
    merged = campaign("--merge")
    added = {p.name for p in shared.iterdir()} - before
    assert isinstance(merged["merged"], int) and merged["merged"] == len(added) > 0, merged
    assert all(len(name) == 40 for name in added)  # libFuzzer's SHA-1 names
    assert sorted(p.name for p in (FUZZ / "corpus" / "core").iterdir()) == committed
