"""The embedded Redis is a real server that other processes can reach, and it stops cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import redis

from contracts.pointer import Pointer, describe_url
from contracts.settings import Settings
from semsearch.embedded.redis import ping, resolve_redis, start_embedded_redis


def test_redis_url_wins_and_starts_nothing(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", redis_url="redis://example.invalid:6379/0")
    url, handle = resolve_redis(settings)
    assert (url, handle) == ("redis://example.invalid:6379/0", None)
    assert not (tmp_path / "data" / "redis").exists()


def test_started_under_the_data_dir_and_reachable_from_another_process(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    url, handle = resolve_redis(settings)
    assert handle is not None
    try:
        assert url.startswith("unix://")
        assert Path(url.removeprefix("unix://")).parent == (tmp_path / "data" / "redis").resolve()
        assert (tmp_path / "data" / "redis" / "url").read_text().strip() == url
        Pointer.from_url(url).set_if_unset("idx-a")
        # A separate OS process (as `semsearch index` or `semsearch rollback` would be) reads it.
        code = (
            "import sys; from pathlib import Path; from contracts.settings import Settings; "
            "from semsearch.embedded.redis import resolve_redis; from contracts.pointer import Pointer; "
            "url, handle = resolve_redis(Settings(data_dir=Path(sys.argv[1]))); "
            "assert handle is None, 'a second server was started'; "
            "print(url, Pointer.from_url(url).get())"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "data")],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout.split()
        assert out == [url, "idx-a"]
        again, second = resolve_redis(settings)
        assert (again, second) == (url, None), "a running embedded server must be reused"
    finally:
        handle.stop()
    assert not handle.running()
    assert not ping(url)
    assert not (tmp_path / "data" / "redis" / "url").exists()
    handle.stop()  # idempotent


def test_pointer_survives_a_restart(tmp_path: Path) -> None:
    directory = tmp_path / "redis"
    with start_embedded_redis(directory) as server:
        pointer = Pointer.from_url(server.url)
        assert pointer.set_if_unset("idx-a")
        assert pointer.compare_and_set("idx-a", "idx-b")
        pointer.close()
    with start_embedded_redis(directory) as server:
        pointer = Pointer.from_url(server.url)
        assert pointer.get() == "idx-b"
        assert pointer.history() == ["idx-a"]
        pointer.close()


def test_falls_back_to_tcp_when_the_socket_path_is_too_long(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with start_embedded_redis(deep) as server:
        assert server.url.startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.close()


def test_a_dead_url_file_does_not_stop_a_fresh_start(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    stale = tmp_path / "data" / "redis"
    stale.mkdir(parents=True)
    (stale / "url").write_text(f"unix://{stale / 'gone.sock'}\n")
    url, handle = resolve_redis(settings)
    assert handle is not None
    try:
        assert ping(url)
    finally:
        handle.stop()


def test_passwords_are_masked_in_descriptions() -> None:
    assert describe_url("redis://user:s3cret@db:6380/2") == "redis://user:***@db:6380/2"
    assert describe_url("unix:///tmp/r.sock") == "unix:///tmp/r.sock"
