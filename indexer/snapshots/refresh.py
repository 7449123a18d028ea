"""Moving an open index forward to a newer generation in place: the API's near-real-time path.

A refresh costs what changed, not the index: files the index already holds (sealed segments,
its quantizer, lexical segments, the live deltas it has) are neither read nor hashed again, and
only the document rows changed between its generation and the new one are read.
"""

from __future__ import annotations

from contracts.errors import SnapshotError
from indexer import live_store
from indexer.index import Index
from indexer.lexical_store import LexicalStore
from indexer.snapshots import checksums
from indexer.snapshots.generations import Generations
from indexer.snapshots.install import Installer, same_quantizer
from indexer.snapshots.manifest import Manifest, segment_files


def refresh_index(
    generations: Generations, installer: Installer, index: Index, generation: int | None = None
) -> Manifest:
    """Install `generation` (the newest by default) into `index`, which must be the same index."""
    root = generations.root
    if generation is None:
        generation = generations.latest_generation()
        if generation is None:
            raise generations.no_snapshot()
    with generations.pin(generation):
        manifest = generations.read_manifest(generation)
        if manifest.index_id != index.index_id:
            raise SnapshotError(f"{root} holds {manifest.index_id}, not {index.index_id}")
        loaded = {s.name: s for s in index.vectors.sealed}
        known = set(segment_files([s for s in manifest.segments if s["name"] in loaded]))
        if manifest.quantizer and manifest.quantizer["file"] == index.vectors.quantizer_file:
            known.add(manifest.quantizer["file"])
        # Lexical segments the index already holds are not read (nor hashed) again.
        held = {s.file for s in index.lexical.segments if s.file}
        known.update(rel for rel in LexicalStore.files(manifest.lexical) if rel in held)
        if same_quantizer(index, manifest):
            # Live rows it holds are not read again either: only the deltas it lacks.
            known.update(live_store.held_files(index.vectors.live, manifest.live) or ())
        checksums.verify(root, manifest.generation, manifest.files, skip=known)
        installer.install(index, manifest, sealed=loaded, refresh=True)
    return manifest
