"""Which generations an index directory holds, and choosing the newest one that is usable.

Every listing can be stale by the time it is used: the writer's GC removes old generations
while readers look at them. So a generation is pinned (indexer/pins.py) before it is read at
length, one that vanished meanwhile is skipped, and a corrupt one is skipped (logged, reported
through `on_skip`) only when the caller asked to fall back to the previous one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from contracts.errors import IndexNotFoundError, SnapshotError
from indexer.pins import GenerationPins, Pin
from indexer.snapshots.layout import MANIFEST, generation_of, manifest_path
from indexer.snapshots.manifest import Manifest

log = logging.getLogger(__name__)

T = TypeVar("T")

# Called with (generation, reason) for each generation a fallback load skipped.
OnSkip = Callable[[int, str], object]

_RETRIES = 10


class Vanished(IndexNotFoundError):
    """The generation was garbage-collected before it could be pinned."""


class NoneLoadable(SnapshotError):
    """Every generation failed; `errors` says why each one did, newest first."""

    def __init__(self, root: Path, errors: list[str]) -> None:
        super().__init__(f"no loadable generation in {root}: " + "; ".join(errors))
        self.errors = errors


class Generations:
    """The generations of one index directory, listed, read and pinned."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pins = GenerationPins(root)

    def generations(self) -> list[int]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            generation = generation_of(entry.name)
            if generation is not None and (entry / MANIFEST).is_file():
                found.append(generation)
        return sorted(found)

    def latest_generation(self) -> int | None:
        generations = self.generations()
        return generations[-1] if generations else None

    def no_snapshot(self) -> IndexNotFoundError:
        return IndexNotFoundError(
            f"no snapshot in {self.root}; build one with `semsearch build` or run `semsearch index`"
        )

    def read_manifest(self, generation: int | None = None) -> Manifest:
        if generation is None:
            # The newest one; if GC removes it between listing and reading, the next newest.
            for _ in range(_RETRIES):
                latest = self.latest_generation()
                if latest is None:
                    raise self.no_snapshot()
                try:
                    return self.read_manifest(latest)
                except IndexNotFoundError:
                    continue
            raise SnapshotError(f"generations of {self.root} vanish faster than they can be read")
        path = manifest_path(self.root, generation)
        try:
            return Manifest.loads(path.read_text())
        except FileNotFoundError:
            raise IndexNotFoundError(
                f"generation {generation} does not exist in {self.root}"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"{path} is not a valid manifest: {exc}") from None

    def latest_manifest(self, on_skip: OnSkip | None = None) -> Manifest:
        """The newest manifest that parses (a truncated newest one is skipped and reported)."""
        errors = []
        for generation in reversed(self.generations()):
            try:
                return self.read_manifest(generation)
            except Vanished:
                continue
            except IndexNotFoundError:
                continue  # collected meanwhile; older ones follow
            except SnapshotError as exc:
                log.error("skipping generation %d of %s: %s", generation, self.root, exc)
                if on_skip is not None:
                    on_skip(generation, str(exc))
                errors.append(str(exc))
        if errors:
            raise SnapshotError(f"no readable manifest in {self.root}: " + "; ".join(errors))
        raise self.no_snapshot()

    def pin(self, generation: int) -> Pin:
        """Keep `generation` from GC until the pin is released (use it as a context manager)."""
        pin = self.pins.pin(generation, manifest_path(self.root, generation).is_file)
        if pin is None:
            raise Vanished(f"generation {generation} does not exist in {self.root}")
        return pin

    def pin_latest(self, on_skip: OnSkip | None = None) -> tuple[Pin, Manifest]:
        """The newest readable manifest, its generation pinned: a slow caller (loading the model
        the manifest names) still finds that generation afterwards."""
        for _ in range(_RETRIES):
            manifest = self.latest_manifest(on_skip)
            try:
                return self.pin(manifest.generation), manifest
            except Vanished:
                continue
        raise SnapshotError(f"generations of {self.root} vanish faster than they can be pinned")

    def newest_loadable(
        self, attempt: Callable[[int], T], *, fallback: bool, on_skip: OnSkip | None
    ) -> T:
        """`attempt` on the newest generation; with `fallback`, on the next older one each time it
        raises SnapshotError. No generation at all: IndexNotFoundError; every one failed:
        NoneLoadable."""
        tried: set[int] = set()
        errors: list[str] = []
        while True:
            # Relisted each time: GC may have replaced the candidates meanwhile.
            candidates = [g for g in reversed(self.generations()) if g not in tried]
            if not candidates:
                break
            candidate = candidates[0]
            tried.add(candidate)
            try:
                return attempt(candidate)
            except Vanished:
                continue
            except SnapshotError as exc:
                if not fallback:
                    raise
                log.error("skipping generation %s of %s: %s", candidate, self.root, exc)
                if on_skip is not None:
                    on_skip(candidate, str(exc))
                errors.append(str(exc))
        if not errors:
            raise self.no_snapshot()
        raise NoneLoadable(self.root, errors)
