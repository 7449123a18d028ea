"""`semsearch up`: the whole stack in one foreground process, on embedded defaults.

broker (embedded Tansu unless KAFKA_BOOTSTRAP_SERVERS) · Redis (embedded unless REDIS_URL) ·
the streaming indexer (a thread) · the HTTP API (uvicorn, main thread) · the recall monitor (a
thread, when SEMSEARCH_MONITOR_QUERIES/_QRELS name a hold-out set; metrics on
SEMSEARCH_MONITOR_PORT). One process keeps the
first run to one command on a fresh machine; every part is the same code that runs on its own
in production (`semsearch index`, `semsearch serve`), so nothing here is a demo-only path.

Shutdown order on Ctrl-C / SIGTERM: the API stops taking requests, the indexer finishes its
batch - and, with the embedded (memory-only) broker, first drains every partition of `docs` to
its end, for at most SEMSEARCH_DRAIN_TIMEOUT_S; a second Ctrl-C aborts the drain - and writes a
final snapshot, then the broker and Redis stop (Redis flushes to disk).

The indexer is supervised: an exception in it is logged, counted
(`semsearch_indexer_restarts`, `semsearch_indexer_up` on the indexer's metrics endpoint) and the
indexer restarted from its newest snapshot after 1 s, 2 s, ... up to 60 s, while the broker (and
with it the dead-letter topic and every event not yet indexed), Redis and the API stay up.
`semsearch index` on its own does not do this: it exits non-zero and leaves restarts to its
orchestrator, as a production process should.

The indexer does not touch Redis, so `up` names the index active on first start: once the
configured model's index has its first snapshot, it sets the pointer with compare-and-set from
"unset" - a pointer that is already set (an earlier run, a migration) is left alone.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from contextlib import ExitStack
from types import FrameType
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from contracts.settings import Settings
from query_api.server import add_listen_arguments

if TYPE_CHECKING:
    from query_api.monitor import Monitor

log = logging.getLogger(__name__)

_POINTER_POLL_S = 0.5
# Beyond the drain: finishing a batch and writing the final snapshot.
_INDEXER_STOP_MARGIN_S = 120.0
RESTART_MIN_S = 1.0
RESTART_MAX_S = 60.0
# An indexer that ran this long before failing starts the backoff from RESTART_MIN_S again.
_HEALTHY_RUN_S = 120.0

INDEXER_UP = Gauge("semsearch_indexer_up", "1 while `semsearch up`'s indexer runs, 0 while it waits to restart.")
INDEXER_RESTARTS = Counter(
    "semsearch_indexer_restarts", "Restarts of `semsearch up`'s indexer after an exception, by exception type.", ["error"]
)


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
    add_listen_arguments(up)
    up.set_defaults(func=run_up)


def set_pointer_when_indexed(settings: Settings, index_id: str, stop: threading.Event) -> bool:
    """Wait for the first snapshot of `index_id`, then point at it unless a pointer exists.

    Returns True if this call set the pointer. Redis being briefly unreachable is retried.
    """
    import redis

    from contracts.pointer import Pointer
    from indexer.snapshots import SnapshotStore, index_dir

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


class IndexerSupervisor:
    """Runs `run_indexer` in a thread and restarts it after an exception (see module doc).

    `last_error` is the newest failure (None once a restart has run for a while), for the log
    and for tests; the metrics carry it to dashboards.
    """

    def __init__(
        self, settings: Settings, stop: threading.Event, *, memory_only_broker: bool, drain_timeout_s: float
    ) -> None:
        self.settings = settings
        self.drain_timeout_s = drain_timeout_s
        self.stop = stop
        self.abort_drain = threading.Event()
        self.memory_only_broker = memory_only_broker
        self.restarts = 0
        self.last_error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="indexer")

    def start(self) -> IndexerSupervisor:
        self.thread.start()
        return self

    def _run(self) -> None:
        from consumers.service import run_indexer

        delay = RESTART_MIN_S
        give_up_at: float | None = None  # once stopped: retry a failed drain until its deadline
        while True:
            started = time.monotonic()
            INDEXER_UP.set(1)
            try:
                run_indexer(
                    self._settings_for_attempt(),
                    self.stop,
                    memory_only_broker=self.memory_only_broker,
                    abort_drain=self.abort_drain,
                )
                return
            except Exception as exc:
                INDEXER_UP.set(0)
                self.last_error = exc
                INDEXER_RESTARTS.labels(type(exc).__name__).inc()
                if time.monotonic() - started >= _HEALTHY_RUN_S:
                    delay = RESTART_MIN_S
                if self.stop.is_set():
                    give_up_at = give_up_at or time.monotonic() + self.drain_timeout_s
                    if not self.memory_only_broker or self.abort_drain.is_set() or time.monotonic() >= give_up_at:
                        log.exception("the indexer failed while stopping; its newest snapshot is what stays")
                        return
                self.restarts += 1
                log.exception(
                    "the indexer failed (restart %d); restarting it from its newest snapshot in %.0fs - "
                    "the broker, Redis and the API stay up",
                    self.restarts,
                    delay,
                )
                # Stopped with a memory-only broker: the restart drains; abort_drain cuts it short.
                (self.abort_drain if self.stop.is_set() else self.stop).wait(delay)
                delay = min(delay * 2, RESTART_MAX_S)

    def _settings_for_attempt(self) -> Settings:
        """A restart on the embedded broker joins a consumer group of its own.

        Tansu can leave a group stuck after a member closed mid-join (a failed start): the next
        member then never gets an assignment. Groups only make lag visible (offsets are the
        snapshot's), and a memory-only broker's groups die with it, so a fresh group costs
        nothing there; with Apache Kafka the configured group is kept.
        """
        if not self.memory_only_broker or not self.restarts:
            return self.settings
        from consumers.worker import default_group_id
        from indexer.model import load_model

        base = self.settings.group_id or default_group_id(
            load_model(self.settings.model, memory_mb=self.settings.embed_memory_mb).index_id
        )
        return self.settings.with_overrides(group_id=f"{base}-restart-{self.restarts}")

    def join(self, timeout_s: float) -> bool:
        """Wait for the indexer to finish (polling, so the main thread keeps handling signals)."""
        deadline = time.monotonic() + timeout_s
        while self.thread.is_alive() and time.monotonic() < deadline:
            self.thread.join(0.2)
        return not self.thread.is_alive()


def banner(settings: Settings, api: str, *, broker_embedded: bool, redis_embedded: bool) -> str:
    from contracts.pointer import describe_url

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


def start_monitor(settings: Settings, api: str, stack: ExitStack) -> Monitor | None:
    """The recall monitor, when SEMSEARCH_MONITOR_QUERIES and _QRELS name a hold-out set.

    Built before anything else starts, so a bad hold-out file or a busy metrics port fails `up`
    at once with a message; its loop starts once the API is ready (the caller starts it).
    """
    if settings.monitor_queries is None and settings.monitor_qrels is None:
        return None
    from query_api.monitor_command import build_monitor

    monitor = build_monitor(settings, settings.monitor_api or api)
    if settings.monitor_port:
        server = monitor.serve_metrics(settings.monitor_port, settings.api_host)
        stack.callback(server.shutdown)
    return monitor


def run_up(args: argparse.Namespace) -> int:
    from indexer.model import load_model
    from query_api.app import create_app
    from query_api.server import api_url, listen_socket, make_server
    from semsearch.embedded.broker import resolve_bootstrap
    from semsearch.embedded.redis import resolve_redis

    settings = Settings.from_env()
    sock = listen_socket(args, settings)  # fail before starting anything if the port is taken
    drain_timeout_s = settings.drain_timeout_s
    stop = threading.Event()
    with ExitStack() as stack:
        stack.callback(sock.close)
        monitor = start_monitor(settings, api_url(sock), stack)
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

        supervisor = IndexerSupervisor(
            settings, stop, memory_only_broker=broker is not None, drain_timeout_s=drain_timeout_s
        ).start()
        threading.Thread(
            target=set_pointer_when_indexed, args=(settings, model.index_id, stop), name="pointer", daemon=True
        ).start()
        print(
            banner(settings, api_url(sock), broker_embedded=broker is not None, redis_embedded=embedded_redis is not None),
            flush=True,
        )
        if monitor is not None:
            threading.Thread(
                target=monitor.run_forever, args=(stop,), kwargs={"wait_ready": True}, name="monitor", daemon=True
            ).start()
        try:
            server.run(sockets=[sock])
        finally:
            # uvicorn has restored the default handlers; from here a signal aborts the drain.
            def on_signal(signum: int, frame: FrameType | None) -> None:
                if supervisor.abort_drain.is_set():
                    raise KeyboardInterrupt
                log.warning("%s again: aborting the drain; events not yet indexed are lost", signal.Signals(signum).name)
                supervisor.abort_drain.set()

            previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                if broker is not None and drain_timeout_s > 0:
                    log.info(
                        "stopping: the indexer drains the embedded broker (up to %.0fs; Ctrl-C again to abort), "
                        "then snapshots",
                        drain_timeout_s,
                    )
                else:
                    log.info("stopping: waiting for the indexer to finish its batch and snapshot")
                stop.set()
                timeout_s = drain_timeout_s + _INDEXER_STOP_MARGIN_S
                if not supervisor.join(timeout_s):
                    log.error("the indexer did not stop within %.0fs; exiting anyway", timeout_s)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
    if supervisor.last_error is not None and supervisor.restarts and not supervisor.thread.is_alive():
        log.info("the indexer failed %d time(s) during this run; last: %s", supervisor.restarts, supervisor.last_error)
    return 0
