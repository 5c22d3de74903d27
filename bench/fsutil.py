"""File-system helpers shared by every writer: temporary names, stale temporaries, run-directory locks.

Every augbench writer writes ``<dir>/.<name>.tmp-<pid>`` (or ``<name>.tmp-<pid>`` in the feature cache)
and renames it into place, so a killed process leaves at most such a temporary behind, never a truncated
file under its final name.  :func:`remove_stale_tmp` deletes the temporaries whose writer is no longer
alive (a live writer's file is never touched), which the harness does when it takes a run directory.

:func:`run_lock` makes a run directory exclusive: a second ``bench run`` on the same run directory (same
recipe config, seed, profile and data) refuses at once, naming the process that holds it, instead of two
processes writing the same checkpoints and results.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from bench.errors import BenchError

_TMP = re.compile(r"\.tmp-(\d+)$")
LOCK_NAME = ".bench.lock"


def tmp_path(path: Path) -> Path:
    """The temporary name a writer of ``path`` uses (same directory, so the rename is atomic)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield the temporary path to write ``path``'s content to; on success it is renamed to ``path``, on
    any failure (a full disk, a kill signal turned into an exception) it is removed and the error raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (on this host)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_tmp(root: Path) -> list[Path]:
    """Delete ``*.tmp-<pid>`` files under ``root`` whose writer process is gone; returns them."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for path in root.rglob("*.tmp-*"):
        match = _TMP.search(path.name)
        if match and path.is_file() and not pid_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


@contextlib.contextmanager
def run_lock(run_dir: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold ``run_dir``'s lock (an ``flock`` on ``run_dir/.bench.lock``, released when the process ends,
    however it ends).  Exclusive (default) for a process that may write the run's pretraining; ``shared``
    for readers of a finished run (task jobs of one cell running side by side, ``--split-tasks``).  A
    conflicting holder gets a :class:`BenchError` naming the exclusive holder's pid."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise BenchError(
                f"{run_dir} is in use by another bench run (pid {holder}); wait for it to finish "
                f"or use another --runs-dir"
            ) from None
        if not shared:  # shared holders leave the last exclusive holder's pid (they cannot all write)
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
