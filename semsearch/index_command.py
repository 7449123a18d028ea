"""`semsearch index`: run the streaming indexer in the foreground until SIGTERM/SIGINT.

On the top floor because without KAFKA_BOOTSTRAP_SERVERS it starts an embedded broker for the
duration (semsearch/embedded/broker.py) and hands its address to `run_indexer`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType
from typing import Any

from consumers.service import run_indexer
from contracts.settings import Settings
from semsearch.embedded.broker import resolve_bootstrap

log = logging.getLogger(__name__)


def index_command(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    stop = threading.Event()
    abort_drain = threading.Event()  # an embedded broker's drain (see run_indexer)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and not abort_drain.is_set():  # a second Ctrl-C: stop draining
            log.warning("%s again: aborting the drain; events not yet indexed are lost", signal.Signals(signum).name)
            abort_drain.set()
            return
        if stop.is_set():  # a third: the user does not want to wait for the batch
            raise KeyboardInterrupt
        log.info("%s: finishing the current batch and writing a final snapshot", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        bootstrap, broker = resolve_bootstrap(settings)
        try:
            if broker is not None:
                log.warning(
                    "KAFKA_BOOTSTRAP_SERVERS is not set: started an embedded broker (memory only) at %s; "
                    "publish to it with: KAFKA_BOOTSTRAP_SERVERS=%s semsearch produce FILE.jsonl",
                    bootstrap,
                    bootstrap,
                )
            run_indexer(
                settings.with_overrides(kafka_bootstrap=bootstrap),
                stop,
                memory_only_broker=broker is not None,
                abort_drain=abort_drain,
            )
        finally:
            if broker is not None:
                broker.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "index",
        help="run the streaming indexer (consume docs, embed, snapshot)",
        description="Consume the docs topic into the index of SEMSEARCH_MODEL under "
        "SEMSEARCH_DATA_DIR, resuming from the newest snapshot's offsets. Reads "
        "KAFKA_BOOTSTRAP_SERVERS (unset: start an embedded broker and log its address), "
        "SEMSEARCH_GROUP_ID (default semsearch-<index id>), SEMSEARCH_INDEXER_METRICS_PORT (9108; "
        "0 = off). Stops cleanly on SIGTERM/SIGINT after a final snapshot.",
    )
    parser.set_defaults(func=index_command)
