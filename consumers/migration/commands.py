"""`semsearch upgrade-model` and `semsearch rollback`: the operator's two migration verbs.

upgrade-model only publishes a request on `control` (one event; the indexer's migration service
does the work, see consumers/migration/service.py) and can wait for the outcome. rollback talks
to Redis directly (the same `flip.roll_back` as a `rollback` event): it must work when Kafka is
the thing that is broken.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import redis

from consumers.migration.flip import announce_move, roll_back
from consumers.migration.status import FINISHED_STATES
from contracts.errors import SemsearchError
from contracts.events import ModelUpgrade
from contracts.pointer import Pointer, migration_status_key
from contracts.settings import Settings
from contracts.topics import ensure_topics
from indexer.snapshots import SnapshotStore, index_dir
from producers.publisher import Publisher

log = logging.getLogger(__name__)


def _redis_settings() -> Settings:
    settings = Settings.from_env()
    if not settings.redis_url:
        raise SemsearchError(
            "REDIS_URL is not set; it must name the Redis that holds the active-index pointer "
            "(the one `semsearch up` prints, e.g. export REDIS_URL=redis://127.0.0.1:6379/0)"
        )
    return settings


def upgrade_command(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not settings.kafka_bootstrap:
        raise SemsearchError(
            "KAFKA_BOOTSTRAP_SERVERS is not set; the request goes to the control topic of the "
            "running stack: export the address `semsearch up` printed"
        )
    model = args.model
    path = Path(model).expanduser()
    if path.is_dir():
        model = str(path.resolve())  # the indexer resolves it on its host: make it absolute
    elif path.exists():
        raise SemsearchError(f"{path} is a file; --model takes a model directory")
    else:
        log.warning("%s is not a directory here; the indexer must be able to read it", model)
    ensure_topics(settings.kafka_bootstrap, {settings.control_topic: 1})
    request = ModelUpgrade(model=model, reason=args.reason)
    with Publisher(settings.kafka_bootstrap) as publisher:
        publisher.publish_control(settings.control_topic, request)
    print(f"published model-upgrade to {model} on {settings.control_topic}")
    if not args.wait:
        print("follow it with GET /index (migration) or the indexer's log")
        return 0
    return _wait_for_outcome(_redis_settings(), request, args.timeout)


def _wait_for_outcome(settings: Settings, request: ModelUpgrade, timeout_s: float) -> int:
    assert settings.redis_url
    pointer = Pointer.from_url(settings.redis_url, settings.pointer_key)
    key = migration_status_key(settings.pointer_key)
    deadline = time.monotonic() + timeout_s
    last_state = None
    try:
        while time.monotonic() < deadline:
            raw = pointer.client.get(key)
            status: dict[str, Any] = json.loads(raw) if raw else {}
            mine = status.get("requested_at") == request.requested_at
            state = status.get("state") if mine else None
            if state and state != last_state:
                print(f"migration: {state}", flush=True)
                last_state = state
            if mine and state in FINISHED_STATES and status.get("outcome"):
                print(status.get("message", ""))
                return 0 if status["outcome"] in ("flipped", "noop") else 1
            time.sleep(0.5)
    finally:
        pointer.close()
    print(f"no outcome within {timeout_s:.0f}s; is `semsearch index` running with REDIS_URL set?")
    return 1


def rollback_command(args: argparse.Namespace) -> int:
    settings = _redis_settings()
    assert settings.redis_url
    pointer = Pointer.from_url(settings.redis_url, settings.pointer_key)
    try:
        move = roll_back(pointer, args.to)
    except redis.RedisError as exc:
        raise SemsearchError(f"Redis at REDIS_URL is unreachable: {exc}") from None
    finally:
        pointer.close()
    if SnapshotStore(index_dir(settings, move.to_index)).latest_generation() is None:
        log.warning(
            "%s has no snapshot under %s; API nodes keep serving %s until it appears",
            move.to_index,
            settings.indexes_dir,
            move.from_index,
        )
    print(f"active index: {move.to_index} (was {move.from_index})")
    if settings.kafka_bootstrap:
        with Publisher(settings.kafka_bootstrap) as publisher:
            announce_move(publisher, settings.control_topic, move)
    return 0


def register(subparsers: Any) -> None:
    upgrade = subparsers.add_parser(
        "upgrade-model",
        help="request a zero-downtime migration to another embedding model",
        description="Publish a model-upgrade event on the control topic (KAFKA_BOOTSTRAP_SERVERS). "
        "The indexer builds a shadow index with the new model from the serving index, catches "
        "it up with the docs topic, validates it (documents, NaN, dimensions, canaries, nDCG@10 "
        "and recall@10 on SEMSEARCH_VALIDATION_QUERIES/_QRELS within SEMSEARCH_GATE_TOLERANCE, "
        "latency under SEMSEARCH_GATE_P99_MS) and flips the Redis pointer only if it passes.",
    )
    upgrade.add_argument("--model", required=True, help="sentence-transformers model directory")
    upgrade.add_argument("--reason", help="free text recorded with the request")
    upgrade.add_argument(
        "--wait",
        action="store_true",
        help="wait for the outcome (needs REDIS_URL); exit 1 unless flipped",
    )
    upgrade.add_argument("--timeout", type=float, default=3600.0, help="seconds to --wait (3600)")
    upgrade.set_defaults(func=upgrade_command)

    rollback = subparsers.add_parser(
        "rollback",
        help="point serving back at the previous validated index (REDIS_URL)",
        description="Atomically move the active-index pointer in Redis back to the most recent "
        "previously active index that passed validation (or to --to ID). API nodes load it "
        "fully, then swap; the indexer keeps rollback targets fresh.",
    )
    rollback.add_argument("--to", help="a registered index id to return to instead")
    rollback.set_defaults(func=rollback_command)
