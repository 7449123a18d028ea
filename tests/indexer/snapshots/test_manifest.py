"""The manifest's JSON stays what existing indexes hold, byte for byte."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from indexer.index import Index
from indexer.snapshots import FORMAT_VERSION, Manifest, SnapshotStore

# Written by the writer before indexer/snapshots/ was a package (canary vectors and the model's
# path shortened; neither is interpreted here).
GOLDEN = Path(__file__).with_name("manifest-format2.json")


def test_a_manifest_of_an_existing_index_reads_and_writes_back_byte_identical() -> None:
    text = GOLDEN.read_text()
    manifest = Manifest.loads(text)
    assert manifest.format == FORMAT_VERSION and manifest.generation == 2
    assert manifest.offsets == {"docs": {0: 44, 1: 7}}  # partitions are ints in memory
    assert manifest.dumps() == text


def test_what_the_writer_puts_on_disk_is_the_manifest_text(
    make_index: Callable[..., Index], tmp_path: Path
) -> None:
    store = SnapshotStore(tmp_path / "idx")
    manifest = store.write(make_index(), {"docs": {0: 8, 3: 1}})
    text = (store.root / "gen-000001" / "manifest.json").read_text()
    assert json.loads(text)["offsets"] == {"docs": {"0": 8, "3": 1}}
    assert Manifest.loads(text) == manifest and manifest.dumps() == text


def test_fields_added_later_have_defaults_for_manifests_without_them() -> None:
    data = json.loads(GOLDEN.read_text())
    for later in ("documents", "lexical", "live", "extra", "format"):
        data.pop(later)
    manifest = Manifest.from_json(data)
    assert manifest.documents is manifest.lexical is manifest.live is None
    assert manifest.extra == {} and manifest.format == FORMAT_VERSION


def test_a_field_from_a_newer_writer_is_ignored_and_an_unset_one_not_written() -> None:
    """Rollouts upgrade indexers and APIs at different times: each must read the other's."""
    data = json.loads(GOLDEN.read_text())
    data["written_by_a_later_version"] = {"anything": 1}
    assert Manifest.from_json(data) == Manifest.loads(GOLDEN.read_text())
    assert "newest_event_ms" not in json.loads(Manifest.loads(GOLDEN.read_text()).dumps())
    stamped = Manifest.from_json({**json.loads(GOLDEN.read_text()), "newest_event_ms": 1_700_000})
    assert json.loads(stamped.dumps())["newest_event_ms"] == 1_700_000


def test_a_manifest_of_the_wrong_shape_is_refused_naming_the_field() -> None:
    """JSON that parses but is not a manifest (a hand edit, a tool's bug) fails at load, so
    `fallback` skips that generation like a torn one, instead of failing later mid-load."""
    data = json.loads(GOLDEN.read_text())
    for field, bad in (("generation", "two"), ("offsets", {"docs": {"zero": 1}}), ("files", [])):
        with pytest.raises(ValueError, match=field):
            Manifest.from_json({**data, field: bad})
    without = dict(data)
    del without["segments"]
    with pytest.raises(ValueError, match="segments"):
        Manifest.from_json(without)
    with pytest.raises(ValueError):
        Manifest.loads("[1, 2, 3]")


def test_a_manifest_cannot_be_changed_after_it_is_written() -> None:
    manifest = Manifest.loads(GOLDEN.read_text())
    with pytest.raises(ValueError):
        manifest.generation = 3  # type: ignore[misc]
