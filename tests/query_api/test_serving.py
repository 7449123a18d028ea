"""Serving is a value: nothing a request holds changes under it; a change is a new Serving."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest

from indexer.pins import StandingPin
from indexer.snapshots import SnapshotStore
from query_api.serving import Serving

BuildIndex = Callable[..., tuple[Any, SnapshotStore]]


@pytest.fixture
def serving(build_index: BuildIndex) -> Serving:
    index, store = build_index("idx-a")
    return Serving(index, store.read_manifest(1), store, time.time(), "pointer", StandingPin())


def test_no_field_can_be_reassigned_or_added(serving: Serving) -> None:
    for name in [f.name for f in dataclasses.fields(Serving)]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(serving, name, None)
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(serving, name)
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
        serving.extra = 1  # type: ignore[attr-defined]
    assert not hasattr(serving, "__dict__"), "slotted: there is no instance dict to write into"


def test_a_change_is_a_new_serving_and_the_old_one_is_untouched(serving: Serving) -> None:
    before = (serving.origin, serving.generation, serving.manifest)
    moved = serving.with_origin("default")
    assert moved is not serving and moved.origin == "default"
    assert (serving.origin, serving.generation, serving.manifest) == before
    newer = serving.store.write(serving.index)
    refreshed = serving.at(newer)
    assert refreshed.generation == newer.generation > serving.generation
    assert serving.manifest is before[2], "the Serving a request took keeps its generation"
    # One load: the open index and its standing pin are shared, not copied.
    assert refreshed.index is serving.index and refreshed.hold is serving.hold
    assert refreshed.index_id == serving.index_id == "idx-a"
    assert refreshed.model_fingerprint == serving.model_fingerprint
    assert refreshed.snapshot_age_s() >= 0.0
