"""The processes of one fault row: an embedded broker and Redis owned by this process, the
indexer and the API as child processes in their own process groups (so `kill -9` is real), and
the cleanup that undoes all of it (processes, brokers, Redis servers, mounts) on any exit."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench._process import kill_group, start_cli, stop_process, wait_until
from bench.crash_loop import TOPICS
from bench.faults.load import Acks, Feed, QueryLoad
from contracts.events import UpsertEvent
from contracts.settings import Settings
from contracts.topics import ensure_topics
from indexer.model import EmbeddingModel
from indexer.snapshots import SnapshotStore, index_dir
from semsearch.embedded.broker import EmbeddedBroker, free_port
from semsearch.embedded.redis import EmbeddedRedis, start_embedded_redis
from semsearch.stack import set_pointer_when_indexed


# -- cleanup: every process, broker, Redis and mount this run made ------------------------------
class Cleanup:
    """Undo everything on any exit (atexit covers an uncaught exception and SIGTERM via main)."""

    def __init__(self) -> None:
        self.actions: list[Callable[[], None]] = []

    def add(self, action: Callable[[], None]) -> Callable[[], None]:
        self.actions.append(action)
        return action

    def discard(self, action: Callable[[], None]) -> None:
        if action in self.actions:
            self.actions.remove(action)

    def run(self) -> None:
        while self.actions:
            action = self.actions.pop()
            try:
                action()
            except Exception as exc:  # cleanup goes on with the rest
                print(f"cleanup: {exc}", file=sys.stderr)


CLEANUP = Cleanup()
atexit.register(CLEANUP.run)


def mount_tmpfs(directory: Path, size_mb: int) -> str | None:
    """Mount a small tmpfs; returns why not when the kernel or our rights refuse."""
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}M", "tmpfs", str(directory)], capture_output=True, text=True
    )
    if done.returncode != 0:
        return (done.stderr or done.stdout).strip() or f"mount exited {done.returncode}"
    def unmount() -> None:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)

    CLEANUP.add(unmount)
    return None


# -- one stack ----------------------------------------------------------------------------------
class Stack:
    """Broker and Redis owned by this process; indexer and API as killable child processes."""

    def __init__(self, work: Path, data_dir: Path, model: EmbeddingModel, env: dict[str, str] | None = None) -> None:
        self.work = work
        self.data_dir = data_dir
        self.model = model
        self.settings = Settings(data_dir=data_dir)
        self.store = SnapshotStore(index_dir(self.settings, model.index_id))
        self.extra_env = env or {}
        self.broker: EmbeddedBroker | None = None
        self.redis: EmbeddedRedis | None = None
        self.indexer: subprocess.Popen[bytes] | None = None
        self.api: subprocess.Popen[bytes] | None = None
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.http = httpx.Client(timeout=10.0)
        self.indexer_log = work / "indexer.log"
        self.api_log = work / "api.log"
        self.indexer_restarts = 0
        self.indexer_mark = 0  # log size when the current indexer started
        self.confirmed: dict[str, int] = {}  # doc id -> version seen served (measure.wait_served)

    # -- parts ---------------------------------------------------------------------------
    def start_broker(self, port: int = 0) -> EmbeddedBroker:
        broker = EmbeddedBroker(port=port, log_path=self.work / "tansu.log").start()
        CLEANUP.add(broker.stop)
        ensure_topics(broker.bootstrap, TOPICS)
        self.broker = broker
        return broker

    def start_redis(self) -> EmbeddedRedis:
        self.redis = start_embedded_redis(self.work / "redis")
        CLEANUP.add(self.redis.stop)
        return self.redis

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap

    def env(self) -> dict[str, str]:
        assert self.redis is not None
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SEMSEARCH_", "KAFKA_", "REDIS_"))},
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "REDIS_URL": self.redis.url,
            "SEMSEARCH_DATA_DIR": str(self.data_dir),
            "SEMSEARCH_API_HOST": "127.0.0.1",
            "SEMSEARCH_API_PORT": str(self.api_port),
            "SEMSEARCH_INDEXER_METRICS_PORT": "0",
            "SEMSEARCH_SNAPSHOT_INTERVAL_MS": "200",
            "SEMSEARCH_KAFKA_SESSION_TIMEOUT_MS": "3000",
            "SEMSEARCH_KAFKA_HEARTBEAT_MS": "1000",
            "SEMSEARCH_REFRESH_MS": "200",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **self.extra_env,
        }

    def spawn(self, command: str, log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            log.write(f"\n==== {time.strftime('%H:%M:%S')} start {command}\n".encode())
        process = start_cli(command, env or self.env(), log_path, new_session=True)
        def reap() -> None:
            kill_group(process)
            process.wait(30)

        CLEANUP.add(reap)
        return process

    def start_indexer(self) -> subprocess.Popen[bytes]:
        self.indexer_mark = self.indexer_log.stat().st_size if self.indexer_log.exists() else 0
        self.indexer = self.spawn("index", self.indexer_log)
        return self.indexer

    def indexer_alive(self) -> bool:
        return self.indexer is not None and self.indexer.poll() is None

    def ensure_indexer(self, notes: list[str], why: str) -> None:
        """Restart a dead indexer (noted: the row's expectation was that it survives)."""
        if self.indexer is not None and self.indexer.poll() is not None:
            notes.append(
                f"indexer exited rc={self.indexer.returncode} {why} ({self.last_error()}); restarted by the harness"
            )
            self.indexer_restarts += 1
            self.start_indexer()

    def last_error(self) -> str:
        """The last exception or error line the current indexer logged."""
        text = self.indexer_log.read_text(errors="replace")[self.indexer_mark :]
        lines = [ln for ln in text.splitlines() if "Error" in ln or " ERROR " in ln or "error:" in ln]
        return lines[-1].strip()[-200:] if lines else "no error logged"

    def kill_indexer(self) -> None:
        if self.indexer is not None:
            kill_group(self.indexer)
            self.indexer.wait(30)

    def start_api(self, timeout_s: float = 180.0) -> bool:
        self.api = self.spawn("serve", self.api_log)
        return wait_until(self.api_ready, timeout_s, 0.2)

    def api_ready(self) -> bool:
        try:
            return self.http.get(f"{self.api_url}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def restart_api(self, queries: QueryLoad, timeout_s: float = 180.0) -> bool:
        queries.paused.set()
        try:
            if self.api is not None:
                stop_process(self.api, timeout_s=30, group=True)
            return self.start_api(timeout_s)
        finally:
            queries.paused.clear()

    def set_pointer(self, timeout_s: float = 180.0) -> bool:
        """What `semsearch up` does: name the index active once its first snapshot exists."""
        assert self.redis is not None
        settings = self.settings.with_overrides(redis_url=self.redis.url)
        stop = threading.Event()
        timer = threading.Timer(timeout_s, stop.set)
        timer.start()
        try:
            set_pointer_when_indexed(settings, self.model.index_id, stop)
        finally:
            timer.cancel()
        return not stop.is_set()

    def up(self, queries: QueryLoad, feed_acks: Acks) -> Feed:
        """Broker, Redis, indexer; a first document indexed; pointer; API ready."""
        self.start_broker()
        self.start_redis()
        self.start_indexer()
        feed = Feed(self.bootstrap, feed_acks)
        feed.upsert("docs", UpsertEvent("warmup-0", 1, "Warm-up", "Warm-up document zqwarmup.", {}))
        feed.flush(30)
        if not self.set_pointer():
            raise RuntimeError(f"no first snapshot within 180 s; see {self.indexer_log}")
        if not self.start_api():
            raise RuntimeError(f"the API was not ready within 180 s; see {self.api_log}")
        queries.url = self.api_url
        return feed

    def down(self, queries: QueryLoad) -> None:
        queries.url = None
        for process in (self.indexer, self.api):
            if process is not None:
                stop_process(process, timeout_s=60, group=True)
        if self.broker is not None:
            if self.broker.process is not None:
                kill_group_broker(self.broker)
            self.broker.stop()
        if self.redis is not None:
            self.redis.stop()
        self.http.close()


def kill_group_broker(broker: EmbeddedBroker) -> None:
    """A SIGSTOPped broker ignores SIGINT until continued."""
    if broker.process is not None and broker.process.poll() is None:
        os.kill(broker.process.pid, signal.SIGCONT)

