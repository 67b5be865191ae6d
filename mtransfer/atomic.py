"""Atomic writes (outputs appear whole or not at all), and JSON reads with one-line errors.

Everything mtransfer writes (model folders, checkpoints, metrics, plots) is first written to
a temporary name in the destination's own folder, then renamed into place, so an interrupted
run never leaves a half-written file or folder behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path``.

    On an exception the temporary folder is removed and ``path`` is left as it was.

    >>> with atomic_directory("/tmp/mtransfer-doctest-out") as tmp:
    ...     _ = (tmp / "a.txt").write_text("hello")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fix_permissions(tmp)
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fix_permissions(path: str | os.PathLike) -> None:
    """Give ``path`` (and, for a folder, everything in it) the modes the user's umask asks for.

    ``tempfile`` creates private files (0600) and folders (0700); an output renamed into place
    from one would keep those modes.
    """
    path = Path(path)
    mask = _umask()
    targets = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in targets:
        if p.is_symlink():
            continue
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file name next to ``path``; on success it replaces ``path``, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        fix_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: str | os.PathLike, what: str, missing_hint: str = "") -> Any:
    """A JSON file's content; one-line errors naming the file when it is missing or not JSON.

    Args:
        path: The file.
        what: What it should be, for the messages (``"run record"``).
        missing_hint: Appended to the not-found message (where such a file comes from).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what}{' (' + missing_hint + ')' if missing_hint else ''}.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); the {what} is damaged.") from None
