"""The active-index pointer: one Redis key naming the index id every API node serves.

The value is an index id (`minilm-l6-v2-1a2b3c4d5e6f`), never a path: readers resolve it under
their own data root, so whoever can write Redis still cannot make an API open files elsewhere.

Every change goes through one Lua script, so it is atomic on the server: compare-and-set (no
lost update when two migrators race - exactly one of them wins), the previous id is pushed on a
history list (for rollback), the new id is recorded in a registry of validated ids, and a
notification is published so API nodes flip at once instead of at their next poll.

Keys, derived from the pointer key's namespace (`semsearch:active` → `semsearch:`):
  <ns>:active    the active id (the pointer key itself, SEMSEARCH_POINTER_KEY)
  <ns>:history   list, newest first: ids that were active before (rollback targets)
  <ns>:indexes   hash id → JSON: ids that passed validation and may be pointed at again
  <ns>:pointer   pub/sub channel: JSON {"op", "old", "new", "at"} on every change
  <ns>:migration the current (or last) model migration's status document: the migrator
                 writes it, GET /index shows it; MIGRATION_STATUS_FILE in the data directory
                 holds the same document for a process without Redis
  <ns>:requests  hashes of the migration service's request ledger (and <ns>:requests:pending)
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from contracts.errors import SemsearchError
from contracts.ids import validate_index_id

HISTORY_MAX = 50
MIGRATION_STATUS_FILE = "status.json"

_CAS = """
local cur = redis.call('GET', KEYS[1])
if cur == false then cur = '' end
if cur ~= ARGV[1] then return {0, cur} end
if cur == ARGV[2] then return {1, cur} end
redis.call('SET', KEYS[1], ARGV[2])
if cur ~= '' then
  redis.call('LPUSH', KEYS[2], cur)
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 0 then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
end
redis.call('PUBLISH', KEYS[4], cjson.encode({op='set', old=cur, new=ARGV[2], at=tonumber(ARGV[5])}))
return {1, cur}
"""

_ROLLBACK = """
local cur = redis.call('GET', KEYS[1])
if cur == false then return {0, '', 'unset'} end
if ARGV[1] ~= '' and cur ~= ARGV[1] then return {0, cur, 'moved'} end
local entries = redis.call('LRANGE', KEYS[2], 0, -1)
for i, prev in ipairs(entries) do
  if prev ~= cur and redis.call('HEXISTS', KEYS[3], prev) == 1 then
    redis.call('SET', KEYS[1], prev)
    redis.call('LTRIM', KEYS[2], i, -1)
    redis.call('PUBLISH', KEYS[4], cjson.encode({op='rollback', old=cur, new=prev, at=tonumber(ARGV[2])}))
    return {1, prev, cur}
  end
end
return {0, cur, 'empty'}
"""


class PointerError(SemsearchError):
    """The pointer cannot be read or changed as asked."""


def describe_url(url: str) -> str:
    """The URL with any password masked, fit for logs, /readyz and metrics."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def namespace_of(pointer_key: str) -> str:
    """The namespace every key above shares: the pointer key without its last `:` part."""
    return pointer_key.rsplit(":", 1)[0]


def migration_status_key(pointer_key: str) -> str:
    return f"{namespace_of(pointer_key)}:migration"


class Pointer:
    """Reads and changes the active-index pointer in one Redis database."""

    def __init__(self, client: redis.Redis, key: str = "semsearch:active") -> None:
        self.client = client
        self.key = key
        self.namespace = namespace_of(key)
        self.history_key = f"{self.namespace}:history"
        self.registry_key = f"{self.namespace}:indexes"
        self.channel = f"{self.namespace}:pointer"
        self.migration_status_key = migration_status_key(key)
        self._cas = client.register_script(_CAS)
        self._rollback = client.register_script(_ROLLBACK)

    @classmethod
    def from_url(cls, url: str, key: str = "semsearch:active", timeout_s: float = 2.0) -> Pointer:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=10
        )
        return cls(client, key)

    def close(self) -> None:
        self.client.close()

    @property
    def _keys(self) -> list[str]:
        return [self.key, self.history_key, self.registry_key, self.channel]

    # -- reading --------------------------------------------------------------------------
    def get(self) -> str | None:
        """The raw pointer value (None when unset). Callers validate it before use: the
        pointer can be written by anything with Redis access, so it is untrusted input."""
        value = self.client.get(self.key)
        return None if value is None else _text(value)

    def history(self) -> list[str]:
        """Previously active ids, newest first."""
        return [_text(v) for v in self.client.lrange(self.history_key, 0, -1)]

    def registered(self) -> dict[str, dict[str, Any]]:
        """Validated ids and what was recorded when they were registered."""
        raw: dict[Any, Any] = self.client.hgetall(self.registry_key)
        out = {}
        for key, value in raw.items():
            try:
                out[_text(key)] = json.loads(_text(value))
            except ValueError:
                out[_text(key)] = {}
        return out

    # -- changing -------------------------------------------------------------------------
    def register(self, index_id: str, **info: Any) -> None:
        """Record that `index_id` passed validation, so it may become active (or be rolled back to)."""
        validate_index_id(index_id)
        self.client.hset(self.registry_key, index_id, json.dumps({"registered_at": time.time(), **info}))

    def unregister(self, index_id: str) -> None:
        """Withdraw an id (e.g. found broken): rollback will skip it from now on."""
        self.client.hdel(self.registry_key, index_id)

    def compare_and_set(self, expected_old: str | None, new: str, **info: Any) -> bool:
        """Point at `new` if the pointer still names `expected_old` (None: still unset).

        Atomic on the server: of two racing writers with the same `expected_old`, exactly one
        wins and the other gets False (re-read and decide again). Setting the current value
        again is a successful no-op. `new` is registered as validated (with `info`) if it was
        not yet.
        """
        validate_index_id(new)
        if expected_old is not None:
            validate_index_id(expected_old)
        record = json.dumps({"registered_at": time.time(), **info})
        result = self._cas(
            keys=self._keys, args=[expected_old or "", new, record, HISTORY_MAX, time.time()]
        )
        return bool(int(result[0]))

    def set_if_unset(self, new: str, **info: Any) -> bool:
        """First start: name `new` active unless some index already is."""
        return self.compare_and_set(None, new, **info)

    def rollback(self, expected_current: str | None = None) -> str:
        """Flip back to the most recent previously-active id that is still registered.

        Atomic like compare_and_set; with `expected_current` it refuses if the pointer moved
        meanwhile. Returns the id now active. The id rolled back from is not pushed on the
        history, so repeated rollbacks walk further back instead of flip-flopping.
        """
        if expected_current is not None:
            validate_index_id(expected_current)
        result = self._rollback(keys=self._keys, args=[expected_current or "", time.time()])
        if int(result[0]) == 1:
            return _text(result[1])
        reason = _text(result[2])
        current = _text(result[1])
        if reason == "unset":
            raise PointerError(f"the pointer {self.key} is unset; there is nothing to roll back from")
        if reason == "moved":
            raise PointerError(
                f"the pointer moved to {current} (expected {expected_current}); re-read it and retry"
            )
        raise PointerError(
            f"no previously active, still-registered index in {self.history_key} to roll back to "
            f"from {current}; set one explicitly with compare_and_set"
        )

    def subscribe(self) -> redis.client.PubSub:
        """A pub/sub handle subscribed to change notifications (poll it with get_message)."""
        pubsub: redis.client.PubSub = self.client.pubsub(  # type: ignore[no-untyped-call]
            ignore_subscribe_messages=True
        )
        pubsub.subscribe(self.channel)
        return pubsub
