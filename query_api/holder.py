"""IndexHolder: which index this API process serves, and how it changes without a failed query.

One background thread owns every change; request handlers only read `holder.current`, an
immutable `Serving` taken once per request. That single reference is the whole zero-downtime
story, and the holder is only the composition that decides when to swap it:

- the PointerWatcher (watcher.py) says which index the pointer names and wakes the thread on a
  pub/sub notification, or every refresh_ms (the polling fallback, which also picks up new
  generations: they are files, not Redis events);
- flip (the pointer names another index): the IndexLoader (loader.py) loads it completely -
  checksums, model fingerprint and canaries verified - *then* the reference is swapped. A
  request that already took the old `Serving` finishes on it; the old index is freed when the
  last one ends;
- refresh (a newer generation of the served index): the Refresher (refresher.py) applies it in
  place and hands back the `Serving` to swap in;
- drift: every drift_check_s the served model is re-proven against its manifest
  (indexer.drift.DriftMonitor); a model that changed under the process stops being served;
- anything wrong (Redis down, a pointer that is not an id, escapes the data root, names an
  index that does not exist, or one built with another model): keep serving what we have, say
  so in `status()` (→ /readyz) and in metrics, and log it once per distinct problem.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from contracts.errors import ModelMismatchError, SemsearchError
from contracts.offsets import Offsets
from contracts.pointer import describe_url
from contracts.settings import Settings
from indexer.drift import DriftMonitor
from query_api.lag import Lag, LagCollector, LagPoller
from query_api.loader import LOAD_ERRORS, IndexLoader, refusal
from query_api.metrics import ApiMetrics
from query_api.migration_status import migration_status
from query_api.refresher import Refresher
from query_api.serving import Serving
from query_api.watcher import PointerWatcher

log = logging.getLogger(__name__)

_CONFIGURED_MODEL = "<configured model>"


@dataclass(frozen=True, slots=True)
class _Failure:
    """A pointer value we could not serve; retried only when its latest generation changes."""

    value: str
    generation: int | None
    reason: str
    message: str


class IndexHolder:
    """Serves the index the pointer names, keeps it fresh, and never serves a half-built one."""

    def __init__(
        self,
        settings: Settings,
        redis_url: str | None = None,
        *,
        metrics: ApiMetrics | None = None,
        use_default_index: bool = True,
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else ApiMetrics()
        self.watcher = PointerWatcher(
            redis_url if redis_url is not None else settings.redis_url, settings.pointer_key, self.metrics
        )
        self.loader = IndexLoader(settings, self.metrics)
        # Serve the configured model's index while the pointer is unset (e.g. after
        # `semsearch build`, before any indexer set the pointer).
        self.use_default_index = use_default_index
        self._serving: Serving | None = None
        self._refresher = Refresher(self.metrics)
        self._drift: DriftMonitor | None = None
        self._failure: _Failure | None = None
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        # The log end of the served generation's topics, read in the background (query_api/lag.py).
        self.lag_poller = LagPoller(
            settings.kafka_bootstrap,
            settings.lag_poll_s,
            self._lag_targets,
            default_topic=settings.docs_topic,
        )
        self.metrics.attach(self)  # last: a scrape reads the state set up above
        self.metrics.registry.register(LagCollector(self.lag))

    # -- what requests and scrapes read ---------------------------------------------------
    @property
    def current(self) -> Serving | None:
        return self._serving

    @property
    def ready(self) -> bool:
        return self._serving is not None

    @property
    def redis_up(self) -> bool:
        return self.watcher.redis_up

    @property
    def pointer_value(self) -> str | None:
        return self.watcher.value

    def status(self) -> dict[str, Any]:
        serving = self._serving
        url = self.watcher.redis_url
        return {
            "ready": serving is not None,
            "index_id": serving.index_id if serving else None,
            "generation": serving.generation if serving else None,
            "model_fingerprint": serving.model_fingerprint if serving else None,
            "origin": serving.origin if serving else None,
            "pointer": self.watcher.value,
            "redis": {
                "up": self.watcher.redis_up,
                "url": describe_url(url) if url else None,
                "error": self.watcher.redis_error,
            },
            "last_error": self.last_error,
        }

    def lag(self) -> Lag | None:
        """How far the served generation is behind the log (None: nothing served); no I/O."""
        serving = self._serving
        return self.lag_poller.lag_of(serving.manifest) if serving is not None else None

    def _lag_targets(self) -> Offsets | None:
        serving = self._serving
        return serving.manifest.offsets if serving is not None else None

    def migration_status(self) -> dict[str, Any] | None:
        """Progress a migrator published (query_api.migration_status)."""
        return migration_status(self.watcher.pointer, self.settings.data_dir)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="index-holder", daemon=True)
        self._thread.start()
        self.lag_poller.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop watching and release the served generation's pin (the process is done serving)."""
        self._stop.set()
        self.lag_poller.stop(timeout_s)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._serving is not None:
            self._serving.hold.release()
        self.watcher.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # the watcher must survive anything; the next poll retries
                log.exception("index holder poll failed; will retry")
            self.watcher.wait(self.settings.refresh_ms / 1000.0, self._stop)

    # -- one step -------------------------------------------------------------------------
    def poll_once(self) -> None:
        """Read the pointer, flip or refresh as needed. Safe to call from tests directly."""
        with self._poll_lock:
            serving = self._serving
            read = self.watcher.read(serving.index_id if serving else None)
            if read.readable and read.value is not None:
                wanted: str | None = read.value
                origin = "pointer"
            elif serving is not None:
                wanted, origin = serving.index_id, serving.origin
            else:
                wanted, origin = (self._default_index_id() if self.use_default_index else None), "default"
            if wanted is None:
                return
            if serving is not None and serving.index_id == wanted and serving.origin != origin:
                # Serving the default index and the pointer now names that same index.
                self._serving = serving = serving.with_origin(origin)
            if serving is None or wanted != serving.index_id:
                self._flip(wanted, origin)
            if serving is not None and self._serving is serving:
                # Not flipped (same id, or the new one was refused): keep the old one fresh.
                refreshed = self._refresher.refresh(serving)
                if refreshed is not None:
                    self._serving = refreshed
            self._check_drift()

    def _default_index_id(self) -> str | None:
        try:
            return self.loader.default_index_id()
        except SemsearchError as exc:
            if self._failure is None or self._failure.value != _CONFIGURED_MODEL:
                self._refuse(_CONFIGURED_MODEL, None, "load_error", str(exc))
            return None

    def _flip(self, index_id: str, origin: str) -> None:
        latest = self.loader.latest_generation_of(index_id)
        failure = self._failure
        if failure is not None and failure.value == index_id and failure.generation == latest:
            return  # already reported; retry when a new generation appears or the pointer moves
        try:
            serving = self.loader.load(index_id, origin)
        except LOAD_ERRORS as exc:
            self._refuse(index_id, latest, *refusal(exc))
            return
        previous = self._serving
        self._serving = serving
        if previous is not None:
            previous.hold.release()
        self._failure, self.last_error = None, None
        self._refresher = Refresher(self.metrics)
        # Sets semsearch_model_mismatch{index_id} to 0 (issue 5) and starts the drift clock.
        self._drift = DriftMonitor.for_index(
            serving.index,
            serving.manifest,
            interval_s=self.settings.drift_check_s,
            gauge=self.metrics.model_mismatch,
        )
        self.metrics.index_loads.labels(kind="flip").inc()
        log.info(
            "serving %s generation %d (%d documents)%s",
            serving.index_id,
            serving.generation,
            serving.manifest.counts.get("documents", 0),
            f", was {previous.index_id}" if previous else "",
        )

    def _refuse(self, value: str, generation: int | None, reason: str, message: str) -> None:
        serving = self._serving
        keeping = f"; still serving {serving.index_id}" if serving else "; nothing is served yet"
        self.last_error = f"pointer {value!r} not served ({reason}): {message}"
        self._failure = _Failure(value, generation, reason, message)
        self.metrics.pointer_invalid.labels(reason=reason).inc()
        if reason == "model_mismatch":  # issue 5: semsearch_model_mismatch{index_id}
            self.metrics.model_mismatch.labels(value).set(1)
        log.error("refusing to serve %r (%s): %s%s", value, reason, message, keeping)

    def _check_drift(self) -> None:
        """Re-verify the served model against the manifest every drift_check_s: a library
        changed under a running process must stop answering, not search another space."""
        serving, drift = self._serving, self._drift
        if serving is None or drift is None:
            return
        try:
            drift.maybe_check()
        except ModelMismatchError as exc:
            self._serving, self._drift = None, None
            serving.hold.release()
            latest = serving.store.latest_generation()
            self._refuse(serving.index_id, latest, "model_mismatch", str(exc))
