"""Listing generations and choosing the newest usable one, falling back only when asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.errors import IndexNotFoundError, SnapshotError
from indexer.snapshots.generations import Generations, NoneLoadable

GOLDEN = Path(__file__).with_name("manifest-format2.json")


def _generation(root: Path, generation: int) -> None:
    data = json.loads(GOLDEN.read_text())
    data["generation"] = generation
    (root / f"gen-{generation:06d}").mkdir(parents=True)
    (root / f"gen-{generation:06d}" / "manifest.json").write_text(json.dumps(data, indent=1))


def test_only_published_generations_are_listed(tmp_path: Path) -> None:
    assert Generations(tmp_path / "absent").generations() == []
    for generation in (3, 1, 12):
        _generation(tmp_path, generation)
    (tmp_path / "gen-000013").mkdir()  # no manifest: not a generation
    (tmp_path / ".tmp-gen-000014-0badcafe").mkdir()
    generations = Generations(tmp_path)
    assert generations.generations() == [1, 3, 12] and generations.latest_generation() == 12
    assert generations.read_manifest().generation == 12
    with pytest.raises(IndexNotFoundError, match="generation 13 does not exist"):
        generations.read_manifest(13)


def test_a_truncated_newest_manifest_is_skipped_and_reported(tmp_path: Path) -> None:
    for generation in (1, 2):
        _generation(tmp_path, generation)
    newest = tmp_path / "gen-000002" / "manifest.json"
    newest.write_text(newest.read_text()[:100])
    generations = Generations(tmp_path)
    with pytest.raises(SnapshotError, match="not a valid manifest"):
        generations.read_manifest()
    skipped: list[tuple[int, str]] = []
    assert generations.latest_manifest(lambda g, why: skipped.append((g, why))).generation == 1
    assert [g for g, _ in skipped] == [2] and "not a valid manifest" in skipped[0][1]
    pin, manifest = generations.pin_latest()
    with pin:
        assert manifest.generation == 1 and 1 in generations.pins.pinned()
    assert 1 not in generations.pins.pinned()
    with pytest.raises(IndexNotFoundError):
        generations.pin(5)


def test_newest_loadable_falls_back_only_when_asked(tmp_path: Path) -> None:
    generations = Generations(tmp_path)
    with pytest.raises(IndexNotFoundError, match="no snapshot"):
        generations.newest_loadable(lambda g: g, fallback=True, on_skip=None)
    for generation in (1, 2, 3):
        _generation(tmp_path, generation)

    def attempt(generation: int) -> int:
        if generation > 1:
            raise SnapshotError(f"generation {generation} is corrupt")
        return generation

    with pytest.raises(SnapshotError, match="generation 3 is corrupt"):
        generations.newest_loadable(attempt, fallback=False, on_skip=None)
    skipped: list[int] = []
    assert generations.newest_loadable(attempt, fallback=True, on_skip=lambda g, _: skipped.append(g)) == 1
    assert skipped == [3, 2]

    def never(generation: int) -> int:
        raise SnapshotError(f"generation {generation} is corrupt")

    with pytest.raises(NoneLoadable) as err:
        generations.newest_loadable(never, fallback=True, on_skip=None)
    assert err.value.errors == [f"generation {g} is corrupt" for g in (3, 2, 1)]
