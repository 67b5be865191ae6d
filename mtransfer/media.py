"""Reading images and audio from whatever users have: files, bytes, arrays, ``datasets`` columns.

Every reader raises :class:`MediaError` naming the file (or the item) and what was wrong, and
:func:`find_bad_inputs` checks a whole dataset before training so that a run stops early with
the list of unreadable files, or skips them when asked to.

Accepted inputs:

* images: a path (any format Pillow reads), a ``PIL.Image``, a numpy array or tensor
  (``HxW``, ``HxWxC`` or ``CxHxW``; uint8, or floats in [0, 1]), a ``datasets`` image value
  (``{"bytes": ..., "path": ...}``); every image becomes RGB exactly as transformers' ``load_image``
  (and so ``pipeline("image-classification")`` on an export) makes it: turned upright by its EXIF
  orientation, then Pillow's ``convert("RGB")``: grayscale and CMYK converted, the alpha channel of
  RGBA / LA / transparent-palette images dropped (the colour stored under a transparent pixel is
  what the model sees), 16-bit images clipped at 255 (a warning says so: convert them to 8-bit);
* audio: a path (wav, flac, mp3, ogg and whatever ffmpeg decodes), a ``(waveform, sample_rate)``
  pair, a ``datasets`` audio value (``{"array", "sampling_rate"}``, ``{"bytes", "path"}`` or a
  decoder object), or a bare array / tensor taken to be at the model's rate (as
  ``transformers.pipeline`` does). Channels are averaged to mono and the signal is resampled
  with ``torchaudio.functional.resample``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".aiff", ".aif", ".webm")


class MediaError(ValueError):
    """An image or audio input that cannot be read; the message names the file or item."""


def describe(item: Any) -> str:
    """A short name for an input, for messages: its path, or its type and shape."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, dict):
        if item.get("path"):
            return str(item["path"])
        return "a dict with " + ", ".join(sorted(map(str, item)))
    if isinstance(item, (tuple, list)) and len(item) == 2 and np.isscalar(item[1]):
        return f"a waveform of shape {tuple(np.shape(item[0]))} at {item[1]} Hz"
    shape = getattr(item, "shape", None) or getattr(item, "size", None)
    return f"a {type(item).__name__}" + (f" of shape/size {tuple(shape)}" if shape is not None else "")


def _open_path(path: Path, what: str) -> Path:
    if not path.exists():
        raise MediaError(f"{path}: no such {what} file.")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, not an {what} file.")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: the file is empty (0 bytes).")
    return path


# --- images ------------------------------------------------------------------------------
_WARNED_WIDE = False


def _to_rgb(image: Any, name: str) -> Any:
    """RGB as transformers' ``load_image`` makes it (EXIF orientation, then ``convert("RGB")``), so a model
    trained here sees what a pipeline on its export sees, pixel for pixel."""
    import warnings

    from PIL import ImageOps

    global _WARNED_WIDE
    if image.width == 0 or image.height == 0:
        raise MediaError(f"{name}: the image has no pixels ({image.width}x{image.height}).")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F") and not _WARNED_WIDE:
        high = image.getextrema()[1]
        if high > 255:
            _WARNED_WIDE = True
            warnings.warn(f"{name}: a {image.mode} image with values up to {high}: it is read as transformers' "
                          "load_image (and a pipeline) reads it, clipped at 255. Convert such images to 8-bit "
                          "(scaled) before training. (Said once per process.)", stacklevel=3)
    image = ImageOps.exif_transpose(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def _array_to_image(array: Any, name: str) -> Any:
    from PIL import Image

    arr = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise MediaError(f"{name}: an image array must be HxW, HxWxC or CxHxW with 1, 3 or 4 channels; got shape {arr.shape}.")
    if arr.size == 0:
        raise MediaError(f"{name}: the image array is empty (shape {arr.shape}).")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise MediaError(f"{name}: the image array holds NaN or infinite values.")
        if arr.min() < 0 or arr.max() > 1:
            raise MediaError(f"{name}: a float image array must hold values in [0, 1]; got [{arr.min():.3g}, {arr.max():.3g}].")
        arr = np.round(arr * 255)
    elif arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise MediaError(f"{name}: an integer image array must hold values in [0, 255]; got [{arr.min()}, {arr.max()}].")
    return Image.fromarray(arr.astype(np.uint8))


def load_image(item: Any) -> Any:
    """Read one image input as an RGB ``PIL.Image`` (decoded, so a corrupt file fails here).

    Raises:
        MediaError: Missing, empty, corrupt or unsupported file, or a malformed array.
    """
    from PIL import Image, UnidentifiedImageError

    name = describe(item)
    if isinstance(item, dict) and ("bytes" in item or "path" in item):
        if item.get("bytes"):
            item = io.BytesIO(item["bytes"])
        elif item.get("path"):
            item = item["path"]
        else:
            raise MediaError(f"{name}: the image value has neither bytes nor a path.")
    if isinstance(item, Image.Image):
        image = item
    elif isinstance(item, (str, os.PathLike, io.BytesIO)):
        source = _open_path(Path(item).expanduser(), "image") if not isinstance(item, io.BytesIO) else item
        try:
            with Image.open(source) as im:
                im.load()
                image = im.copy()
        except UnidentifiedImageError:
            raise MediaError(f"{name}: not an image Pillow can read (unsupported format or corrupt file).") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise MediaError(f"{name}: cannot decode the image ({err}).") from None
    elif isinstance(item, (np.ndarray, torch.Tensor)):
        image = _array_to_image(item, name)
    else:
        raise MediaError(f"{name}: expected an image path, a PIL image, an array or a datasets image value.")
    return _to_rgb(image, name)


# --- audio ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> Callable[[torch.Tensor], torch.Tensor]:
    import torchaudio

    return torchaudio.transforms.Resample(orig, new, dtype=torch.float32)


def to_mono_resampled(waveform: torch.Tensor, sample_rate: int, target_rate: int, name: str = "audio") -> torch.Tensor:
    """Average channels and resample to ``target_rate``.

    Shape:
        waveform: ``(samples,)`` or ``(channels, samples)`` (the smaller axis is taken as
        channels when it has at most 8 entries). Returns ``(samples_at_target_rate,)``.
    """
    wav = waveform.detach().to(torch.float32).cpu()
    if wav.ndim == 2:
        if wav.shape[0] > 8 and wav.shape[1] <= 8:
            wav = wav.T  # (samples, channels) as soundfile and scipy give it
        wav = wav.mean(0)
    elif wav.ndim != 1:
        raise MediaError(f"{name}: a waveform must be 1-D (samples) or 2-D (channels, samples); got shape {tuple(waveform.shape)}.")
    if wav.numel() == 0:
        raise MediaError(f"{name}: the audio has no samples.")
    if not torch.isfinite(wav).all():
        raise MediaError(f"{name}: the waveform holds NaN or infinite values.")
    if int(sample_rate) <= 0:
        raise MediaError(f"{name}: sample rate {sample_rate} is not a positive number of Hz.")
    if int(sample_rate) != int(target_rate):
        wav = _resampler(int(sample_rate), int(target_rate))(wav.unsqueeze(0))[0]
    return wav.contiguous()


def _decode_audio(source: Any, name: str) -> tuple[torch.Tensor, int]:
    import torchaudio

    try:
        waveform, rate = torchaudio.load(source)
    except Exception as err:  # ffmpeg / torchcodec raise RuntimeError with their own wording
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MediaError(f"{name}: cannot decode the audio (corrupt or unsupported format: {text}).") from None
    return waveform, int(rate)


def load_audio(item: Any, sampling_rate: int) -> torch.Tensor:
    """Read one audio input as a mono float32 waveform at ``sampling_rate``.

    Shape:
        Returns ``(samples,)``.

    Raises:
        MediaError: Missing, empty, corrupt or unsupported file, or a malformed waveform.
    """
    name = describe(item)
    if isinstance(item, dict):
        if item.get("array") is not None:
            if "sampling_rate" not in item:
                raise MediaError(f"{name}: an audio dict with 'array' needs 'sampling_rate'.")
            return to_mono_resampled(torch.as_tensor(np.asarray(item["array"])), item["sampling_rate"], sampling_rate, name)
        if item.get("bytes"):
            wav, rate = _decode_audio(io.BytesIO(item["bytes"]), name)
            return to_mono_resampled(wav, rate, sampling_rate, name)
        if item.get("path"):
            item = item["path"]
        else:
            raise MediaError(f"{name}: expected an audio dict with 'array' + 'sampling_rate', 'bytes' or 'path'.")
    if isinstance(item, (str, os.PathLike)):
        path = _open_path(Path(item).expanduser(), "audio")
        wav, rate = _decode_audio(str(path), name)
        return to_mono_resampled(wav, rate, sampling_rate, name)
    if isinstance(item, (tuple, list)) and len(item) == 2 and np.isscalar(item[1]):
        return to_mono_resampled(torch.as_tensor(np.asarray(item[0])), item[1], sampling_rate, name)
    if hasattr(item, "get_all_samples"):  # a torchcodec decoder (datasets' decoded audio)
        samples = item.get_all_samples()
        return to_mono_resampled(samples.data, samples.sample_rate, sampling_rate, name)
    if isinstance(item, (np.ndarray, torch.Tensor)):
        arr = torch.as_tensor(item) if isinstance(item, torch.Tensor) else torch.from_numpy(np.asarray(item, dtype=np.float32))
        return to_mono_resampled(arr, sampling_rate, sampling_rate, name)
    raise MediaError(f"{name}: expected an audio file path, a (waveform, sample_rate) pair, a datasets audio value "
                     "or a waveform array.")


# --- whole datasets ---------------------------------------------------------------------
def find_bad_inputs(inputs: Sequence[Any], reader: Callable[[Any], Any], workers: int | None = None) -> list[tuple[int, str]]:
    """Read every input once; return ``(index, message)`` for each that fails, in order."""
    def check(i: int) -> tuple[int, str] | None:
        try:
            reader(inputs[i])
        except MediaError as err:
            return i, str(err)
        return None

    workers = workers or min(8, os.cpu_count() or 1)
    if len(inputs) < 16 or workers == 1:
        results = [check(i) for i in range(len(inputs))]
    else:
        with ThreadPoolExecutor(workers) as pool:  # decoders release the GIL
            results = list(pool.map(check, range(len(inputs))))
    return [r for r in results if r is not None]


SKIP_HINT = "Fix or remove them, or pass skip_bad_inputs=True (training.skip_bad_inputs=true in a recipe) to train without them."


def format_bad_inputs(bad: list[tuple[int, str]], total: int, source: str, limit: int = 20,
                      hint: str = "Fix or remove them.") -> str:
    """The message that stops a run: how many inputs are bad and which, and what to do (``hint``)."""
    lines = [f"{source}: {len(bad)} of {total} inputs cannot be read:"]
    lines += [f"  row {i}: {msg}" for i, msg in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    lines.append(hint)
    return "\n".join(lines)


def is_media_path(value: Any) -> bool:
    """A string that names an image or audio file by its suffix (not a URL)."""
    return (isinstance(value, str) and "\n" not in value and "://" not in value
            and Path(value).suffix.lower() in IMAGE_SUFFIXES + AUDIO_SUFFIXES)


def resolve_relative_paths(columns: dict[str, list], base: Path) -> dict[str, list]:
    """Columns of media paths with relative paths taken against ``base`` (the table's own folder).

    A column counts as one of paths when every value it holds is a string naming an image or
    audio file; ``~`` is expanded and absolute paths stay as they are. Other columns are unchanged.
    """
    out = {}
    for name, values in columns.items():
        present = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
        if present and all(is_media_path(v) for v in present):
            values = [v if not isinstance(v, str) else
                      str(Path(v).expanduser() if Path(v).expanduser().is_absolute() else base / v) for v in values]
        out[name] = values
    return out


def _array_bytes(array: Any) -> bytes:
    """An array's content with its shape and dtype: the same bytes in another shape or type are other inputs."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().contiguous().numpy()
    array = np.ascontiguousarray(np.asarray(array))
    return f"{array.dtype.str}|{array.shape}|".encode() + array.tobytes()


def media_fingerprint(inputs: Sequence[Any]) -> str:
    """Hash of media inputs: paths with size and modification time, bytes and arrays by content."""
    h = hashlib.sha256()
    for item in inputs:
        if isinstance(item, dict) and item.get("bytes"):
            h.update(hashlib.sha256(item["bytes"]).digest())
        elif isinstance(item, dict) and item.get("array") is not None:
            h.update(_array_bytes(item["array"]))
            h.update(str(item.get("sampling_rate")).encode())
        elif isinstance(item, dict) and item.get("path"):
            item = item["path"]
        if isinstance(item, (str, os.PathLike)):
            path = Path(item).expanduser()
            stat = path.stat() if path.exists() else None
            h.update(f"{path.resolve()}|{stat.st_size if stat else -1}|{stat.st_mtime_ns if stat else -1}".encode())
        elif isinstance(item, (tuple, list)) and len(item) == 2 and np.isscalar(item[1]):
            h.update(_array_bytes(item[0]) + f"|{item[1]}".encode())
        elif isinstance(item, (torch.Tensor, np.ndarray)):
            h.update(_array_bytes(item))
        elif hasattr(item, "tobytes") and hasattr(item, "mode"):  # PIL image
            h.update(f"{item.mode}|{item.size}|".encode() + item.tobytes())
        elif not isinstance(item, dict):
            h.update(repr(item).encode())
        h.update(b"\x00")
    return h.hexdigest()
