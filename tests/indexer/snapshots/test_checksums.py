"""Checksum records: sidecars spare rehashing, a bad sidecar is recomputed, damage is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.errors import SnapshotError
from indexer.snapshots import checksums


def test_a_sidecar_is_written_once_and_read_back(tmp_path: Path) -> None:
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / "seg-a.faiss").write_bytes(b"segment bytes")
    assert checksums.read_sidecar(tmp_path, "segments/seg-a.faiss") is None
    entry = checksums.write_sidecar(tmp_path, "segments/seg-a.faiss")
    assert entry == checksums.record(tmp_path / "segments" / "seg-a.faiss") and entry["bytes"] == 13
    assert checksums.read_sidecar(tmp_path, "segments/seg-a.faiss") == entry
    # what a manifest recorded wins over rehashing a file that may have been damaged since
    known = {"sha256": "0" * 64, "bytes": 13}
    assert checksums.write_sidecar(tmp_path, "segments/seg-a.faiss", known) == known
    assert checksums.read_sidecar(tmp_path, "segments/seg-a.faiss") == known


@pytest.mark.parametrize("content", ["", "{not json", json.dumps({"sha256": 5, "bytes": 1}), "[]"])
def test_an_unusable_sidecar_reads_as_absent(tmp_path: Path, content: str) -> None:
    (tmp_path / "seg.faiss.sha256").write_text(content)
    assert checksums.read_sidecar(tmp_path, "seg.faiss") is None


def test_missing_and_corrupt_files_are_named_and_skip_is_not_read(tmp_path: Path) -> None:
    gen = tmp_path / "gen-000003"
    gen.mkdir()
    (gen / "tombstones.npy").write_bytes(b"tombstones")
    (tmp_path / "shared.seg").write_bytes(b"shared")
    files = {
        "GEN/tombstones.npy": checksums.record(gen / "tombstones.npy"),
        "shared.seg": checksums.record(tmp_path / "shared.seg"),
        "gone.seg": {"sha256": "0" * 64, "bytes": 1},
    }
    (tmp_path / "shared.seg").write_bytes(b"Shared")
    bad = dict(checksums.corrupt_files(tmp_path, 3, files))
    assert set(bad) == {"shared.seg", "gone.seg"}
    assert "fails its checksum (generation 3)" in bad["shared.seg"]
    assert "generation 3" in bad["gone.seg"] and "missing gone.seg" in bad["gone.seg"]
    checksums.verify(tmp_path, 3, files, skip={"shared.seg", "gone.seg"})
    with pytest.raises(SnapshotError, match="checksum"):
        checksums.verify(tmp_path, 3, files, skip={"gone.seg"})
