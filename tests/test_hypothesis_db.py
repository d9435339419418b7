"""The hypothesis example database and profile chosen from the environment (tests/conftest.py,
mmiofilter/testing/hypothesis_db.py and hypothesis_profiles.py).

The Redis test starts a real redis-server on loopback and runs pytest twice, in two fresh
directories, on a tiny failing property under this suite's conftest: the first run (a campaign
machine) finds the failure and saves it in Redis; the second (CI: read-only, replay only, no
local examples) fails on the same example, found in Redis, and writes nothing there.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis.database import (
    DirectoryBasedExampleDatabase,
    MultiplexedDatabase,
    ReadOnlyDatabase,
)

from mmiofilter.testing.hypothesis_db import (
    UNSET,
    DatabaseConfigError,
    database_from_env,
)
from mmiofilter.testing.hypothesis_profiles import ProfileConfigError, configure

ROOT = Path(__file__).resolve().parent.parent
CONFTEST = ROOT / "tests" / "conftest.py"
OWN_VARS = ("MF_HYPOTHESIS_DB", "MF_HYPOTHESIS_DB_READONLY", "HYPOTHESIS_PROFILE")

FAILING_PROPERTY = """
import os
from hypothesis import Phase, given, settings, strategies as st

PHASES = [Phase.reuse] if os.environ.get("REPLAY_ONLY") else [Phase.generate, Phase.shrink]


@settings(max_examples=300, phases=PHASES)
@given(st.integers(0, 10**6))
def test_below_a_thousand(n):
    assert n < 1000
"""

SCALED_TESTS = """
import os
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

LOG = os.environ["COUNT_LOG"]


def note(what):
    with open(LOG, "a") as f:
        f.write(what + "\\n")


@settings(max_examples=7)
@given(st.integers())
def test_property(n):
    note("property")


class Machine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        note("machine")

    @rule(x=st.integers())
    def step(self, x):
        pass


Machine.TestCase.settings = settings(max_examples=3, stateful_step_count=2)
TestMachine = Machine.TestCase
"""


def _pytest(cwd: Path, test: str, **env: str) -> subprocess.CompletedProcess[str]:
    """pytest on `test` in `cwd`, with this suite's conftest and only the given variables."""
    (cwd / "conftest.py").write_text(CONFTEST.read_text())
    (cwd / "test_tiny.py").write_text(test)
    base = {k: v for k, v in os.environ.items() if k not in OWN_VARS and k != "PYTEST_ADDOPTS"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_tiny.py"],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    if importlib.util.find_spec("redis") is None:
        pytest.skip("the redis client is not installed (pip install -e '.[fuzz]')")
    import redis

    port = _free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    pytest.fail(f"redis-server exited with {proc.returncode}")
                time.sleep(0.05)
        else:
            pytest.fail("redis-server did not answer within 5 s")
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def _keys(url: str) -> set[bytes]:
    import redis

    with redis.Redis.from_url(url) as client:
        return set(client.keys("*"))


def test_redis_database_shares_a_failing_example_between_machines(
    redis_url: str, tmp_path: Path
) -> None:
    campaign, ci, control = (tmp_path / d for d in ("campaign", "ci", "control"))
    for d in (campaign, ci, control):
        d.mkdir()

    found = _pytest(campaign, FAILING_PROPERTY, MF_HYPOTHESIS_DB=redis_url)
    assert found.returncode == 1 and "n=1000" in found.stdout, found.stdout[-3000:]
    saved = _keys(redis_url)
    assert saved, "the campaign run saved nothing in Redis"

    # CI: a fresh directory, read-only Redis, replay only: it can fail only by replaying
    replayed = _pytest(
        ci, FAILING_PROPERTY, MF_HYPOTHESIS_DB=redis_url, MF_HYPOTHESIS_DB_READONLY="1",
        REPLAY_ONLY="1",
    )  # fmt: skip
    assert replayed.returncode == 1 and "n=1000" in replayed.stdout, replayed.stdout[-3000:]
    assert _keys(redis_url) == saved, "a read-only run changed the shared database"

    # the same replay-only run without the shared database has nothing to replay
    alone = _pytest(control, FAILING_PROPERTY, REPLAY_ONLY="1")
    assert alone.returncode == 0, alone.stdout[-3000:]


def test_campaign_profile_scales_each_test_and_state_machine(tmp_path: Path) -> None:
    counts = {}
    for name, env in (("plain", {}), ("campaign", {"HYPOTHESIS_PROFILE": "campaign"})):
        work = tmp_path / name
        work.mkdir()
        log = work / "count.log"
        run = _pytest(work, SCALED_TESTS, COUNT_LOG=str(log), MF_HYPOTHESIS_SCALE="5", **env)
        assert run.returncode == 0, run.stdout[-3000:]
        lines = log.read_text().split()
        counts[name] = (lines.count("property"), lines.count("machine"))
    assert counts["plain"] == (7, 3), counts
    assert counts["campaign"] == (35, 15), counts


def test_a_scaled_state_machine_keeps_its_health_checks_quiet() -> None:
    # a scaled state machine's smallest run is long: the FSP guard's stopped the campaign at
    # once on `large_base_example` (MF_HYPOTHESIS_SCALE=20) before its own checks were kept
    from hypothesis import HealthCheck, settings

    from mmiofilter.testing.hypothesis_profiles import _scaled

    own = settings(suppress_health_check=[HealthCheck.filter_too_much], stateful_step_count=50)
    scaled = _scaled(own, 20)
    assert scaled.stateful_step_count > 50 and scaled.max_examples == own.max_examples * 20
    assert {HealthCheck.filter_too_much, HealthCheck.large_base_example} <= set(
        scaled.suppress_health_check
    )


def test_database_from_env(tmp_path: Path) -> None:
    assert database_from_env({}) is UNSET
    assert database_from_env({"MF_HYPOTHESIS_DB": "none"}) is None
    shared = database_from_env({"MF_HYPOTHESIS_DB": str(tmp_path)})
    assert isinstance(shared, DirectoryBasedExampleDatabase)
    ro = database_from_env({"MF_HYPOTHESIS_DB": str(tmp_path), "MF_HYPOTHESIS_DB_READONLY": "1"})
    assert isinstance(ro, MultiplexedDatabase)
    assert any(isinstance(db, ReadOnlyDatabase) for db in ro._wrapped)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MF_HYPOTHESIS_DB_READONLY": "1"}, "names no database"),
        ({"MF_HYPOTHESIS_DB": "http://x/"}, "not a directory, and not a redis://"),
        ({"MF_HYPOTHESIS_DB": "/no/such/dir", "MF_HYPOTHESIS_DB_READONLY": "1"}, "no such dir"),
        ({"MF_HYPOTHESIS_DB": "/tmp", "MF_HYPOTHESIS_DB_READONLY": "maybe"}, "expected 1 or 0"),
    ],
)
def test_bad_database_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(DatabaseConfigError, match=message):
        database_from_env(env)


def test_unreachable_redis_is_refused_before_any_test() -> None:
    if importlib.util.find_spec("redis") is None:
        pytest.skip("the redis client is not installed (pip install -e '.[fuzz]')")
    url = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    with pytest.raises(DatabaseConfigError, match="cannot reach the Redis server"):
        database_from_env({"MF_HYPOTHESIS_DB": url})


def test_bad_profile_or_scale_is_refused() -> None:
    with pytest.raises(ProfileConfigError, match="not a profile"):
        configure({"HYPOTHESIS_PROFILE": "no-such-profile"})
    with pytest.raises(ProfileConfigError, match="whole number"):
        configure({"MF_HYPOTHESIS_SCALE": "0"})
    configure({})  # leave the session as conftest set it
