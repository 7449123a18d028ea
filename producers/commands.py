"""`semsearch produce` and `semsearch delete`: put document changes on the `docs` topic."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from contracts.corpus import SkippedLines
from contracts.events import DeleteEvent, new_version
from contracts.settings import Settings, SettingsError
from contracts.topics import ensure_topics, topic_layout
from producers.corpus import read_events
from producers.publisher import Publisher, PublishReport

log = logging.getLogger(__name__)


def require_bootstrap(settings: Settings) -> str:
    """Producers need a broker that outlives them: an embedded one would vanish on exit."""
    if not settings.kafka_bootstrap:
        raise SettingsError(
            "KAFKA_BOOTSTRAP_SERVERS is not set, so there is no broker to publish to. Start the "
            "stack with `semsearch up` (or `semsearch index`) and export the broker address it "
            "logs, e.g. KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092"
        )
    return settings.kafka_bootstrap


def _connect(settings: Settings) -> Publisher:
    bootstrap = require_bootstrap(settings)
    publisher = Publisher(bootstrap)
    ensure_topics(bootstrap, {settings.docs_topic: topic_layout(settings)[settings.docs_topic]})
    return publisher


def _finish(report: PublishReport, topic: str, what: str) -> int:
    if report.failed:
        print(f"semsearch: {what}: {report.summary()}", file=sys.stderr)
        return 1
    print(f"{what}: {report.delivered} event(s) acknowledged by the broker on topic {topic!r}")
    return 0


def produce_command(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    topic = args.topic or settings.docs_topic
    skipped = SkippedLines()
    events = read_events(args.corpus, skipped)
    with _connect(settings) as publisher:
        report = publisher.publish_docs(topic, events, progress=not args.quiet, description=args.corpus.name)
    if skipped:
        print(f"semsearch produce: {args.corpus}: {skipped.summary()}", file=sys.stderr)
    if report.delivered == 0 and not report.failed:
        print(f"semsearch produce: {args.corpus} holds no publishable documents", file=sys.stderr)
        return 1
    return _finish(report, topic, "produce")


def delete_command(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    topic = args.topic or settings.docs_topic
    if args.tombstone and args.version is not None:
        raise SettingsError("--tombstone deletes whatever version is held; do not combine it with --version")
    version = None if args.tombstone else (args.version if args.version is not None else new_version())
    with _connect(settings) as publisher:
        report = publisher.publish_docs(topic, (DeleteEvent(doc_id, version) for doc_id in args.doc_ids))
    return _finish(report, topic, "delete")


def register(subparsers: Any) -> None:
    produce = subparsers.add_parser(
        "produce",
        help="publish a BEIR corpus.jsonl as upsert events",
        description="Publish every line of a BEIR corpus (_id, title, text, optional integer "
        "version and metadata object) to the docs topic. Needs KAFKA_BOOTSTRAP_SERVERS. Lines "
        "without a version get the current time in nanoseconds.",
    )
    produce.add_argument("corpus", type=Path, metavar="FILE.jsonl")
    produce.add_argument("--topic", help="override SEMSEARCH_DOCS_TOPIC")
    produce.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    produce.set_defaults(func=produce_command)

    delete = subparsers.add_parser(
        "delete",
        help="publish delete events for document ids",
        description="Publish a delete for each DOC_ID. By default the delete carries the current "
        "time as its version, so it removes every older version and a late, older upsert cannot "
        "bring the document back.",
    )
    delete.add_argument("doc_ids", nargs="+", metavar="DOC_ID")
    delete.add_argument("--version", type=int, help="version of the delete (default: now in ns)")
    delete.add_argument(
        "--tombstone", action="store_true", help="publish a Kafka tombstone (null value) instead"
    )
    delete.add_argument("--topic", help="override SEMSEARCH_DOCS_TOPIC")
    delete.set_defaults(func=delete_command)
