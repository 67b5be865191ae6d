"""On-disk cache of backbone ("bottleneck") features.

Features are written once and read memory-mapped afterwards, by training (the ``frozen``
strategy and every head-only phase), linear models and ranking. An entry is a folder named by
the hash of everything that changes the features:

* the backbone's weights (a content hash of its tensors, so fine-tuned, random-init and
  re-downloaded models never share features by accident),
* the adapter's preprocessing settings (tokenizer, max length, pooling, image size, sample
  rate...: :meth:`Adapter.feature_fingerprint`),
* the dataset (a hash of its inputs, :meth:`Adapter.input_fingerprint`),
* the view (0 for the plain features, k >= 1 for the k-th augmented view and its seed).

An entry holds ``meta.json`` and fixed-size shards ``shard_00000.safetensors`` ... Each shard
is written to a temporary file and renamed, and ``meta.json`` says ``complete`` only once every
shard is there, so an interrupted extraction resumes with the missing shards and two writers
can only write the same bytes to the same name. Under ``accelerate launch`` each process
extracts every ``num_processes``-th shard; readers see one cache in dataset order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from safetensors.torch import save_file

from mtransfer.atomic import atomic_write_json, fix_permissions
from mtransfer.locks import file_lock

logger = logging.getLogger(__name__)
CACHE_FORMAT = 1
DEFAULT_SHARD_SIZE = 4096


def _intact(shard: Path) -> bool:
    """Whether a shard file is there and whole (its safetensors header and declared sizes check out)."""
    from mtransfer.weight_files import CorruptWeightsError, check_safetensors

    if not shard.is_file():
        return False
    try:
        check_safetensors(shard)
    except CorruptWeightsError:
        return False
    return True


def default_cache_dir() -> Path:
    """``$MTRANSFER_CACHE``, else ``~/.cache/mtransfer/features``."""
    return Path(os.environ.get("MTRANSFER_CACHE", Path.home() / ".cache" / "mtransfer" / "features"))


def hash_tensors(tensors: dict[str, torch.Tensor]) -> str:
    """Content hash of named tensors (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _read_safetensors_mmap(path: Path, name: str) -> np.ndarray:
    """A zero-copy, read-only memory map of one tensor of a safetensors file (checked whole first)."""
    from mtransfer.weight_files import check_safetensors

    check_safetensors(path)
    with open(path, "rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(header_len))
    info = header[name]
    dtype = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64, "I64": np.int64}[info["dtype"]]
    if dtype is None:
        raise ValueError(f"{path}: bf16 cache shards cannot be memory-mapped; cache in float32 or float16.")
    start, end = info["data_offsets"]
    shape = tuple(info["shape"])
    if end == start:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=8 + header_len + start, shape=shape)


@dataclass
class CacheEntry:
    """One cached feature matrix, read through memory maps.

    Shape:
        ``(num_rows, dim)``; :meth:`rows` returns ``(len(indices), dim)``.
    """

    path: Path
    num_rows: int
    dim: int
    shard_size: int

    def _shard(self, i: int, name: str = "features") -> np.ndarray:
        if not hasattr(self, "_maps"):
            self._maps: dict[tuple[int, str], np.ndarray] = {}
        if (i, name) not in self._maps:
            self._maps[i, name] = _read_safetensors_mmap(self.path / f"shard_{i:05d}.safetensors", name)
        return self._maps[i, name]

    def rows(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Rows in the given order (a copy, so the tensor outlives the map)."""
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), self.dim), dtype=np.float32)
        shard_of, offset = np.divmod(idx, self.shard_size)
        for s in np.unique(shard_of):
            mask = shard_of == s
            out[mask] = self._shard(int(s))[offset[mask]]
        return torch.from_numpy(out)

    def all(self) -> torch.Tensor:
        return self.rows(np.arange(self.num_rows))

    def __len__(self) -> int:
        return self.num_rows

    def __getstate__(self) -> dict[str, Any]:  # memory maps reopen in data-loader workers
        return {k: v for k, v in self.__dict__.items() if k != "_maps"}


class FrameCacheEntry(CacheEntry):
    """Cached frame features (a sequence per row, e.g. an audio encoder's frames for a CTC head).

    A shard holds its rows' frames one after another (``features``: ``(frames, dim)``) and where
    each row starts (``offsets``: ``(rows + 1,)``).

    Shape:
        :meth:`frame_rows` returns ``(len(indices), longest, dim)`` padded with zeros and its
        mask ``(len(indices), longest)``.
    """

    def frame_rows(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The frames of rows ``indices`` in that order, padded, with their mask (copies)."""
        spans = []
        for idx in np.asarray(indices, dtype=np.int64):
            shard, row = divmod(int(idx), self.shard_size)
            offsets = self._shard(shard, "offsets")
            spans.append((shard, int(offsets[row]), int(offsets[row + 1])))
        longest = max([hi - lo for _, lo, hi in spans] + [1])
        out = np.zeros((len(spans), longest, self.dim), dtype=np.float32)
        mask = np.zeros((len(spans), longest), dtype=np.int64)
        for j, (shard, lo, hi) in enumerate(spans):
            out[j, :hi - lo] = self._shard(shard)[lo:hi]
            mask[j, :hi - lo] = 1
        return torch.from_numpy(out), torch.from_numpy(mask)

    def rows(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        raise TypeError(f"feature cache {self.path} holds frames, not one vector per row: use frame_rows.")


class FeatureCache:
    """Features of (adapter, dataset, view) triples, extracted once, memory-mapped after.

    Args:
        root: Folder of the cache (default :func:`default_cache_dir`).
        shard_size: Rows per shard (the unit of resumption and of multi-process work).
        dtype: ``float32`` or ``float16`` storage.

    >>> cache = FeatureCache("/tmp/mt-cache")  # doctest: +SKIP
    >>> feats = cache.features(model.adapter, train.inputs)  # doctest: +SKIP
    >>> feats.rows([0, 1]).shape  # doctest: +SKIP
    torch.Size([2, 384])
    """

    def __init__(self, root: str | os.PathLike | None = None, *, shard_size: int = DEFAULT_SHARD_SIZE,
                 dtype: str = "float32") -> None:
        if shard_size < 1:
            raise ValueError(f"FeatureCache shard_size must be >= 1, got {shard_size}.")
        if dtype not in ("float32", "float16"):
            raise ValueError(f"FeatureCache dtype={dtype!r}; expected 'float32' or 'float16'.")
        self.root = Path(root) if root is not None else default_cache_dir()
        self.shard_size = shard_size
        self.dtype = dtype
        self.hits = 0
        self.misses = 0

    # --- keys -----------------------------------------------------------------------------
    def key(self, adapter: Any, inputs: Sequence[Any], view: int = 0, seed: int = 0,
            frames: bool = False, block: int | None = None) -> dict[str, Any]:
        """Everything that decides the features, as a JSON-ready dict (``block``: only the weights below it count)."""
        fingerprint = adapter.feature_fingerprint()
        if block is not None:
            fingerprint = {**fingerprint, "weights": adapter.weights_below_block(block)}
        return {
            **({"frames": True} if frames else {}),
            **({"block_input": block} if block is not None else {}),
            "format": CACHE_FORMAT,
            "adapter": fingerprint,
            "data": adapter.input_fingerprint(inputs),
            "num_rows": len(inputs),
            "view": int(view),
            "view_seed": int(seed) if view else 0,
            "dtype": self.dtype,
            "shard_size": self.shard_size,
        }

    def entry_path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        return self.root / digest

    def lookup(self, key: dict[str, Any]) -> CacheEntry | None:
        """The complete entry for ``key``, or None.

        An entry with a damaged shard (truncated by a full disk, say) is not complete: the shard is
        removed, with a warning naming it, so the next extraction writes it again.
        """
        path = self.entry_path(key)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{meta_path}: not a readable feature-cache record ({err}); the cache entry is damaged: "
                             f"delete {path} and rerun (its features are extracted again).") from None
        if not meta.get("complete") or meta.get("key") != key:
            return None
        damaged = [s for s in range(int(meta.get("num_shards", 0))) if not _intact(path / f"shard_{s:05d}.safetensors")]
        if damaged:
            for s in damaged:
                logger.warning("feature cache %s: shard %d is damaged; extracting it again", path, s)
                (path / f"shard_{s:05d}.safetensors").unlink(missing_ok=True)
            atomic_write_json(meta_path, {**meta, "complete": False})
            return None
        kind = FrameCacheEntry if meta.get("frames") else CacheEntry
        return kind(path, meta["num_rows"], meta["dim"], meta["shard_size"])

    # --- extraction -------------------------------------------------------------------------
    def features(self, adapter: Any, inputs: Sequence[Any], *, view: int = 0, seed: int = 0, batch_size: int = 64,
                 device: torch.device | str | None = None, process_index: int = 0, num_processes: int = 1,
                 wait: Callable[[], None] | None = None, on_shard: Callable[[int], None] | None = None,
                 progress: bool = False, frames: bool = False, block: int | None = None) -> CacheEntry:
        """The cached features of ``inputs``, extracting whatever is missing first.

        Args:
            adapter: Its backbone runs in eval mode, without gradients.
            inputs: Raw inputs, in dataset order.
            view: 0 for plain features; k >= 1 for the k-th augmented view (preprocessing in
                training mode, seeded by ``seed``, ``view`` and the shard).
            batch_size: Inputs per forward pass.
            device: Where the backbone runs (default: where its parameters are).
            process_index, num_processes: This process's share of the shards.
            wait: Called after this process's shards are written (``accelerator.wait_for_everyone``).
            on_shard: Called with each shard index after it is written.
            progress: Show a progress bar.
            frames: Cache the adapter's frame features (``Features.tokens`` within ``Features.mask``)
                instead of the pooled vector: a :class:`FrameCacheEntry`.
            block: Cache the hidden states entering this block of the backbone instead, each
                example's real positions (:meth:`~mtransfer.adapters.base.Adapter.block_input`;
                :mod:`mtransfer.partial_cache`): a :class:`FrameCacheEntry`.
        """
        frames = frames or block is not None
        key = self.key(adapter, inputs, view, seed, frames, block)
        found = self.lookup(key)
        if found is not None:
            self.hits += 1
            return found
        path = self.entry_path(key)
        path.mkdir(parents=True, exist_ok=True)
        if num_processes == 1:  # another process extracting this entry: wait for it, then read its shards
            with file_lock(path):  # a second process extracting the same entry waits for the first
                found = self.lookup(key)
                if found is not None:
                    self.hits += 1
                    return found
                return self._fill(adapter, inputs, key, path, view, seed, batch_size, device, 0, 1, wait, on_shard,
                                  progress, frames, block)
        return self._fill(adapter, inputs, key, path, view, seed, batch_size, device, process_index, num_processes,
                          wait, on_shard, progress, frames, block)

    def _fill(self, adapter, inputs, key: dict[str, Any], path: Path, view: int, seed: int, batch_size: int, device,
              process_index: int, num_processes: int, wait, on_shard, progress: bool, frames: bool,
              block: int | None = None) -> CacheEntry:
        """Extract this process's missing shards of the entry at ``path``, then mark it complete."""
        self.misses += 1
        n = len(inputs)
        num_shards = max(1, -(-n // self.shard_size))
        mine = [s for s in range(num_shards) if s % num_processes == process_index]
        todo = [s for s in mine if not _intact(path / f"shard_{s:05d}.safetensors")]
        if todo:
            self._extract(adapter, inputs, path, todo, view, seed, batch_size, device, on_shard, progress, frames, block)
        if wait is not None:
            wait()
        missing = [s for s in range(num_shards) if not (path / f"shard_{s:05d}.safetensors").is_file()]
        if missing:
            raise RuntimeError(f"feature cache {path}: shards {missing[:5]} were not written by any process.")
        dim = _read_safetensors_mmap(path / "shard_00000.safetensors", "features").shape[1]
        if process_index == 0:
            atomic_write_json(path / "meta.json", {"key": key, "complete": True, "num_rows": n, "dim": int(dim),
                                                   "shard_size": self.shard_size, "num_shards": num_shards,
                                                   **({"frames": True} if frames else {})})
        if wait is not None:
            wait()
        return (FrameCacheEntry if frames else CacheEntry)(path, n, int(dim), self.shard_size)

    @torch.no_grad()
    def _extract(self, adapter, inputs, path: Path, shards: list[int], view: int, seed: int, batch_size: int,
                 device, on_shard, progress: bool, frames: bool = False, block: int | None = None) -> None:
        from tqdm.auto import tqdm

        modes = [(m, m.training) for m in adapter.modules()]  # restored module by module (frozen parts stay in eval)
        adapter.eval()
        device = torch.device(device) if device is not None else next(adapter.parameters()).device
        storage = torch.float16 if self.dtype == "float16" else torch.float32
        bar = tqdm(total=sum(min(self.shard_size, len(inputs) - s * self.shard_size) for s in shards),
                   desc="extracting features", disable=not progress, leave=False)
        try:
            for s in shards:
                lo, hi = s * self.shard_size, min(len(inputs), (s + 1) * self.shard_size)
                chunks = []
                # an augmented view seeds torch (CPU and CUDA) per shard; every generator is restored after
                cuda = [device.index or 0] if device.type == "cuda" else []
                with torch.random.fork_rng(devices=cuda, enabled=bool(view)):
                    if view:
                        torch.manual_seed((seed * 1_000_003 + view * 10_007 + s) % (2**31))
                    for start in range(lo, hi, batch_size):
                        batch = adapter.preprocess(list(inputs[start:min(hi, start + batch_size)]), training=bool(view))
                        batch = {k: v.to(device) for k, v in batch.items()}
                        if block is not None:
                            hidden, mask = adapter.block_input(batch, block)
                            chunks += [h[m.bool()].float().cpu() for h, m in zip(hidden, mask)]
                            bar.update(len(hidden))
                            continue
                        out = adapter.forward_features(batch)
                        if frames:
                            if out.tokens is None or out.mask is None:
                                raise ValueError(f"{type(adapter).__name__} gives no frame features to cache.")
                            chunks += [t[:int(n)].float().cpu() for t, n in zip(out.tokens, out.mask.sum(1))]
                            bar.update(len(out.tokens))
                        else:
                            chunks.append(out.pooled.float().cpu())
                            bar.update(len(chunks[-1]))
                tensors = {"features": torch.cat(chunks).to(storage).contiguous()}
                if frames:
                    tensors["offsets"] = torch.tensor([0, *np.cumsum([len(c) for c in chunks])], dtype=torch.int64)
                tmp = path / f".shard_{s:05d}.{os.getpid()}.{uuid.uuid4().hex}.tmp"  # unique per writer, threads too
                save_file(tensors, str(tmp))
                fix_permissions(tmp)  # safetensors creates private (0600) files; outputs follow the umask
                os.replace(tmp, path / f"shard_{s:05d}.safetensors")
                if on_shard is not None:
                    on_shard(s)
        finally:
            bar.close()
            for module, mode in modes:
                module.training = mode

    def clear(self) -> None:
        """Remove every entry under the root."""
        import shutil

        if self.root.is_dir():
            shutil.rmtree(self.root)


def text_fingerprint(items: Sequence[Any]) -> str:
    """Hash of a sequence of strings (or string pairs)."""
    h = hashlib.sha256()
    for x in items:
        h.update(repr(x).encode("utf-8", errors="surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()



class FrontEndStore:
    """A speech encoder's front-end output (filterbank frames or the normalised waveform) of whole files, on disk.

    Computing a clip's filterbank costs about as much as a small encoder's forward pass on it, and the
    result is the same every epoch, every run and every process that reads the file with the same
    extractor. The in-process memo (:mod:`mtransfer.adapters.audio`) covers a process's later epochs;
    this store covers the rest: later runs, other workers of a matrix, reruns. An entry is keyed by the
    file's *content* (SHA-256 of its bytes: a copy or a move of the file finds it, an edit in place
    does not) and the extractor's settings (its JSON and how short clips are padded), and holds the
    values and the count of valid frames as a safetensors file (no pickle), written to a temporary
    file and renamed, so concurrent writers of the same entry write the same bytes and a reader never
    sees half a file. An entry that does not read back whole is recomputed and rewritten (one warning).

    Layout: ``<root>/<extractor hash>/extractor.json`` (the settings, for people) and
    ``<root>/<extractor hash>/<content hash[:2]>/<content hash>.safetensors``. The root is
    ``<feature cache>/front_end`` (``$MTRANSFER_CACHE``); ``enabled = False`` turns the store off.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self._root = Path(root) if root is not None else None
        self.enabled = True
        self.hits = self.misses = self.writes = 0
        self._digests: dict[tuple, str] = {}  # (path, size, mtime) -> content hash: each file read once per process
        self._described: set[str] = set()

    @property
    def root(self) -> Path:
        return self._root if self._root is not None else default_cache_dir() / "front_end"

    def digest(self, path: str | os.PathLike) -> str | None:
        """SHA-256 of a file's bytes (kept per path, size and modification time); None when it cannot be read."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
        if key not in self._digests:
            try:
                with open(path, "rb") as f:
                    self._digests[key] = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError:
                return None
        return self._digests[key]

    def entry(self, path: str | os.PathLike, extractor: str) -> Path | None:
        """Where the front end of file ``path`` under ``extractor``'s settings is stored (None: not a readable file)."""
        if not self.enabled or not isinstance(path, (str, os.PathLike)):
            return None
        content = self.digest(path)
        if content is None:
            return None
        kind = hashlib.sha256(extractor.encode()).hexdigest()[:16]
        return self.root / kind / content[:2] / f"{content}.safetensors"

    def get(self, entry: Path | None) -> tuple[torch.Tensor, int, int] | None:
        """The stored ``(values, valid frames, samples of the clip)`` of an entry, or None (not there, or not
        whole: then it is rewritten)."""
        if entry is None:
            return None
        if not entry.is_file():
            self.misses += 1
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(entry)
            values, valid, samples = tensors["values"], int(tensors["valid"]), int(tensors["samples"])
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as e:
            logger.warning("front-end store: %s does not read back (%s); computing it again", entry, e)
            self.misses += 1
            return None
        self.hits += 1
        return values, valid, samples

    def put(self, entry: Path | None, values: torch.Tensor, valid: int, samples: int, extractor: str) -> None:
        """Store one file's front end (atomically; a failure to write only costs the next reader the computation)."""
        if entry is None:
            return
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            kind = entry.parent.parent
            if kind.name not in self._described:
                settings = kind / "extractor.json"
                if not settings.is_file():
                    atomic_write_json(settings, {"extractor": extractor})
                self._described.add(kind.name)
            tmp = entry.with_name(f".{entry.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
            save_file({"values": values.detach().cpu().contiguous(), "valid": torch.tensor(int(valid)),
                       "samples": torch.tensor(int(samples))}, tmp)
            fix_permissions(tmp)
            os.replace(tmp, entry)
            self.writes += 1
        except OSError as e:
            logger.warning("front-end store: could not write %s (%s)", entry, e)
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(tmp)


FRONT_END_STORE = FrontEndStore()
