"""The `semsearch` command: each package registers its own subcommands.

Registration keeps this module a table of contents: the code that runs a subcommand lives
next to the component it drives (producers/, consumers/, indexer/, query_api/); the commands
that start embedded servers when none is configured (`index`, `serve`, `up`) live here, on top.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from indexer.model import pin_offline_environment

pin_offline_environment()  # before any command module imports transformers

# Modules that expose `register(subparsers)`; each adds subcommands with `func` set.
COMMAND_MODULES = (
    "indexer.commands",
    "query_api.commands",
    "query_api.monitor_command",
    "producers.commands",
    "semsearch.index_command",
    "consumers.migration.commands",
    "semsearch.serve_command",
    "semsearch.stack",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semsearch",
        description="Kafka-driven streaming indexer for semantic search.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("sentence_transformers", "transformers", "httpx", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    from contracts.errors import SemsearchError
    from contracts.settings import SettingsError

    try:
        return int(func(args) or 0)
    except (SemsearchError, SettingsError) as exc:
        print(f"semsearch {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
