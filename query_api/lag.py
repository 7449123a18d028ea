"""How far the served generation is behind the Kafka log, without a broker round trip per request.

Lag = log end - the offsets the served generation contains, per partition of the topics its
manifest names. The offsets are on disk already (Manifest.offsets); the log end is not, and
asking the broker on every GET /index or scrape would tie both to the broker's health. So a
background thread reads the log ends every SEMSEARCH_LAG_POLL_S (contracts.log_end: the probe
that is right on Tansu as well as on Apache Kafka) and requests combine the last reading with
the manifest they serve - a refresh moves the lag with it, the next poll moves the log end.

A broker that cannot be reached makes the lag *unknown*, with the reason, and never an error:
the reading it failed replaces the last good one at once (an old log end would understate the
lag), and a reading older than a few poll intervals counts as unknown too. /search never waits
for any of this.

The newest event's age needs no broker: the manifest records the Kafka timestamp of the newest
event its offsets cover (Manifest.newest_event_ms), so it is known whenever an index is served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from contracts.errors import BrokerError
from contracts.log_end import read_log_ends
from contracts.offsets import Offsets, copy_offsets
from indexer.snapshots import Manifest

log = logging.getLogger(__name__)

# The probe may take this long per topic (one poll interval, within these bounds: a loaded
# machine needs seconds for a metadata round trip), and a poller quieter than this many
# intervals is considered stuck: its reading no longer counts.
_PROBE_TIMEOUT_MIN_S = 5.0
_PROBE_TIMEOUT_MAX_S = 10.0
_STALE_INTERVALS = 3
# librdkafka logs every failed connect at level 3; the poller says it once itself (below).
_QUIET_CLIENT = {"log_level": 2}


@dataclass(frozen=True, slots=True)
class TopicReading:
    """One poll of one topic: (low, high) watermark per partition, or why there are none."""

    ends: dict[int, tuple[int, int]]
    missing: tuple[int, ...]
    read_at: float  # time.time() of the attempt
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Lag:
    """The lag of one served generation, as GET /index and /metrics report it."""

    # topic -> partition -> events in the log past the generation's offsets; None: unknown.
    events: dict[str, dict[int, int]] | None
    # Why `events` is None, or which partitions it lacks; None when complete.
    reason: str | None
    log_end_age_s: float | None
    newest_event_at: float | None
    newest_event_age_s: float | None


def lag_targets(offsets: Offsets, default_topic: str) -> Offsets:
    """The topics (and positions to probe from) of a generation: those its offsets name, or the
    configured docs topic for a generation that has consumed nothing yet."""
    return copy_offsets(offsets) if offsets else {default_topic: {}}


def compute_lag(
    manifest: Manifest,
    readings: dict[str, TopicReading],
    *,
    default_topic: str,
    now: float,
    stale_after_s: float,
    off_reason: str | None = None,
) -> Lag:
    """Combine a manifest with the last log-end readings; O(partitions), no I/O."""
    newest = manifest.newest_event_ms
    newest_at = newest / 1000.0 if newest is not None else None
    newest_age = round(max(0.0, now - newest_at), 3) if newest_at is not None else None
    if off_reason is not None:
        return Lag(None, off_reason, None, newest_at, newest_age)
    events: dict[str, dict[int, int]] = {}
    reasons: list[str] = []
    read_at: list[float] = []
    for topic, positions in sorted(lag_targets(manifest.offsets, default_topic).items()):
        reading = readings.get(topic)
        if reading is None:
            reasons.append(f"the log end of {topic} has not been read yet")
            continue
        if reading.error is not None:
            reasons.append(reading.error)
            continue
        age = now - reading.read_at
        if age > stale_after_s:
            reasons.append(f"the log end of {topic} was last read {age:.0f}s ago (poller stuck?)")
            continue
        read_at.append(reading.read_at)
        # A partition the generation never read from lags by everything in it.
        events[topic] = {
            p: max(0, high - positions.get(p, low)) for p, (low, high) in sorted(reading.ends.items())
        }
        unknown = sorted(set(reading.missing) | (set(positions) - set(reading.ends)))
        if unknown:
            reasons.append(f"no log end for {topic} partition(s) {unknown}")
    return Lag(
        events or None,
        "; ".join(reasons) or None,
        round(now - min(read_at), 3) if read_at else None,
        newest_at,
        newest_age,
    )


class LagPoller:
    """Reads the log ends of `targets()` every `interval_s` in one daemon thread; `targets`
    returns the served generation's offsets, or None while nothing is served."""

    def __init__(
        self,
        bootstrap: str | None,
        interval_s: float,
        targets: Callable[[], Offsets | None],
        *,
        default_topic: str,
    ) -> None:
        self.bootstrap = bootstrap
        self.interval_s = interval_s
        self.targets = targets
        self.default_topic = default_topic
        self.probe_timeout_s = min(_PROBE_TIMEOUT_MAX_S, max(_PROBE_TIMEOUT_MIN_S, interval_s))
        self.stale_after_s = _STALE_INTERVALS * interval_s + self.probe_timeout_s
        self._readings: dict[str, TopicReading] = {}
        self._reported: dict[str, str | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def off_reason(self) -> str | None:
        """Why the poller never runs in this process, or None when it does."""
        if not self.bootstrap:
            return "KAFKA_BOOTSTRAP_SERVERS is not set, so the API cannot read where the log ends"
        if self.interval_s <= 0:
            return "lag polling is off (SEMSEARCH_LAG_POLL_S=0)"
        return None

    @property
    def readings(self) -> dict[str, TopicReading]:
        return self._readings

    def start(self) -> None:
        if self._thread is not None or self.off_reason is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lag-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()  # also aborts a probe in progress
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # the poller must survive anything; the next round retries
                log.exception("lag poll failed; will retry")
            self._stop.wait(self.interval_s)

    def poll_once(self) -> None:
        """Read the log end of every target topic once (tests call it directly)."""
        targets = self.targets()
        if self.bootstrap is None or targets is None:
            return
        readings: dict[str, TopicReading] = {}
        for topic, positions in lag_targets(targets, self.default_topic).items():
            started = time.time()
            try:
                read = read_log_ends(
                    self.bootstrap,
                    topic,
                    positions,
                    timeout_s=self.probe_timeout_s,
                    abort=self._stop,
                    client_config=_QUIET_CLIENT,
                )
            except BrokerError as exc:
                readings[topic] = TopicReading({}, (), started, f"lag unknown: {exc}")
            else:
                readings[topic] = TopicReading(read.ends, tuple(read.missing), started)
            self._report(topic, readings[topic].error)
        self._readings = readings  # one assignment: readers see the old or the new readings

    def _report(self, topic: str, error: str | None) -> None:
        """Log a change of state once, not every poll."""
        previous, self._reported[topic] = self._reported.get(topic), error
        if error == previous:
            return
        if error is not None:
            log.warning("%s (retrying every %gs)", error, self.interval_s)
        else:
            log.info("the log end of %s is readable again", topic)

    def lag_of(self, manifest: Manifest, now: float | None = None) -> Lag:
        return compute_lag(
            manifest,
            self._readings,
            default_topic=self.default_topic,
            now=time.time() if now is None else now,
            stale_after_s=self.stale_after_s,
            off_reason=self.off_reason,
        )


class LagCollector(Collector):
    """semsearch_index_lag_* at scrape time, from the same Lag GET /index reports."""

    def __init__(self, lag: Callable[[], Lag | None]) -> None:
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        lag = self.lag()
        events = GaugeMetricFamily(
            "semsearch_index_lag_events",
            "Events in the Kafka log past the offsets the served generation contains",
            labels=["topic", "partition"],
        )
        known = GaugeMetricFamily(
            "semsearch_index_lag_known",
            "1 while the API knows where the log ends (0: broker unreachable, polling off)",
        )
        age = GaugeMetricFamily(
            "semsearch_index_newest_event_age_seconds",
            "Age of the newest event (its Kafka timestamp) the served generation contains",
        )
        if lag is not None:
            for topic, parts in sorted((lag.events or {}).items()):
                for partition, value in sorted(parts.items()):
                    events.add_metric([topic, str(partition)], float(value))
            if lag.newest_event_age_s is not None:
                age.add_metric([], lag.newest_event_age_s)
        known.add_metric([], 1.0 if lag is not None and lag.events is not None else 0.0)
        yield events
        yield known
        yield age
