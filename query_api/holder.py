"""IndexHolder: which index this API process serves, and how it changes without a failed query.

One background thread owns every change; request handlers only read `holder.current`, an
immutable `Serving` snapshot taken once per request. That single reference is the whole
zero-downtime story:

- flip (the pointer names another index): the new index is loaded completely - checksums,
  model fingerprint and canaries verified - *then* the reference is swapped. A request that
  already took the old `Serving` finishes on it; the old index is freed when the last one ends.
- refresh (a newer generation of the served index): applied in place with
  `SnapshotStore.refresh`, which reads only new sealed segments and swaps the rest under the
  index's writer lock - concurrent searches see the old or the new generation, never a mix.
- anything wrong (Redis down, a pointer that is not an id, escapes the data root, names an
  index that does not exist, or one built with another model): keep serving what we have, say
  so in `status()` (→ /readyz) and in metrics, and log it once per distinct problem.

The thread wakes on a pub/sub notification from `semsearch.pointer` or every refresh_ms
(the polling fallback, which also picks up new generations: they are files, not Redis events).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis

from contracts.errors import (
    IndexNotFoundError,
    InvalidIndexIdError,
    ModelMismatchError,
    SemsearchError,
    SnapshotError,
)
from contracts.ids import validate_index_id
from contracts.pointer import Pointer, describe_url
from contracts.settings import Settings
from indexer.compatibility import ensure_compatible
from indexer.drift import mismatch_gauge
from indexer.index import Index
from indexer.model import EmbeddingModel, load_model
from indexer.pins import StandingPin
from indexer.snapshots import Manifest, SnapshotStore, index_dir
from query_api.metrics import ApiMetrics

log = logging.getLogger(__name__)

# A JSON document another component (the migrator) may write to report progress; /index shows it.
MIGRATION_STATUS_FILE = "status.json"
_WAIT_SLICE_S = 0.25


@dataclass(frozen=True)
class Serving:
    """One loaded, verified index and the manifest of the generation it holds."""

    index: Index
    manifest: Manifest
    store: SnapshotStore
    loaded_at: float
    origin: str  # "pointer", or "default" when the pointer was unset/unreadable at start
    # The pin on the served generation (shared by the `replace`d copies of one load): queries
    # read documents.sqlite at that generation, so the writer's GC must keep its rows.
    hold: StandingPin = field(default_factory=StandingPin, compare=False)

    @property
    def index_id(self) -> str:
        return self.index.index_id

    @property
    def generation(self) -> int:
        return self.manifest.generation

    @property
    def model_fingerprint(self) -> str:
        return str(self.index.model.info.fingerprint)

    def snapshot_age_s(self) -> float:
        return time.time() - float(self.manifest.created_at)


@dataclass
class _Failure:
    """A pointer value we could not serve; retried only when its latest generation changes."""

    value: str
    generation: int | None
    reason: str
    message: str


class IndexHolder:
    """Loads the index the pointer names, keeps it fresh, and never serves a half-built one."""

    def __init__(
        self,
        settings: Settings,
        redis_url: str | None = None,
        *,
        metrics: ApiMetrics | None = None,
        use_default_index: bool = True,
    ) -> None:
        self.settings = settings
        self.redis_url = redis_url if redis_url is not None else settings.redis_url
        self.metrics = metrics if metrics is not None else ApiMetrics()
        self.metrics.attach(self)
        # Serve the configured model's index while the pointer is unset (e.g. after
        # `semsearch build`, before any indexer set the pointer).
        self.use_default_index = use_default_index
        self._serving: Serving | None = None
        self._models: dict[str, EmbeddingModel] = {}
        self._pointer: Pointer | None = None
        self._pubsub: Any = None
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: _Failure | None = None
        # Generations of the served index that failed to apply; skipped until a newer one appears.
        self._bad_generations: set[int] = set()
        self._last_drift_check = time.monotonic()
        self.redis_up: bool = False
        self.redis_error: str | None = None
        self.pointer_value: str | None = None
        self.last_error: str | None = None

    # -- what requests read ---------------------------------------------------------------
    @property
    def current(self) -> Serving | None:
        return self._serving

    @property
    def ready(self) -> bool:
        return self._serving is not None

    def status(self) -> dict[str, Any]:
        serving = self._serving
        return {
            "ready": serving is not None,
            "index_id": serving.index_id if serving else None,
            "generation": serving.generation if serving else None,
            "model_fingerprint": serving.model_fingerprint if serving else None,
            "origin": serving.origin if serving else None,
            "pointer": self.pointer_value,
            "redis": {
                "up": self.redis_up,
                "url": describe_url(self.redis_url) if self.redis_url else None,
                "error": self.redis_error,
            },
            "last_error": self.last_error,
        }

    def migration_status(self) -> dict[str, Any] | None:
        """Progress a migrator published: Redis `<ns>:migration` (JSON) or <data_dir>/status.json."""
        if self._pointer is not None and self.redis_up:
            key = self._pointer.key.rsplit(":", 1)[0] + ":migration"
            try:
                raw = self._pointer.client.get(key)
                if raw:
                    data = json.loads(raw)
                    return data if isinstance(data, dict) else {"value": data}
            except (redis.RedisError, OSError, ValueError):
                pass
        path = Path(self.settings.data_dir) / MIGRATION_STATUS_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="index-holder", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop watching and release the served generation's pin (the process is done serving)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._serving is not None:
            self._serving.hold.release()
        self._close_pubsub()
        if self._pointer is not None:
            self._pointer.close()
            self._pointer = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # the watcher must survive anything; the next poll retries
                log.exception("index holder poll failed; will retry")
            self._wait(self.settings.refresh_ms / 1000.0)

    def _wait(self, timeout_s: float) -> None:
        """Sleep until the next poll, waking early on a pointer notification."""
        if self._pubsub is None and self.redis_up and self._pointer is not None:
            try:
                self._pubsub = self._pointer.subscribe()
            except (redis.RedisError, OSError):
                self._pubsub = None
        if self._pubsub is None:
            self._stop.wait(timeout_s)
            return
        deadline = time.monotonic() + timeout_s
        try:
            # Short slices so stop() is never kept waiting for a long refresh interval.
            while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
                message = self._pubsub.get_message(timeout=min(left, _WAIT_SLICE_S))
                if message is not None:
                    log.debug("pointer notification: %s", message.get("data"))
                    return
        except (redis.RedisError, OSError, ValueError):
            self._close_pubsub()
            self._stop.wait(max(0.0, deadline - time.monotonic()))

    def _close_pubsub(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                self._pubsub.close()
            self._pubsub = None

    # -- one step of the watcher ----------------------------------------------------------
    def poll_once(self) -> None:
        """Read the pointer, flip or refresh as needed. Safe to call from tests directly."""
        with self._poll_lock:
            value, readable = self._read_pointer()
            serving = self._serving
            if readable and value is not None:
                wanted: str | None = value
                origin = "pointer"
            elif serving is not None:
                wanted, origin = serving.index_id, serving.origin
            else:
                wanted, origin = (self._default_index_id() if self.use_default_index else None), "default"
            if wanted is None:
                return
            if serving is not None and serving.index_id == wanted and serving.origin != origin:
                # Serving the default index and the pointer now names that same index.
                self._serving = serving = replace(serving, origin=origin)
            if serving is None or wanted != serving.index_id:
                self._flip(wanted, origin)
            if serving is not None and self._serving is serving:
                # Not flipped (same id, or the new one was refused): keep the old one fresh.
                self._refresh(serving)
            self._check_drift()

    def _read_pointer(self) -> tuple[str | None, bool]:
        if not self.redis_url:
            return None, False
        try:
            if self._pointer is None:
                self._pointer = Pointer.from_url(self.redis_url, self.settings.pointer_key)
            value = self._pointer.get()
        except (redis.RedisError, OSError) as exc:
            if self.redis_up or self.redis_error is None:
                log.error(
                    "Redis at %s is unreachable (%s); still serving %s - pointer changes are "
                    "not seen until it is back",
                    describe_url(self.redis_url),
                    exc,
                    self._serving.index_id if self._serving else "nothing",
                )
            self.metrics.redis_errors.inc()
            self.redis_up, self.redis_error = False, f"{type(exc).__name__}: {exc}"
            self._close_pubsub()
            return None, False
        if not self.redis_up and self.redis_error is not None:
            log.info("Redis at %s is reachable again", describe_url(self.redis_url))
        self.redis_up, self.redis_error = True, None
        self.pointer_value = value
        return value, True

    def _default_index_id(self) -> str | None:
        try:
            model = self._model(self.settings.model)
        except SemsearchError as exc:
            if self._failure is None or self._failure.value != "<configured model>":
                self._record_failure("<configured model>", None, "load_error", str(exc))
            return None
        root = self.settings.indexes_dir / model.index_id
        return model.index_id if SnapshotStore(root).latest_generation() is not None else None

    # -- flip -----------------------------------------------------------------------------
    def _flip(self, index_id: str, origin: str) -> None:
        latest = self._latest_generation_of(index_id)
        failure = self._failure
        if failure is not None and failure.value == index_id and failure.generation == latest:
            return  # already reported; retry when a new generation appears or the pointer moves
        try:
            serving = self.load(index_id, origin)
        except InvalidIndexIdError as exc:
            self._record_failure(index_id, latest, "invalid_id", str(exc))
        except IndexNotFoundError as exc:
            self._record_failure(index_id, latest, "unknown_index", str(exc))
        except ModelMismatchError as exc:
            self._record_failure(index_id, latest, "model_mismatch", str(exc))
        except (SnapshotError, OSError, ValueError, KeyError) as exc:
            self._record_failure(index_id, latest, "snapshot_error", f"{type(exc).__name__}: {exc}")
        except SemsearchError as exc:
            self._record_failure(index_id, latest, "load_error", str(exc))
        else:
            previous = self._serving
            self._serving = serving
            if previous is not None:
                previous.hold.release()
            self._failure, self.last_error = None, None
            self._bad_generations = set()
            self.metrics.index_loads.labels(kind="flip").inc()
            mismatch_gauge(self.metrics.registry).labels(serving.index_id).set(0)  # issue 5
            log.info(
                "serving %s generation %d (%d documents)%s",
                serving.index_id,
                serving.generation,
                serving.manifest.counts.get("documents", 0),
                f", was {previous.index_id}" if previous else "",
            )

    def _latest_generation_of(self, index_id: str) -> int | None:
        try:
            return SnapshotStore(index_dir(self.settings, index_id)).latest_generation()
        except (SemsearchError, OSError):
            return None

    def _record_failure(self, value: str, generation: int | None, reason: str, message: str) -> None:
        serving = self._serving
        keeping = f"; still serving {serving.index_id}" if serving else "; nothing is served yet"
        self.last_error = f"pointer {value!r} not served ({reason}): {message}"
        self._failure = _Failure(value, generation, reason, message)
        self.metrics.pointer_invalid.labels(reason=reason).inc()
        if reason == "model_mismatch":  # issue 5: semsearch_model_mismatch{index_id} (indexer/drift.py)
            mismatch_gauge(self.metrics.registry).labels(value).set(1)
        log.error("refusing to serve %r (%s): %s%s", value, reason, message, keeping)

    def load(self, index_id: str, origin: str = "pointer") -> Serving:
        """Load and verify an index completely; nothing is swapped (the caller does that).

        Serves the newest generation that LOADS: a truncated manifest or a corrupt file makes it
        fall back to an older generation, logged and counted (semsearch_generations_skipped).
        The generation whose manifest picks the model is pinned meanwhile, so the writer's GC
        cannot remove it while the model loads; the returned Serving keeps a pin on the generation
        it serves (`Serving.hold`) until it is refreshed past it, flipped away from or stopped.
        A reader never repairs anything.
        """
        validate_index_id(index_id)
        store = SnapshotStore(index_dir(self.settings, index_id), keep=self.settings.keep_generations)
        skipped: dict[int, str] = {}
        hold = StandingPin()
        try:
            pin, manifest = store.pin_latest(on_skip=skipped.setdefault)
            hold = StandingPin(pin)
            model = self._model_for(manifest)
            index, manifest = store.load(
                model, self.settings, None, fallback=True, on_skip=skipped.setdefault
            )
            # Newer (written while the model loaded): the held pin protects its rows too; older
            # (the newest failed to load): it must be pinned itself, or the load is retried.
            try:
                hold.move_to(manifest.generation, store.pin)
            except IndexNotFoundError:
                raise SnapshotError(
                    f"generation {manifest.generation} of {store.root} was collected right after "
                    "it loaded (the writer moved on); the next poll loads a newer one"
                ) from None
        except BaseException:
            hold.release()
            raise
        finally:
            self._count_skipped(index_id, skipped)
        if index.index_id != index_id:
            raise SnapshotError(
                f"{store.root} holds index {index.index_id!r}, not {index_id!r}; the directory was "
                "renamed or copied - rebuild it or point at its real id"
            )
        return Serving(index, manifest, store, time.time(), origin, hold)

    def _model(self, source: str | None) -> EmbeddingModel:
        model = load_model(source, memory_mb=self.settings.embed_memory_mb)
        self._models.setdefault(model.info.fingerprint, model)
        return model

    def _model_for(self, manifest: Manifest) -> EmbeddingModel:
        """The model an index was built with, loaded once per process (a flip between indexes
        of the same model reuses its weights). The configured model is tried first, then the
        source recorded in the manifest; SnapshotStore.load still verifies whichever we pick."""
        wanted = manifest.model.get("fingerprint")
        if isinstance(wanted, str) and wanted in self._models:
            return self._models[wanted]
        configured = self._model(self.settings.model)
        if configured.info.fingerprint == wanted:
            return configured
        recorded = manifest.model.get("source")
        if isinstance(recorded, str) and Path(recorded).is_dir():
            candidate = self._model(recorded)
            if candidate.info.fingerprint == wanted:
                return candidate
        return configured  # load() will refuse it with a ModelMismatchError naming both models

    def _count_skipped(self, index_id: str, skipped: dict[int, str]) -> None:
        for generation in sorted(skipped):
            self.metrics.generations_skipped.labels(index_id).inc()
            log.warning("%s: generation %d skipped: %s", index_id, generation, skipped[generation])

    # -- near-real-time refresh -----------------------------------------------------------
    def _refresh(self, serving: Serving) -> None:
        """Apply the newest newer generation that loads; a bad one is skipped (and counted),
        never fatal: the served index stays as it is until a generation applies."""
        newer = [
            g
            for g in serving.store.generations()
            if g > serving.generation and g not in self._bad_generations
        ]
        for generation in reversed(newer):
            try:
                manifest = serving.store.refresh(serving.index, generation)
            except IndexNotFoundError:
                continue  # collected meanwhile; the others are still candidates
            except (SemsearchError, OSError, ValueError, KeyError) as exc:
                self._bad_generations.add(generation)
                self._count_skipped(serving.index_id, {generation: f"{type(exc).__name__}: {exc}"})
                continue
            break
        else:
            return
        # The refreshed generation is pinned before the old pin goes (if it was collected in the
        # meantime, the old pin stays: it protects the newer generation's rows as well).
        serving.hold.move_to(manifest.generation, serving.store.pin)
        self._bad_generations = {g for g in self._bad_generations if g > manifest.generation}
        self._serving = replace(serving, manifest=manifest)
        self.metrics.index_loads.labels(kind="refresh").inc()
        log.debug("refreshed %s to generation %d", serving.index_id, manifest.generation)

    def _check_drift(self) -> None:
        """Re-verify the served model against the manifest every drift_check_s: a library
        changed under a running process must stop answering, not search another space."""
        serving = self._serving
        if serving is None or time.monotonic() - self._last_drift_check < self.settings.drift_check_s:
            return
        self._last_drift_check = time.monotonic()
        try:
            ensure_compatible(serving.index.model, serving.manifest.model, serving.index.canaries, serving.index_id)
        except ModelMismatchError as exc:
            self._serving = None
            serving.hold.release()
            latest = serving.store.latest_generation()
            self._record_failure(serving.index_id, latest, "model_mismatch", str(exc))
