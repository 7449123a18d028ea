"""The monitor's state file: baselines survive restarts, a changed hold-out set starts them over,
and a file that cannot be read stops the monitor at start instead of silently losing baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.errors import SemsearchError
from query_api.monitor_state import KEEP_BASELINES, Baseline, MonitorState


def baseline(recall: float, at: float = 1.0) -> Baseline:
    return Baseline(recall_at_5=recall, ndcg_at_10=recall / 2, queries=5, measured_at=at)


def test_baselines_and_last_success_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "monitor" / "state.json"
    state = MonitorState(path, "set-1")
    assert state.baseline("idx-a") is None and state.last_success is None
    state.set_baseline("idx-a", baseline(0.8))
    state.record_success(1234.5)
    again = MonitorState(path, "set-1")
    assert again.baseline("idx-a") == baseline(0.8)
    assert again.last_success == 1234.5
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")], "temp file left"


def test_a_changed_holdout_set_starts_the_baselines_over(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = MonitorState(path, "set-1")
    state.set_baseline("idx-a", baseline(0.8))
    state.record_success(99.0)
    other = MonitorState(path, "set-2")
    assert other.baseline("idx-a") is None
    assert other.last_success == 99.0, "when it last ran is still true"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot be read"),
        (json.dumps({"holdout": "set-1", "baselines": {"a": {"recall_at_5": "x"}}}), "cannot be read"),
        (json.dumps({"version": 99, "holdout": "set-1"}), "version 99"),
    ],
)
def test_an_unreadable_state_file_fails_at_start(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(SemsearchError, match=message) as raised:
        MonitorState(path, "set-1")
    assert str(path) in str(raised.value) and "delete it" in str(raised.value)


def test_old_baselines_are_pruned_oldest_first(tmp_path: Path) -> None:
    state = MonitorState(tmp_path / "state.json", "set-1")
    for n in range(KEEP_BASELINES + 3):
        state.set_baseline(f"idx-{n}", baseline(0.5, at=float(n)))
    again = MonitorState(tmp_path / "state.json", "set-1")
    assert again.baseline("idx-0") is None and again.baseline("idx-2") is None
    assert again.baseline("idx-3") is not None and again.baseline(f"idx-{KEEP_BASELINES + 2}") is not None
