"""The hypothesis example database of a test run, chosen from the environment.

Hypothesis keeps every failing example it finds (and a few interesting ones) in an example
database and replays them first on the next run. A campaign on several machines shares one
database, so that what one machine found every other replays, and CI replays it too:

- `MF_HYPOTHESIS_DB` unset: hypothesis' own default (the directory `.hypothesis/examples`;
  none under its built-in `ci` profile).
- `MF_HYPOTHESIS_DB=none`: no database.
- `MF_HYPOTHESIS_DB=DIR`: the directory DIR (a shared directory, for instance).
- `MF_HYPOTHESIS_DB=redis://HOST:PORT/N` (or `rediss://`, `unix://`): a Redis server every
  machine of the campaign reaches (`hypothesis.extra.redis.RedisExampleDatabase`; needs the
  `redis` client: `pip install 'mmiofilter[fuzz]'`), beside the local `.hypothesis/examples`.
- `MF_HYPOTHESIS_DB_READONLY=1`: use the shared database (directory or Redis) read-only, beside
  the local directory, which keeps what this run finds: CI replays the campaign's examples
  without adding its own.
- `MF_HYPOTHESIS_REDIS_EXPIRE_DAYS`: how long Redis keeps an example nobody saved again
  (hypothesis' default: 8 days).

tests/conftest.py calls `database_from_env` through `hypothesis_profiles.configure`; another
component's suite can do the same in its conftest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from hypothesis.database import (
    DirectoryBasedExampleDatabase,
    ExampleDatabase,
    MultiplexedDatabase,
    ReadOnlyDatabase,
)

ENV_DB = "MF_HYPOTHESIS_DB"
ENV_READONLY = "MF_HYPOTHESIS_DB_READONLY"
ENV_EXPIRE = "MF_HYPOTHESIS_REDIS_EXPIRE_DAYS"
#: Where the local examples go beside a shared database: hypothesis' default directory.
LOCAL_DIR = Path(".hypothesis") / "examples"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class DatabaseConfigError(ValueError):
    """The environment names a database this run cannot use; the message says which and why."""


class Unset:
    """No database setting in the environment: leave hypothesis' profile as it is."""


UNSET = Unset()


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "no", "false"):
        return False
    if value in ("1", "yes", "true"):
        return True
    raise DatabaseConfigError(f"{name}={env[name]!r}: expected 1 or 0")


def redis_database(url: str, env: Mapping[str, str]) -> ExampleDatabase:
    """A RedisExampleDatabase on the server at `url`, checked reachable now (a campaign that
    silently shares nothing would be worse than one that does not start)."""
    try:
        import redis
        from hypothesis.extra.redis import RedisExampleDatabase
    except ImportError as e:
        raise DatabaseConfigError(
            f"{ENV_DB}={url}: the redis client is not installed "
            f"(pip install 'mmiofilter[fuzz]' or pip install redis): {e}"
        ) from None
    expire = timedelta(days=8)
    if env.get(ENV_EXPIRE):
        try:
            expire = timedelta(days=float(env[ENV_EXPIRE]))
        except ValueError:
            raise DatabaseConfigError(
                f"{ENV_EXPIRE}={env[ENV_EXPIRE]!r}: expected a number of days"
            ) from None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5)
        client.ping()
    except (redis.RedisError, ValueError) as e:
        raise DatabaseConfigError(f"{ENV_DB}={url}: cannot reach the Redis server: {e}") from None
    return RedisExampleDatabase(client, expire_after=expire)


def database_from_env(env: Mapping[str, str] | None = None) -> ExampleDatabase | Unset | None:
    """The database `env` (default: os.environ) asks for, UNSET when it asks for none."""
    env = os.environ if env is None else env
    spec = env.get(ENV_DB, "").strip()
    readonly = _flag(env, ENV_READONLY)
    if not spec:
        if readonly:
            raise DatabaseConfigError(f"{ENV_READONLY} is set but {ENV_DB} names no database")
        return UNSET
    if spec.lower() == "none":
        return None
    shared: ExampleDatabase
    if spec.startswith(_REDIS_SCHEMES):
        shared = redis_database(spec, env)
    elif "://" in spec:
        raise DatabaseConfigError(
            f"{ENV_DB}={spec}: not a directory, and not a redis://, rediss:// or unix:// URL"
        )
    else:
        if readonly and not Path(spec).is_dir():
            raise DatabaseConfigError(f"{ENV_DB}={spec}: no such directory to read examples from")
        shared = DirectoryBasedExampleDatabase(spec)
        if not readonly:
            return shared
    if readonly:
        shared = ReadOnlyDatabase(shared)
    return MultiplexedDatabase(DirectoryBasedExampleDatabase(LOCAL_DIR), shared)
