"""`semsearch upgrade-model` and `semsearch rollback` as an operator runs them (the CLI, its
environment, the real broker and Redis)."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.events import Flip, ModelUpgrade, decode_control_event
from contracts.pointer import Pointer
from contracts.settings import Settings
from semsearch.cli import main as cli
from semsearch.embedded.redis import EmbeddedRedis

OLD = "minilm-aaaaaaaaaaaa"
NEW = "minilm-bbbbbbbbbbbb"


@pytest.fixture
def env(
    stream_settings: Settings, redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", str(stream_settings.kafka_bootstrap))
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("SEMSEARCH_DATA_DIR", str(stream_settings.data_dir))
    monkeypatch.setenv("SEMSEARCH_CONTROL_TOPIC", stream_settings.control_topic)
    return stream_settings


def test_rollback_moves_the_pointer_back_and_announces_it(
    env: Settings, pointer: Pointer, read_topic: object, capsys: pytest.CaptureFixture[str]
) -> None:
    pointer.set_if_unset(OLD)
    pointer.compare_and_set(OLD, NEW)

    assert cli(["rollback"]) == 0
    assert pointer.get() == OLD
    assert f"active index: {OLD} (was {NEW})" in capsys.readouterr().out
    [message] = read_topic(env.control_topic, 1)  # type: ignore[operator]
    event = decode_control_event(message.value())
    assert isinstance(event, Flip) and (event.from_index, event.to_index) == (NEW, OLD)

    assert cli(["rollback", "--to", NEW]) == 0  # NEW passed validation once: allowed
    assert pointer.get() == NEW


def test_rollback_to_an_unvalidated_index_is_refused(
    env: Settings, pointer: Pointer, capsys: pytest.CaptureFixture[str]
) -> None:
    pointer.set_if_unset(OLD)
    assert cli(["rollback", "--to", NEW]) == 1
    assert "never passed validation" in capsys.readouterr().err
    assert pointer.get() == OLD


def test_upgrade_model_publishes_one_request_with_an_absolute_path(
    env: Settings,
    read_topic: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "models" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert cli(["upgrade-model", "--model", "models/b", "--reason", "test"]) == 0
    assert "published model-upgrade" in capsys.readouterr().out
    [message] = read_topic(env.control_topic, 1)  # type: ignore[operator]
    event = decode_control_event(message.value())
    assert isinstance(event, ModelUpgrade)
    assert (event.model, event.reason) == (str((tmp_path / "models" / "b").resolve()), "test")

    (tmp_path / "a-file").write_text("")
    assert cli(["upgrade-model", "--model", "a-file"]) == 1
    assert "takes a model directory" in capsys.readouterr().err
