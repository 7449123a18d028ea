"""Generation pins: a reader marks the generation it is reading so that GC leaves it alone.

Snapshot GC keeps the newest `keep` generations; a reader that needs seconds to load one (the
migrator verifies canaries and checksums, the API loads a big index) can otherwise find it
deleted halfway ("generation 41 does not exist"). A pin is a file `pins/<generation>.<pid>.<uuid>`
created before reading and removed after: it costs one small file, works across processes and on
shared storage, and needs no coordination with the writer beyond a short flock on `pins/.lock`
(shared while pinning, exclusive while GC decides), which closes the race between "GC listed the
pins" and "the reader created its pin".

A reader that dies leaves its pin behind; a pin whose pid is not alive on this host is ignored
(and removed by GC), and a pin from another host counts only for FOREIGN_PIN_TTL_S - loads take
seconds to minutes, not hours.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from contracts.errors import IndexNotFoundError

log = logging.getLogger(__name__)

PINS_DIR = "pins"
FOREIGN_PIN_TTL_S = 3600.0
_PIN = re.compile(r"^(\d+)\.(\d+)\.([0-9a-f]+)$")
_unwritable_logged: set[Path] = set()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class Pin:
    """One reader's hold on one generation; release() (or the context exit) removes it."""

    def __init__(self, generation: int, path: Path | None) -> None:
        self.generation = generation
        self.path = path  # None: the directory is not writable; reading goes on unpinned

    def release(self) -> None:
        path, self.path = self.path, None
        if path is not None:
            path.unlink(missing_ok=True)

    def __enter__(self) -> Pin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class GenerationPins:
    """The pins of one index directory."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / PINS_DIR
        self.host = socket.gethostname()

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # releases the flock

    def pin(self, generation: int, still_there: Callable[[], bool]) -> Pin | None:
        """Pin `generation`; None if it is already gone (`still_there` is checked after the pin
        exists, under the shared lock, so GC cannot remove it in between)."""
        try:
            with self._locked(fcntl.LOCK_SH):
                path = self.dir / f"{generation}.{os.getpid()}.{uuid.uuid4().hex}"
                path.write_text(json.dumps({"host": self.host, "pid": os.getpid(), "at": time.time()}))
                if not still_there():
                    path.unlink(missing_ok=True)
                    return None
                return Pin(generation, path)
        except OSError as exc:  # a read-only mount: a reader must still be able to read
            if self.dir not in _unwritable_logged:
                _unwritable_logged.add(self.dir)
                log.warning(
                    "cannot pin generations in %s (%s); reading unpinned - GC may remove a "
                    "generation while it is read, make the directory writable to avoid that",
                    self.dir,
                    exc,
                )
            return Pin(generation, None) if still_there() else None

    @contextlib.contextmanager
    def collecting(self) -> Iterator[set[int]]:
        """For GC: the pinned generations, held stable (no new pins) until the block ends."""
        with contextlib.ExitStack() as stack:
            with contextlib.suppress(OSError):  # unwritable: nobody can pin either
                stack.enter_context(self._locked(fcntl.LOCK_EX))
            yield self.pinned(remove_stale=True)

    def pinned(self, *, remove_stale: bool = False) -> set[int]:
        if not self.dir.is_dir():
            return set()
        found: set[int] = set()
        for path in self.dir.iterdir():
            match = _PIN.match(path.name)
            if not match:
                continue
            if self._live(path, int(match.group(2))):
                found.add(int(match.group(1)))
            elif remove_stale:
                path.unlink(missing_ok=True)
        return found

    def _live(self, path: Path, pid: int) -> bool:
        try:
            data = json.loads(path.read_text())
            host = data.get("host")
        except (OSError, ValueError, AttributeError):
            host = None  # being written right now, or torn: judge by age alone
        if host == self.host:
            return _pid_alive(pid)
        try:
            return time.time() - path.stat().st_mtime < FOREIGN_PIN_TTL_S
        except OSError:
            return False


class StandingPin:
    """A long-lived reader's hold on the generation it serves (the API, a migration's private
    copy): unlike a load's pin, it lasts as long as the reader reads at that generation.

    Why it is needed: a loaded index reads titles, texts and metadata from documents.sqlite at
    its generation on every query, and the writer's GC deletes the rows no kept or pinned
    generation can see. Unpinned, a reader that has not refreshed for `keep` generations loses
    the rows of every document changed since - its hits silently vanish.

    Invariant: the pin is on a generation <= the one served. That suffices for the documents (GC
    deletes rows with gen_to <= the oldest kept or pinned generation, and a row visible at a
    newer generation has a larger gen_to), so a newer pin that cannot be had (collected in the
    instant between a refresh's own pin and this one) just leaves the older pin in place.
    """

    def __init__(self, pin: Pin | None = None) -> None:
        self._pin = pin

    @property
    def generation(self) -> int | None:
        return None if self._pin is None else self._pin.generation

    def move_to(self, generation: int, pin: Callable[[int], Pin]) -> None:
        """Hold `generation` (`pin` is SnapshotStore.pin): the new pin is taken before the old
        one is released, so the reader is never unpinned in between.

        If `generation` was collected meanwhile (IndexNotFoundError) and the held pin is older,
        that pin is kept (it protects the newer generation's rows); otherwise the error is raised:
        nothing protects the generation the caller is about to serve.
        """
        old = self._pin
        if old is not None and old.generation == generation:
            return
        try:
            new = pin(generation)
        except IndexNotFoundError:
            if old is not None and old.generation <= generation:
                return
            raise
        self._pin = new
        if old is not None:
            old.release()

    def release(self) -> None:
        pin, self._pin = self._pin, None
        if pin is not None:
            pin.release()
