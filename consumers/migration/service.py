"""The migration side of `semsearch index`: control consumer, executor and fresh-keeper wired.

Why inside `semsearch index` and not a separate `semsearch migrate` process: one process per
data directory then writes every index in it (no two writers can race on one index directory),
and `semsearch up` - which runs the indexer - gets migrations without a third process to start.
Three threads (plus one per kept index), each its own module: `control` accepts requests into
the `ledger`, the `executor` runs model upgrades one at a time through an `orchestrator`, and
the `keeper` keeps every servable index other than the configured one fresh, taking over the
worker of a newly flipped-to index.
"""

from __future__ import annotations

import logging
import threading

from consumers.migration.control import ControlConsumer
from consumers.migration.executor import Executor
from consumers.migration.keeper import FreshKeeper
from consumers.migration.ledger import RequestLedger
from consumers.migration.orchestrator import Orchestrator
from consumers.migration.status import MigrationStatus
from contracts.errors import SemsearchError
from contracts.pointer import Pointer
from contracts.settings import Settings
from indexer.embedding_cache import EmbeddingCache
from producers.publisher import Publisher

log = logging.getLogger(__name__)


class MigrationService:
    """Runs migrations and the workers of servable non-configured indexes (see module doc)."""

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap: str,
        cache: EmbeddingCache | None,
        owned_index_id: str,
    ) -> None:
        if not settings.redis_url:
            raise SemsearchError("model migrations need the Redis pointer: set REDIS_URL")
        self.settings = settings
        self.bootstrap = bootstrap
        self.cache = cache
        self.owned = owned_index_id
        self.pointer = Pointer.from_url(settings.redis_url, settings.pointer_key)
        self.ledger = RequestLedger(self.pointer)
        self.status = MigrationStatus(self.pointer, settings.data_dir)
        self._stop = threading.Event()
        self.keeper: FreshKeeper | None = None
        self.executor: Executor | None = None
        self.control: ControlConsumer | None = None

    def _orchestrator(self) -> Orchestrator:
        """The executor's orchestrator, built in its thread, with a publisher of its own."""
        assert self.keeper is not None
        return Orchestrator(
            self.settings,
            bootstrap=self.bootstrap,
            pointer=self.pointer,
            cache=self.cache,
            status=self.status,
            publisher=Publisher(self.bootstrap),
            stop=self._stop,
            writers={self.owned},
            hand_over=self.keeper.hand_over,
        )

    def start(self, stop: threading.Event) -> MigrationService:
        """Start the threads; `stop` ends them all (then call join)."""
        self._stop = stop
        self.keeper = FreshKeeper(
            self.settings,
            self.pointer,
            bootstrap=self.bootstrap,
            cache=self.cache,
            owned_index_id=self.owned,
            stop=stop,
        )
        self.executor = Executor(
            self.ledger, self.status, self._orchestrator, before_run=self.keeper.release
        )
        self.control = ControlConsumer(
            self.settings,
            bootstrap=self.bootstrap,
            pointer=self.pointer,
            ledger=self.ledger,
            accept=self.executor.enqueue,
            every_rescan=self.keeper.refresh,
        )
        self.control.start(stop)
        self.executor.start(stop)
        return self

    @property
    def control_alive(self) -> bool:
        return self.control is not None and self.control.alive

    def join(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        for part in (self.control, self.executor, self.keeper):
            if part is not None:
                part.join(timeout_s)
        self.pointer.close()


def start_migrations(
    settings: Settings,
    *,
    bootstrap: str,
    cache: EmbeddingCache | None,
    owned_index_id: str,
    stop: threading.Event,
) -> MigrationService | None:
    """The one call `run_indexer` makes; None (and a log line) when REDIS_URL is unset."""
    if not settings.redis_url:
        log.info("model migrations are off: set REDIS_URL so the indexer can flip the pointer")
        return None
    return MigrationService(
        settings, bootstrap=bootstrap, cache=cache, owned_index_id=owned_index_id
    ).start(stop)

