"""Reading weight files: a corrupt or truncated safetensors file is one line naming it.

safetensors' own errors (``HeaderTooLarge``, ``MetadataIncompleteBuffer``, a Rust panic on a
cut-off file) say nothing about which file; :func:`check_safetensors` reads the header and the
declared sizes first, and :func:`load_safetensors` wraps the load with the file's name.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from pathlib import Path
from typing import Iterator

import torch


class CorruptWeightsError(ValueError):
    """A weight file is missing, truncated or not safetensors; the message names it."""


def check_safetensors(path: str | os.PathLike) -> None:
    """Raise :class:`CorruptWeightsError` naming ``path`` unless it is a complete safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise CorruptWeightsError(f"{path}: weight file missing.")
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError(f"{size} bytes, shorter than a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100_000_000:
                raise ValueError(f"header length {n} but the file has {size} bytes")
            header = json.loads(fh.read(n))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        if 8 + n + max(ends, default=0) > size:
            raise ValueError(f"truncated: the header declares {8 + n + max(ends)} bytes, the file has {size}")
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as err:
        raise CorruptWeightsError(f"{path}: not a readable safetensors file ({err}); it may be truncated or "
                                  "corrupt: write it again.") from None


def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` after :func:`check_safetensors`."""
    from safetensors.torch import load_file

    check_safetensors(path)
    try:
        return load_file(str(path), device=device)
    except Exception as err:  # noqa: BLE001  (safetensors raises its own error types, and panics)
        raise CorruptWeightsError(f"{path}: cannot read the weights ({type(err).__name__}: {err}).") from None


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _refuses_weights_only(path: Path) -> bool:
    """Whether a torch-pickle file fails a weights-only load (Accelerate's allow-list of safe globals included)."""
    import pickle

    from accelerate.utils import load as accelerate_load

    try:
        accelerate_load(path, map_location="cpu", mmap=True)
    except pickle.UnpicklingError:
        return True
    except Exception:  # noqa: BLE001  (truncated or foreign files fail otherwise: not what is sought here)
        return False
    return False


@contextlib.contextmanager
def refuse_unsafe_pickles(folder: str | os.PathLike | None) -> Iterator[None]:
    """Turn a weights-only refusal (``pickle.UnpicklingError``, whose text suggests ``weights_only=False``) inside
    the block into one line naming the file of ``folder`` that holds code, and saying not to trust it."""
    import pickle

    try:
        yield
    except pickle.UnpicklingError:
        folder = Path(folder) if folder is not None else None
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in PICKLE_SUFFIXES) \
            if folder is not None and folder.is_dir() else []
        culprit = next((p for p in files if _refuses_weights_only(p)), None)
        where = str(culprit) if culprit is not None else f"a pickled file in {folder}"
        raise CorruptWeightsError(
            f"{where}: refused: it holds Python objects beyond tensors, which would run code when loaded. Do not trust "
            "this file; load weights only from a source you trust (safetensors files hold no code).") from None
