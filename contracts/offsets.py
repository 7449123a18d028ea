"""Kafka positions as the index records them: topic -> partition -> next offset to read.

Offsets belong to the index, not to Kafka: a snapshot manifest stores them and the consumer
seeks to them, so the manifest writer and the Kafka source share this one shape.
"""

from __future__ import annotations

Offsets = dict[str, dict[int, int]]


def copy_offsets(offsets: Offsets) -> Offsets:
    """A copy deep enough that the caller's later updates never reach it."""
    return {topic: dict(parts) for topic, parts in offsets.items()}
