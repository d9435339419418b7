"""The `mmiofilter` command. Each module here registers its subcommands with `base.register`."""

from . import bench_cmd, check, demo_cmd, layout, profiles, replay_cmd, serve_cmd  # noqa: F401 - importing registers the subcommands
from .base import COMMANDS, CliError, build_parser, human_size, main, parse_size, register

__all__ = ["COMMANDS", "CliError", "build_parser", "human_size", "main", "parse_size", "register"]
