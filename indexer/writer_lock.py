"""One writer per index directory, enforced by an OS lock on `<index dir>/LOCK`.

Two writers on one index tear it: they race for the same generation number (one dies on
`Directory not empty … gen-N`, the other publishes a generation holding only its share of the
partitions). So every process that writes generations - `semsearch index` (IndexWorker.open /
from_index) and `semsearch build` - takes an exclusive `fcntl.flock` on the LOCK file for as long
as it writes, and readers (the API, `SnapshotStore.load`, `refresh`) never take it.

Decision: a second writer REFUSES at start with an error naming the holder (pid, host, since
when) and what to do, rather than waiting as a standby. A standby would look healthy while doing
nothing, and two indexers configured with one SEMSEARCH_DATA_DIR are a configuration mistake the
operator should see at once; supervision (restart after the holder dies) belongs to whoever runs
the processes.

flock rather than a pid file: the kernel releases the lock when the holder's process dies, even on
`kill -9`, so there is no stale lock to clean up and no pid-reuse guessing. The holder's pid, host
and start time are written into the file only so that the refusal can say who holds it. Locks are
per open file description, so two writers inside one process refuse each other too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from contracts.errors import SemsearchError

LOCK_FILE = "LOCK"
DEFAULT_HINT = (
    "stop that process, or give this one its own data directory (another SEMSEARCH_DATA_DIR)"
)


class IndexLockedError(SemsearchError):
    """Another process is already writing this index directory."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


def read_holder(root: Path) -> dict[str, Any]:
    """Who wrote the LOCK file last (the holder, while it is locked); {} if unreadable."""
    try:
        data = json.loads((Path(root) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (its details are not readable)"
    since = holder.get("since")
    started = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(since)))
        if isinstance(since, int | float)
        else "?"
    )
    return (
        f"{holder.get('owner', 'a writer')} (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, since {started})"
    )


class WriterLock:
    """The exclusive right to write generations into one index directory."""

    def __init__(self, root: Path, fd: int, owner: str) -> None:
        self.root = Path(root)
        self.owner = owner
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, root: Path, owner: str, *, hint: str = DEFAULT_HINT) -> WriterLock:
        """Take the lock now or raise IndexLockedError naming the holder; never waits."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        path = root / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = read_holder(root)
            raise IndexLockedError(
                f"index directory {root} is already being written by {describe_holder(holder)}; "
                f"one index has one writer - {hint}",
                holder,
            ) from None
        record = {"owner": owner, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError:
            pass  # the lock holds without the note; only the refusal message gets less precise
        return cls(root, fd, owner)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up (closing the descriptor releases the flock). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
