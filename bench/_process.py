"""The benches' child processes: `semsearch` commands started with a log, stopped with a signal
and a deadline, watched from outside (their log, their snapshots) and measured through /proc."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._data import REPO
from indexer.snapshots import SnapshotStore


def start_cli(
    command: str, env: dict[str, str], log_path: Path, *, new_session: bool = False
) -> subprocess.Popen[bytes]:
    """`semsearch <command>` with stdout and stderr appended to `log_path`; `new_session` puts it
    in its own process group, so `kill_group` reaches whatever it starts too."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "semsearch.cli", command],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=new_session,
        )


def kill_group(process: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    """Signal the child's whole process group (it was started with `new_session`)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return


def stop_process(
    process: subprocess.Popen[Any],
    sig: int = signal.SIGTERM,
    timeout_s: float = 60.0,
    *,
    group: bool = False,
) -> int:
    """`sig` (to the process group with `group`), then SIGKILL after `timeout_s`; the exit status."""
    if group:
        kill_group(process, sig)
    elif process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        if group:
            kill_group(process)
        else:
            process.kill()
        return process.wait(30)


def wait_until(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> bool:
    """Poll `condition` until it holds (True) or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def wait_for_log(log_path: Path, needle: str, timeout_s: float, since: int) -> bool:
    """Whether `needle` appears in the log after byte `since` (where this process's life began)."""
    return wait_until(
        lambda: needle in log_path.read_text(errors="replace")[since:], timeout_s, 0.05
    )


def consumed(store: SnapshotStore) -> int:
    """Events the newest snapshot generation holds (its offsets summed): how far an indexer got."""
    if store.latest_generation() is None:
        return 0
    return sum(o for parts in store.read_manifest().offsets.values() for o in parts.values())


def rss_bytes() -> int:
    """Current resident set size (VmRSS), not the peak: the reload delta must exclude transients."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def rss_by_mapping() -> dict[str, int]:
    """Resident bytes by mapping (/proc/self/smaps): "anonymous" (heap, numpy, faiss, stacks)
    and each mapped file by path. Separates what an index holds (anonymous memory, its own
    mapped files) from the pages of the model weights and shared libraries that the load's
    model canary and the numba kernels touch: fixed costs of the process, not per chunk."""
    totals: dict[str, int] = {}
    name = "anonymous"
    with open("/proc/self/smaps", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            head = line.split(maxsplit=6)
            if len(head) >= 5 and "-" in head[0] and ":" in head[3]:  # a mapping's header line
                path = head[5].strip() if len(head) > 5 else ""
                name = path if path.startswith("/") else "anonymous"
            elif head and head[0] == "Rss:":
                totals[name] = totals.get(name, 0) + int(head[1]) * 1024
    return totals


def io_written(*, thread: bool = False) -> int:
    """Bytes this process (`thread`: the calling thread) passed to write(2)/pwrite(2) so far
    (Linux /proc/self/io wchar): what a file updated in place (documents.sqlite, its WAL) really
    cost, where counting changed files counts the whole file as soon as one page of it changed.
    0 where /proc is not available."""
    try:
        for line in (
            Path("/proc/thread-self/io" if thread else "/proc/self/io").read_text().splitlines()
        ):
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def disk_waits() -> dict[str, int]:
    """Major page faults and bytes read from the block device by this process so far: a query
    whose wall time exceeds its CPU time waited on one of these, or was preempted."""
    read = 0
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("read_bytes:"):
                read = int(line.split()[1])
    except OSError:
        pass
    return {"major_faults": resource.getrusage(resource.RUSAGE_SELF).ru_majflt, "disk_read_bytes": read}


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
