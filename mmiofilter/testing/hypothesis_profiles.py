"""Hypothesis profiles for the test suite, and the campaign profile that scales every property
and stateful test up.

`configure()` (called by tests/conftest.py at pytest_configure) registers the profiles with
the database `hypothesis_db.database_from_env()` picks and loads one:

- `HYPOTHESIS_PROFILE=default`: hypothesis' defaults (what each test's own settings ask for);
- `HYPOTHESIS_PROFILE=ci`: hypothesis' `ci` profile (derandomized, no deadline), loaded by
  hypothesis itself when it sees a CI environment;
- `HYPOTHESIS_PROFILE=campaign`: no deadline, the too-slow health check off, and every test's
  `max_examples` multiplied by `MF_HYPOTHESIS_SCALE` (default 20; a test with no setting of
  its own runs 100 x the scale), stateful tests' `stateful_step_count` too, up to 200 steps.

With a database in the environment, the `ci` profile keeps it and is not derandomized
(hypothesis allows no database with derandomize): CI then replays the campaign's examples.

The tests here set `max_examples` themselves (a few hundred each), which a profile cannot
raise (a test's own settings win): `scale_items()`, called at pytest_collection_modifyitems,
multiplies what each collected test asks for under the campaign profile. The profile is chosen
by the environment variable; pytest's `--hypothesis-profile` option does not scale.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from hypothesis import HealthCheck, settings

from .hypothesis_db import UNSET, database_from_env

ENV_PROFILE = "HYPOTHESIS_PROFILE"
ENV_SCALE = "MF_HYPOTHESIS_SCALE"
CAMPAIGN = "campaign"
DEFAULT_SCALE = 20
#: hypothesis' own default max_examples, the base a test without a setting is scaled from.
BASE_EXAMPLES = 100
MAX_STEPS = 200


class ProfileConfigError(ValueError):
    """A profile or scale this run cannot use; the message says which."""


def scale_from_env(env: Mapping[str, str]) -> int:
    raw = env.get(ENV_SCALE, "").strip()
    if not raw:
        return DEFAULT_SCALE
    try:
        scale = int(raw)
    except ValueError:
        scale = 0
    if scale < 1:
        raise ProfileConfigError(f"{ENV_SCALE}={raw!r}: expected a whole number >= 1")
    return scale


def configure(env: Mapping[str, str] | None = None) -> str:
    """Register the profiles with the environment's database, load the chosen one, return its
    name. Raises ValueError (DatabaseConfigError, ProfileConfigError) saying what is wrong."""
    env = os.environ if env is None else env
    db = database_from_env(env)
    with_db: dict[str, Any] = {} if db is UNSET else {"database": db}
    settings.register_profile("default", settings.get_profile("default"), **with_db)
    ci_db = {"derandomize": False, **with_db} if db not in (UNSET, None) else with_db
    settings.register_profile("ci", settings.get_profile("ci"), **ci_db)
    scale_from_env(env)  # a bad scale is refused here, before any test runs
    # max_examples stays the base: scale_items multiplies each test's own (else it would be
    # multiplied twice for the tests that take the profile's).
    settings.register_profile(
        CAMPAIGN,
        settings.get_profile("default"),
        max_examples=BASE_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        **with_db,
    )
    current = getattr(settings, "_current_profile", None)  # "ci" when hypothesis saw CI
    name = env.get(ENV_PROFILE, "").strip() or current or "default"
    try:
        settings.get_profile(name)  # before loading: a failed load leaves hypothesis half-set
    except Exception as e:  # hypothesis raises InvalidArgument for an unknown name
        raise ProfileConfigError(
            f"{ENV_PROFILE}={name!r}: not a profile (default, ci, {CAMPAIGN}): {e}"
        ) from None
    settings.load_profile(name)
    return name


def _scaled(current: settings, scale: int) -> settings:
    steps = min(MAX_STEPS, current.stateful_step_count * scale)
    # A scaled state machine's smallest run is long on purpose: its health checks on size and
    # speed would stop the campaign before its first example (seen on the FSP guard's).
    quiet = {HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example}
    return settings(
        current,
        max_examples=current.max_examples * scale,
        stateful_step_count=max(current.stateful_step_count, steps),
        suppress_health_check=sorted({*current.suppress_health_check, *quiet}, key=str),
    )


def scale_items(items: Iterable[Any], env: Mapping[str, str] | None = None) -> int:
    """Under the campaign profile, multiply the examples every collected hypothesis test asks
    for (each test once, however many items parametrize it); return how many were scaled."""
    env = os.environ if env is None else env
    if env.get(ENV_PROFILE, "").strip() != CAMPAIGN:
        return 0
    scale = scale_from_env(env)
    seen: set[int] = set()
    for item in items:
        obj: Any = getattr(item, "obj", None)
        fn: Any = getattr(obj, "__func__", obj)
        if not getattr(fn, "is_hypothesis_test", False):
            continue
        cls = getattr(item, "cls", None)
        if getattr(fn, "_hypothesis_state_machine_class", None) is not None and cls is not None:
            # a RuleBasedStateMachine.TestCase: its class attribute `settings` drives the run
            if id(cls) not in seen:
                seen.add(id(cls))
                cls.settings = _scaled(cls.settings, scale)
        elif id(fn) not in seen:
            seen.add(id(fn))
            # @given's wrapper reads this attribute each time the test runs (hypothesis/core.py)
            fn._hypothesis_internal_use_settings = _scaled(
                fn._hypothesis_internal_use_settings, scale
            )
    return len(seen)
