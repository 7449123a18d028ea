"""Which sealed segments to rewrite: a tiered merge policy (Lucene's TieredMergePolicy, simplified).

Why: every sealed segment costs a search call and a top-k merge per query, and a delete in one
is a tombstone checked on every search. Sealing alone makes the number of segments grow like N.
Segments are grouped by size tier, tier = floor(log_F(alive / seal_chunks)); as soon as a tier
holds `width` segments they are merged into one (which lands a tier higher). Every tier then holds
fewer than `width` segments, so there are at most (width - 1) * (log_F(N / seal_chunks) + 1) of
them, and each vector is rewritten once per tier it climbs: O(N log N) total merge work, and a
merge at 1M chunks rewrites at most a tier's worth of vectors, never the whole index.
A segment whose dead fraction is above `dead_fraction` is rewritten on its own (compaction): the
tombstones of its deleted vectors go away with it, so tombstones stay bounded.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

TIER_FACTOR = 4
MERGE_WIDTH = 4
DEAD_FRACTION = 0.3


@dataclass(frozen=True)
class SegmentStats:
    name: str
    size: int  # vectors stored, dead ones included
    dead: int

    @property
    def alive(self) -> int:
        return self.size - self.dead


def tier(alive: int, unit: int, factor: int = TIER_FACTOR) -> int:
    ratio = max(1.0, alive / max(1, unit))
    # A hair of slack: 4 full seals merged must land in tier 1, not 0.999... -> 0.
    return math.floor(math.log(ratio, factor) + 1e-9)


def plan_merges(
    segments: list[SegmentStats],
    unit: int,
    *,
    factor: int = TIER_FACTOR,
    width: int = MERGE_WIDTH,
    dead_fraction: float = DEAD_FRACTION,
) -> list[list[str]]:
    """Groups of segment names; each group is to be rewritten as one segment without its dead."""
    groups: list[list[str]] = []
    tiers: dict[int, list[SegmentStats]] = defaultdict(list)
    for stats in segments:
        if stats.size and stats.dead > dead_fraction * stats.size:
            groups.append([stats.name])
        else:
            tiers[tier(stats.alive, unit, factor)].append(stats)
    for level in sorted(tiers):
        members = sorted(tiers[level], key=lambda s: (s.alive, s.name))
        while len(members) >= width:
            groups.append([s.name for s in members[:width]])
            members = members[width:]
    return groups


def segment_bound(count: int, unit: int, factor: int = TIER_FACTOR, width: int = MERGE_WIDTH) -> int:
    """The most segments the policy leaves at `count` alive vectors (compactions aside)."""
    return (width - 1) * (tier(count, unit, factor) + 1)
