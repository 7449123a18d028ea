"""What the recall monitor must not forget across restarts: per-index baselines, last success.

A small JSON file, not Redis: the baselines belong to the monitor's hold-out set (another set
means other numbers), not to the serving system, and the monitor must keep measuring - and
keep its alert thresholds - while Redis is down, which is exactly when someone wants to know
whether search still works. The file is written whole or not at all (temp file, fsync,
rename), so a crash mid-write leaves the previous state.

The file records a fingerprint of the hold-out set: baselines measured on other queries or
judgements are not comparable, so a changed set starts the baselines over (logged).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.errors import SemsearchError
from indexer.durable_files import write_atomically

log = logging.getLogger(__name__)

STATE_VERSION = 1
# Baselines of indexes that were flipped away from long ago are pruned, oldest first; a rollback
# to a recent index finds its own baseline again.
KEEP_BASELINES = 50


class Baseline(BaseModel):
    """The first successful run on an index: what later runs of the same index are held to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recall_at_5: float
    ndcg_at_10: float
    queries: int
    measured_at: float = Field(description="unix time of the run")


class StateFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = STATE_VERSION
    holdout: str = Field(description="fingerprint of the hold-out queries and qrels")
    last_success: float | None = None
    baselines: dict[str, Baseline] = Field(default_factory=dict)


class MonitorState:
    """The monitor's state file; every change is written through before it is exported."""

    def __init__(self, path: Path, holdout: str) -> None:
        self.path = path
        self._state = self._load(path, holdout)

    @staticmethod
    def _load(path: Path, holdout: str) -> StateFile:
        if not path.exists():
            return StateFile(holdout=holdout)
        try:
            state = StateFile.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            raise SemsearchError(
                f"the monitor state file {path} cannot be read ({str(exc).splitlines()[0]}); "
                "fix it, or delete it to start the baselines over"
            ) from None
        if state.version != STATE_VERSION:
            raise SemsearchError(
                f"the monitor state file {path} has version {state.version}, this semsearch "
                f"reads version {STATE_VERSION}; delete it to start the baselines over"
            )
        if state.holdout != holdout:
            log.warning(
                "the hold-out set changed since %s was written: its %d baseline(s) measured other "
                "queries, so every index gets a new baseline on its next run",
                path,
                len(state.baselines),
            )
            return StateFile(holdout=holdout, last_success=state.last_success)
        return state

    @property
    def last_success(self) -> float | None:
        return self._state.last_success

    def baseline(self, index_id: str) -> Baseline | None:
        return self._state.baselines.get(index_id)

    def set_baseline(self, index_id: str, baseline: Baseline) -> None:
        baselines = {**self._state.baselines, index_id: baseline}
        if len(baselines) > KEEP_BASELINES:
            newest = sorted(baselines.items(), key=lambda kv: kv[1].measured_at)[-KEEP_BASELINES:]
            baselines = dict(newest)
        self._state.baselines = baselines
        self._write()

    def record_success(self, at: float) -> None:
        self._state.last_success = at
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = self._state.model_dump_json(indent=2).encode()
        write_atomically(self.path, lambda tmp: tmp.write_bytes(data))
