"""A held-out set of support cases that read alike and differ by one identifier each.

Why it exists: the vector leg cannot tell `ORD-85461-WR` from `ORD-85462-WR`, so a hybrid
ranking that averages the legs can lose a perfect lexical answer when the id stands inside a
sentence. Every case carries exactly one order, invoice, ticket, SKU or shipment id; the ids come
in families of four of one kind, each one digit away from the others, so every id has near-miss
ids in other cases. Cases are built from the same few sentences (the same words in every case),
so only the id tells them apart.

Deterministic (a seeded `random.Random`): the same 400 cases and queries on every machine, so
measured numbers can be compared across commits.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

from contracts.documents import Document

CASES = 400
FAMILY = 4  # ids per near-miss family (one digit apart)
SEED = 11

KINDS = ("order", "invoice", "ticket", "sku", "shipment")

_NAMES = ("Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie")
_ISSUES = (
    "arrived damaged and the customer wants a replacement",
    "was charged twice and the customer asks for a refund",
    "is delayed and the customer asks when it will arrive",
    "contains the wrong item and the customer wants an exchange",
    "was cancelled by mistake and the customer wants it restored",
)
_ACTIONS = (
    "opened a follow-up with the warehouse team",
    "escalated the case to billing",
    "promised an update within two business days",
    "asked the customer for a photo and the delivery address",
)
_NOUNS = {
    "order": "order",
    "invoice": "invoice",
    "ticket": "ticket",
    "sku": "product SKU",
    "shipment": "shipment",
}
# In-sentence queries: the id inside ordinary support phrasing (words every case shares).
_ASKS = (
    "what happened with {noun} {id}",
    "customer is asking about {noun} {id}, can you check the status",
    "any update on {noun} {id} for the refund?",
    "please look into {noun} {id} - the customer says it arrived damaged",
    "where is {noun} {id} now and when will it arrive",
)


@dataclass(frozen=True)
class Case:
    doc_id: str
    kind: str
    ident: str
    document: Document


@dataclass(frozen=True)
class Query:
    text: str
    doc_id: str  # the one case it is about


def _id_maker(kind: str, rng: random.Random) -> tuple[Callable[[str], str], int]:
    """(format of a digit string as this kind's id, how many digits it has)."""
    letters = "".join(rng.choice(string.ascii_uppercase) for _ in range(3))
    if kind == "order":
        return (lambda d: f"ORD-{d}-{letters[:2]}"), 5
    if kind == "invoice":
        return (lambda d: f"INV-2024-{d}"), 6
    if kind == "ticket":
        return (lambda d: f"TCK-{d}"), 7
    if kind == "sku":
        return (lambda d: f"SKU-{d[:3]}{letters}{d[3:]}"), 5
    return (lambda d: f"SHP{d}"), 9


def _near_misses(digits: str, count: int, rng: random.Random, taken: set[str]) -> list[str]:
    """`count` distinct digit strings, each `digits` with exactly one digit changed."""
    found: list[str] = []
    while len(found) < count:
        at = rng.randrange(len(digits))
        changed = digits[:at] + rng.choice([c for c in string.digits if c != digits[at]]) + digits[at + 1 :]
        if changed not in taken:
            taken.add(changed)
            found.append(changed)
    return found


def cases(count: int = CASES, seed: int = SEED) -> list[Case]:
    rng = random.Random(seed)
    out: list[Case] = []
    taken: dict[str, set[str]] = {kind: set() for kind in KINDS}
    while len(out) < count:
        kind = KINDS[(len(out) // FAMILY) % len(KINDS)]
        make, width = _id_maker(kind, rng)
        base = "".join(rng.choice(string.digits[1:] if i == 0 else string.digits) for i in range(width))
        if base in taken[kind]:
            continue
        taken[kind].add(base)
        for digits in [base, *_near_misses(base, FAMILY - 1, rng, taken[kind])]:
            if len(out) == count:
                break
            n = len(out)
            ident = make(digits)
            text = (
                f"{rng.choice(_NAMES)} contacted support: {_NOUNS[kind]} {ident} "
                f"{rng.choice(_ISSUES)}. The agent {rng.choice(_ACTIONS)}."
            )
            doc_id = f"case-{n:03d}"
            out.append(Case(doc_id, kind, ident, Document(doc_id, "Support case", text, 1)))
    return out


def bare_queries(all_cases: list[Case], count: int = 200) -> list[Query]:
    """The id alone, for every other case (both families' members and every kind)."""
    return [Query(c.ident, c.doc_id) for c in all_cases[::2][:count]]


def sentence_queries(all_cases: list[Case], count: int = 100, seed: int = SEED) -> list[Query]:
    """The id inside a support sentence, for cases the bare set does not use."""
    rng = random.Random(seed + 1)
    chosen = all_cases[1::2][:count]
    return [
        Query(rng.choice(_ASKS).format(noun=_NOUNS[c.kind], id=c.ident), c.doc_id) for c in chosen
    ]


@dataclass(frozen=True)
class Quality:
    hit_at_1: float
    mrr_at_10: float


def quality(rankings: list[list[str]], queries: list[Query]) -> Quality:
    """hit@1 and MRR@10 of ranked doc ids, one ranking per query (same order)."""
    hits = 0
    reciprocal = 0.0
    for ranked, query in zip(rankings, queries, strict=True):
        top = ranked[:10]
        hits += bool(top) and top[0] == query.doc_id
        if query.doc_id in top:
            reciprocal += 1.0 / (top.index(query.doc_id) + 1)
    return Quality(hits / len(queries), reciprocal / len(queries))
