"""`semsearch up`: the whole stack in one foreground process, on embedded defaults.

broker (embedded Tansu unless KAFKA_BOOTSTRAP_SERVERS) · Redis (embedded unless REDIS_URL) ·
the streaming indexer (a thread) · the HTTP API (uvicorn, main thread). One process keeps the
first run to one command on a fresh machine; every part is the same code that runs on its own
in production (`semsearch index`, `semsearch serve`), so nothing here is a demo-only path.

Shutdown order on Ctrl-C / SIGTERM: the API stops taking requests, the indexer finishes its
batch and writes a final snapshot, then the broker and Redis stop (Redis flushes to disk).

The indexer does not touch Redis, so `up` names the index active on first start: once the
configured model's index has its first snapshot, it sets the pointer with compare-and-set from
"unset" - a pointer that is already set (an earlier run, a migration) is left alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from contextlib import ExitStack
from typing import Any

from semsearch.settings import Settings

log = logging.getLogger(__name__)

_POINTER_POLL_S = 0.5
_INDEXER_STOP_TIMEOUT_S = 120.0


def register(subparsers: Any) -> None:
    up = subparsers.add_parser(
        "up",
        help="run broker, Redis, indexer and API together in the foreground (Ctrl-C stops all)",
        description=(
            "Run the whole stack in one process: an embedded Kafka-compatible broker unless "
            "KAFKA_BOOTSTRAP_SERVERS is set, an embedded Redis unless REDIS_URL is set, the "
            "streaming indexer and the search API. Prints the API address and the variables to "
            "export in another terminal for `semsearch produce`."
        ),
    )
    up.add_argument("--host", help="API listen address (default $SEMSEARCH_API_HOST or 127.0.0.1)")
    up.add_argument("--port", type=int, help="API port, 0 = any free (default $SEMSEARCH_API_PORT or 8000)")
    up.set_defaults(func=run_up)


def set_pointer_when_indexed(settings: Settings, index_id: str, stop: threading.Event) -> bool:
    """Wait for the first snapshot of `index_id`, then point at it unless a pointer exists.

    Returns True if this call set the pointer. Redis being briefly unreachable is retried.
    """
    import redis

    from indexer.snapshots import SnapshotStore, index_dir
    from semsearch.pointer import Pointer

    assert settings.redis_url, "resolve_redis() first"
    store = SnapshotStore(index_dir(settings, index_id))
    pointer = Pointer.from_url(settings.redis_url, settings.pointer_key)
    try:
        while not stop.is_set():
            try:
                if pointer.get() is not None:
                    return False
                if store.latest_generation() is not None:
                    won = pointer.set_if_unset(index_id, origin="semsearch up")
                    if won:
                        log.info("pointer %s set to %s (first snapshot written)", settings.pointer_key, index_id)
                    return won
            except (redis.RedisError, OSError) as exc:
                log.warning("cannot set the pointer yet (%s); retrying", exc)
            stop.wait(_POINTER_POLL_S)
        return False
    finally:
        pointer.close()


def banner(settings: Settings, api: str, *, broker_embedded: bool, redis_embedded: bool) -> str:
    from semsearch.embedded.redis import describe_url

    data = settings.data_dir.resolve()
    kafka = f"{settings.kafka_bootstrap}" + (" (embedded, in memory)" if broker_embedded else "")
    redis_url = settings.redis_url or ""
    redis_line = describe_url(redis_url) + (" (embedded)" if redis_embedded else "")
    return "\n".join(
        [
            "semsearch is up",
            f"  API    {api}   (OpenAPI docs {api}/docs, readiness {api}/readyz)",
            f"  Kafka  {kafka}",
            f"  Redis  {redis_line}",
            f"  data   {data}",
            "In another terminal:",
            f"  export KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap}",
            f"  export REDIS_URL={redis_url}",
            f"  export SEMSEARCH_DATA_DIR={data}",
            "  semsearch produce corpus.jsonl",
            f"  curl '{api}/search?q=vitamin+d+deficiency&k=5'",
            "Ctrl-C stops everything.",
        ]
    )


def run_up(args: argparse.Namespace) -> int:
    from consumers.service import run_indexer
    from indexer.model import load_model
    from query_api.app import create_app
    from query_api.commands import api_url, bind_socket, make_server
    from semsearch.embedded.broker import resolve_bootstrap
    from semsearch.embedded.redis import resolve_redis

    settings = Settings.from_env()
    host = args.host or settings.api_host
    port = settings.api_port if args.port is None else args.port
    sock = bind_socket(host, port)  # fail before starting anything if the port is taken
    stop = threading.Event()
    failed: list[BaseException] = []
    with ExitStack() as stack:
        stack.callback(sock.close)
        bootstrap, broker = resolve_bootstrap(settings)
        if broker is not None:
            stack.callback(broker.stop)
        redis_url, embedded_redis = resolve_redis(settings)
        if embedded_redis is not None:
            stack.callback(embedded_redis.stop)
        settings = settings.with_overrides(kafka_bootstrap=bootstrap, redis_url=redis_url)
        # Loaded once here so the indexer and the API share one copy of the weights.
        model = load_model(settings.model, memory_mb=settings.embed_memory_mb)

        server = make_server(create_app(settings))

        def indexer() -> None:
            try:
                run_indexer(settings, stop)
            except BaseException as exc:
                failed.append(exc)
                log.exception("the indexer stopped with an error; shutting the stack down")
                server.should_exit = True

        threads = [
            threading.Thread(target=indexer, name="indexer"),
            threading.Thread(
                target=set_pointer_when_indexed, args=(settings, model.index_id, stop), name="pointer", daemon=True
            ),
        ]
        for thread in threads:
            thread.start()
        print(
            banner(settings, api_url(sock), broker_embedded=broker is not None, redis_embedded=embedded_redis is not None),
            flush=True,
        )
        try:
            server.run(sockets=[sock])
        finally:
            log.info("stopping: waiting for the indexer to finish its batch and snapshot")
            stop.set()
            threads[0].join(_INDEXER_STOP_TIMEOUT_S)
            if threads[0].is_alive():
                log.error("the indexer did not stop within %.0fs; exiting anyway", _INDEXER_STOP_TIMEOUT_S)
    if failed:
        print(f"semsearch up: the indexer failed: {failed[0]}", file=sys.stderr)
        return 1
    return 0
