"""PointerWatcher: what the Redis pointer says, and a wake-up when it changes.

The pointer is read on every poll (the fallback that always works) and, between polls, a pub/sub
subscription to `contracts.pointer`'s change channel ends the wait early, so a flip is seen in
milliseconds rather than a refresh interval. Redis being down is a state, not an error: it is
recorded (`redis_up`, `redis_error` → /readyz, semsearch_redis_up/_errors), logged once per
outage, and the caller keeps serving what it has. The value read is untrusted: the caller
validates it before use.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass

import redis

from contracts.pointer import Pointer, describe_url
from query_api.metrics import ApiMetrics

log = logging.getLogger(__name__)

_WAIT_SLICE_S = 0.25


@dataclass(frozen=True, slots=True)
class PointerRead:
    """One read: `readable` is False when there is no Redis to ask or it did not answer."""

    value: str | None
    readable: bool


class PointerWatcher:
    """Reads the pointer key at `redis_url` (none: there is no pointer, never readable)."""

    def __init__(self, redis_url: str | None, pointer_key: str, metrics: ApiMetrics) -> None:
        self.redis_url = redis_url
        self.pointer_key = pointer_key
        self.metrics = metrics
        self._pointer: Pointer | None = None
        self._pubsub: redis.client.PubSub | None = None
        self.redis_up: bool = False
        self.redis_error: str | None = None
        self.value: str | None = None  # the last value read (None: unset or never read)

    @property
    def pointer(self) -> Pointer | None:
        """The connection, while the last read reached Redis (for other keys in its namespace)."""
        return self._pointer if self.redis_up else None

    def read(self, serving_id: str | None) -> PointerRead:
        """The pointer's value now. `serving_id` only words the outage log ("still serving")."""
        if not self.redis_url:
            return PointerRead(None, False)
        try:
            if self._pointer is None:
                self._pointer = Pointer.from_url(self.redis_url, self.pointer_key)
            value = self._pointer.get()
        except (redis.RedisError, OSError) as exc:
            if self.redis_up or self.redis_error is None:
                log.error(
                    "Redis at %s is unreachable (%s); still serving %s - pointer changes are "
                    "not seen until it is back",
                    describe_url(self.redis_url),
                    exc,
                    serving_id or "nothing",
                )
            self.metrics.redis_errors.inc()
            self.redis_up, self.redis_error = False, f"{type(exc).__name__}: {exc}"
            self._close_pubsub()
            return PointerRead(None, False)
        if not self.redis_up and self.redis_error is not None:
            log.info("Redis at %s is reachable again", describe_url(self.redis_url))
        self.redis_up, self.redis_error = True, None
        self.value = value
        return PointerRead(value, True)

    def wait(self, timeout_s: float, stop: threading.Event) -> None:
        """Sleep up to `timeout_s`, waking early on a pointer notification or on `stop`."""
        if self._pubsub is None and self.redis_up and self._pointer is not None:
            try:
                self._pubsub = self._pointer.subscribe()
            except (redis.RedisError, OSError):
                self._pubsub = None
        if self._pubsub is None:
            stop.wait(timeout_s)
            return
        deadline = time.monotonic() + timeout_s
        try:
            # Short slices so a stop is never kept waiting for a long refresh interval.
            while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
                message = self._pubsub.get_message(timeout=min(left, _WAIT_SLICE_S))
                if message is not None:
                    log.debug("pointer notification: %s", message.get("data"))
                    return
        except (redis.RedisError, OSError, ValueError):
            self._close_pubsub()
            stop.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self._close_pubsub()
        if self._pointer is not None:
            self._pointer.close()
            self._pointer = None

    def _close_pubsub(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                self._pubsub.close()
            self._pubsub = None
