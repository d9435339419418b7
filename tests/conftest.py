"""Shared fixtures: a recording device behind the C core, so tests see every device access.

Hypothesis: the example database and the profile come from the environment
(mmiofilter/testing/hypothesis_db.py, hypothesis_profiles.py; fuzz/README.md): MF_HYPOTHESIS_DB
(a directory, a redis:// URL, or none), MF_HYPOTHESIS_DB_READONLY=1 (replay a shared database
without writing to it, as CI does), HYPOTHESIS_PROFILE=campaign with MF_HYPOTHESIS_SCALE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

import mmiofilter as mf
from mmiofilter.testing import hypothesis_profiles
from mmiofilter.testing.model import ModelDevice


def pytest_configure(config: pytest.Config) -> None:
    # Generated policies hold inert mask rules (mask 0) on purpose: the core must match the
    # model on them too. The warning they raise is tested in test_audit.py (pytest.warns).
    config.addinivalue_line("filterwarnings", "ignore::mmiofilter.lint.PolicyWarning")
    # before collection: the tests' own settings objects inherit the database when created
    try:
        hypothesis_profiles.configure()
    except ValueError as e:
        raise pytest.UsageError(f"hypothesis settings from the environment: {e}") from None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    hypothesis_profiles.scale_items(items)


MakeFilter = Callable[..., tuple[mf.BarFilter, ModelDevice]]


def touched_bytes(log: Sequence[tuple[int, int, bool, int]], *, writes: bool) -> set[int]:
    """Every byte offset the device saw in a read (writes=False) or a write (writes=True)."""
    return {off + i for off, width, is_write, _ in log if is_write == writes for i in range(width)}


@pytest.fixture
def make_filter() -> MakeFilter:
    """`make_filter(size, rules, **policy_and_filter_kwargs) -> (BarFilter, device)`: the C core
    over a CallbackBackend into a sparse ModelDevice that logs every access it receives."""

    def make(
        size: int,
        rules: Sequence[mf.Rule],
        *,
        page_size: int = 4096,
        bar: int = 0,
        initial: bytes | None = None,
        **policy_kwargs: object,
    ) -> tuple[mf.BarFilter, ModelDevice]:
        dev = ModelDevice(initial)
        policy = mf.Policy(rules, **policy_kwargs)  # type: ignore[arg-type]
        backend = mf.CallbackBackend(dev.read, dev.write)
        return mf.BarFilter(size, policy, backend, bar=bar, page_size=page_size), dev

    return make
