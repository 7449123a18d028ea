"""The gate of a migration: two indexes at the same stream position, every check, one verdict.

There is one gate path, whichever index is gated (a freshly built shadow, or an index another
worker of this process keeps fresh): the live copy is replayed from its snapshot's offsets to
exactly where the candidate stands (`replay`), the held-out set is read at that moment (so an
operator who fixes SEMSEARCH_VALIDATION_* needs no restart), `indexer.validation` runs every
check, and the report - pass or fail - is written beside the candidate's generations
(`gate-report.json`), exported, put in the status and announced on control. What to do with
the verdict is the orchestrator's; the gate never touches the pointer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from consumers.migration.errors import MigrationError
from consumers.migration.replay import replay
from consumers.migration.status import MIGRATION_GATE, MigrationStatus, announce
from contracts.errors import SemsearchError
from contracts.events import GateReportEvent
from contracts.offsets import Offsets
from contracts.settings import Settings
from indexer.beir import read_qrels, read_queries
from indexer.index import Index
from indexer.snapshots import Manifest
from indexer.validation import GateReport, validate_shadow
from producers.publisher import Publisher

log = logging.getLogger(__name__)

GATE_REPORT_FILE = "gate-report.json"


def load_validation_set(
    settings: Settings,
) -> tuple[dict[str, str] | None, dict[str, dict[str, int]] | None]:
    """The held-out set, read at gate time (an unset path leaves the gate to refuse)."""
    if settings.validation_queries is None or settings.validation_qrels is None:
        return None, None
    try:
        return read_queries(settings.validation_queries), read_qrels(settings.validation_qrels)
    except SemsearchError as exc:
        raise MigrationError(
            f"the held-out set is unreadable ({exc}); fix SEMSEARCH_VALIDATION_QUERIES / "
            "SEMSEARCH_VALIDATION_QRELS and publish the upgrade again"
        ) from None


def gate_stats(report: GateReport) -> dict[str, Any]:
    """The figures of a report that go into a migration's outcome stats."""
    quality = report.check("quality").data
    latency = report.check("latency").data
    return {
        "shadow_quality": quality.get("shadow"),
        "live_quality": quality.get("live"),
        "gate_p99_ms": latency.get("shadow_p99_ms"),
    }


class Gate:
    """Gates candidates against private live copies and makes every verdict known."""

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap: str,
        status: MigrationStatus,
        publisher: Publisher | None,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.status = status
        self.publisher = publisher

    def check(
        self,
        candidate: Index,
        candidate_manifest: Manifest,
        at: Offsets,
        live: Index,
        live_start: Offsets,
        report_dir: Path,
    ) -> GateReport:
        """Bring `live` (a private copy at `live_start`) to `at`, where `candidate` stands, run
        every check, store the report in `report_dir` and publish it."""
        self.status.update("validating", progress={"offsets": at})
        replayed = replay(live, self.bootstrap, live_start, at)
        log.info("migration: live copy replayed %d events to offsets %s", replayed.events, at)
        queries, qrels = load_validation_set(self.settings)
        report = validate_shadow(
            candidate,
            live,
            queries=queries,
            qrels=qrels,
            tolerance=self.settings.gate_tolerance,
            shadow_manifest=candidate_manifest,
            shadow_offsets=at,
            live_offsets=replayed.reached,
            p99_bound_ms=self.settings.gate_p99_ms,
        )
        (report_dir / GATE_REPORT_FILE).write_text(json.dumps(report.to_json(), indent=1))
        self.publish(report)
        return report

    def publish(self, report: GateReport) -> None:
        """Metric, status, log and a `gate-report` event on control, pass or fail."""
        MIGRATION_GATE.labels(report.shadow_index_id).set(1 if report.passed else 0)
        self.status.update(gate={"passed": report.passed, "reasons": report.reasons})
        log.log(logging.INFO if report.passed else logging.ERROR, "%s", report.summary())
        announce(
            self.publisher,
            self.settings.control_topic,
            GateReportEvent(
                index_id=report.shadow_index_id,
                passed=report.passed,
                reason="; ".join(report.reasons) or report.summary(),
                metrics=report.to_json(),
            ),
        )
