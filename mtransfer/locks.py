"""One run per output folder: a lock file that says who holds it; and a waiting lock for shared work.

Two runs writing one ``output_dir`` at once would mix their checkpoints and ``metrics.json``.
:func:`output_lock` creates ``<output_dir>/.mtransfer.lock`` exclusively (``O_CREAT | O_EXCL``)
with the holder's process id, host and start time; a second run stops with a message naming
them. A lock left by a process that no longer runs on this host is taken over.

:func:`file_lock` is the other kind: ``flock`` on a file beside a path, held for a block, so a
second process doing the same work (extracting one cache entry, building one corpus) waits for
the first and then finds it done.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

LOCK_FILE = ".mtransfer.lock"


class OutputLockedError(RuntimeError):
    """Another run holds the output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _try_create(path: Path, info: dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh)
    return True


def acquire(folder: str | os.PathLike) -> Path:
    """Take the lock of ``folder`` (created if needed) or raise :class:`OutputLockedError` naming its holder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        if _try_create(path, info):
            return path
        try:
            holder = json.loads(path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            holder = {}
        same_host = holder.get("host") == info["host"]
        if same_host and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
            path.unlink(missing_ok=True)  # left by a run that died: take it over
            continue
        raise OutputLockedError(
            f"{folder} is in use by another run (process {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"since {holder.get('started', '?')}); wait for it to finish or choose another output_dir. If no such run "
            f"exists, delete {path}.")
    raise OutputLockedError(f"{folder}: could not take the lock {path}.")


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, accelerator: Any = None) -> Iterator[None]:
    """Hold the lock of ``folder`` for the block; with an Accelerator, the main process holds it for all."""
    main = accelerator is None or accelerator.is_main_process
    path = acquire(folder) if main else None
    try:
        yield
    finally:
        if path is not None:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold ``path``'s lock (``flock`` on ``.<name>.lock`` beside it) for the block; other holders wait."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
