"""The names of an index directory: index ids stay inside the data root, generations parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.errors import IndexNotFoundError
from contracts.settings import Settings
from indexer.snapshots import index_dir
from indexer.snapshots.layout import file_path, gen_dir, generation_of, own_file


def test_index_ids_cannot_escape_the_data_root(settings: Settings) -> None:
    for bad in ("../etc", "/abs/path", "a/b", "", "UPPER", "..", "idx\n"):
        with pytest.raises(IndexNotFoundError):
            index_dir(settings, bad)
    assert index_dir(settings, "all-minilm-l6-v2-abc").parent == settings.indexes_dir.resolve()


def test_generation_names_and_manifest_file_keys(tmp_path: Path) -> None:
    assert gen_dir(tmp_path, 7).name == "gen-000007" and generation_of("gen-000007") == 7
    assert generation_of("gen-1234567") == 1234567  # past six digits the name just grows
    for other in ("gen-7", ".tmp-gen-000007-0badcafe", ".del-gen-000007-0badcafe", "segments"):
        assert generation_of(other) is None
    assert file_path(tmp_path, 7, own_file("tombstones.npy")) == tmp_path / "gen-000007" / "tombstones.npy"
    assert file_path(tmp_path, 7, "segments/seg-1.faiss") == tmp_path / "segments" / "seg-1.faiss"
