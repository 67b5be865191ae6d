"""Static word vectors (GloVe, word2vec, fastText) through gensim, as a text backbone.

:func:`load_vectors` reads GloVe text files (no header), word2vec text and binary files,
fastText ``.bin`` (with subword information) and ``.vec`` files, and gensim ``KeyedVectors``
files. A text or binary file is parsed once and converted to gensim's native format under
the mtransfer cache; later loads memory-map that copy, so even large files open at once.

:class:`StaticVectorsAdapter` keeps only the rows a task needs: the words of the training
texts plus the ``vocab_budget`` most frequent words of the vectors. Words of the training
texts that the vectors lack get a zero vector (``oov="zero"``, all sharing one ``[UNK]`` row),
their own random vector (``"random"``), or their fastText subword vector (``"subword"``).
Pooling: ``mean``, ``max``, ``mean_max`` (both, concatenated) or ``sif`` (frequency-weighted,
``a / (a + p(w))`` with word frequencies from the training texts). The embedding is one layer
group (``embeddings``) that strategies freeze or fine-tune; an optional small sequence encoder
(``cnn`` or ``bilstm``) between the embeddings and the pooling is new and trains with the head.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import regex
import torch
from torch import nn

from mtransfer.modalities import BUILTIN_MODALITIES
from mtransfer.adapters.base import Adapter, Features, LayerGroup, register_adapter, require_texts
from mtransfer.atomic import atomic_directory

FORMATS = ("auto", "glove", "word2vec", "word2vec_binary", "fasttext", "kv")
POOLINGS = ("mean", "max", "mean_max", "sif")
OOV = ("zero", "random", "subword")
ENCODERS = (None, "cnn", "bilstm")
# letters with their combining marks (Devanagari, Bengali vowel signs...), digits; apostrophes inside words
TOKEN_PATTERN = r"[\p{L}\p{M}\p{N}_]+(?:['’][\p{L}\p{M}\p{N}_]+)*|[^\p{L}\p{M}\p{N}_\s]"
FASTTEXT_MAGIC = 793712314
PAD, UNK = "[PAD]", "[UNK]"


def detect_format(path: Path) -> str:
    """Guess a vectors file's format from its name and first bytes."""
    if path.suffix == ".kv":
        return "kv"
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if len(head) >= 4 and int.from_bytes(head[:4], "little") == FASTTEXT_MAGIC:
        return "fasttext"
    first_line = head.split(b"\n", 1)[0]
    parts = first_line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        rest = head[len(first_line) + 1:]
        try:
            rest.decode("utf-8")
        except UnicodeDecodeError as err:
            return "word2vec_binary" if err.start < len(rest) - 8 else "word2vec"
        return "word2vec"
    return "glove"


NATIVE_FORMAT = 2  # the cache's converted copies: .npy arrays and JSON, never a pickle (format 1 was gensim's .kv)


def _native_dir(path: Path, fmt: str) -> Path:
    from mtransfer.cache import default_cache_dir

    st = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{fmt}".encode()).hexdigest()[:24]
    return default_cache_dir().parent / f"vectors-v{NATIVE_FORMAT}" / digest


def _write_native(kv: Any, folder: Path, source: Path, fmt: str) -> None:
    """The vectors as ``.npy`` arrays (memory-mappable, no pickle) and their words as JSON."""
    from gensim.models.fasttext import FastTextKeyedVectors

    with atomic_directory(folder) as tmp:
        meta: dict[str, Any] = {"format": NATIVE_FORMAT, "vector_size": int(kv.vector_size), "source": str(source.resolve()),
                                "source_format": fmt}
        np.save(tmp / "vectors.npy", np.ascontiguousarray(kv.vectors, dtype=np.float32), allow_pickle=False)
        if isinstance(kv, FastTextKeyedVectors):
            meta.update(fasttext=True, min_n=int(kv.min_n), max_n=int(kv.max_n), bucket=int(kv.bucket))
            for name in ("vectors_vocab", "vectors_ngrams"):
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(kv, name), dtype=np.float32), allow_pickle=False)
        (tmp / "keys.json").write_text(json.dumps([str(k) for k in kv.index_to_key], ensure_ascii=False), encoding="utf-8")
        (tmp / "vectors.json").write_text(json.dumps(meta))


def _read_native(folder: Path) -> Any:
    """gensim ``KeyedVectors`` over the memory-mapped arrays :func:`_write_native` wrote."""
    from gensim.models import KeyedVectors
    from gensim.models.fasttext import FastTextKeyedVectors

    from mtransfer.atomic import read_json

    meta = read_json(folder / "vectors.json", "converted vectors description")
    keys = read_json(folder / "keys.json", "converted vectors' words")
    load = lambda name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)  # noqa: E731
    if meta.get("fasttext"):
        kv = FastTextKeyedVectors(meta["vector_size"], meta["min_n"], meta["max_n"], meta["bucket"])
        kv.vectors_vocab, kv.vectors_ngrams = load("vectors_vocab"), load("vectors_ngrams")
    else:
        kv = KeyedVectors(meta["vector_size"])
    kv.vectors = load("vectors")
    kv.index_to_key = keys
    kv.key_to_index = {k: i for i, k in enumerate(keys)}
    return kv


def load_vectors(path: str | os.PathLike, format: str = "auto", *, convert: bool = True,
                 allow_pickle: bool = False) -> Any:
    """gensim ``KeyedVectors`` (``FastTextKeyedVectors`` for fastText ``.bin``) from a vectors file.

    Args:
        path: The vectors file.
        format: One of ``auto``, ``glove``, ``word2vec``, ``word2vec_binary``, ``fasttext``, ``kv``.
        convert: Keep a converted copy under the cache (``.npy`` arrays and JSON, no pickle) and
            memory-map it on later loads.
        allow_pickle: Read a gensim ``.kv`` file, which is a Python pickle: loading one runs
            whatever code it holds, so only for a file you made or trust.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Unknown format, a ``.kv`` file without ``allow_pickle``, or a file that does not
            parse as that format (named).
    """
    from gensim.models import KeyedVectors
    from gensim.models.fasttext import load_facebook_vectors

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Vectors file {str(path)!r} does not exist.")
    if format not in FORMATS:
        raise ValueError(f"Vectors format {format!r}; expected one of {', '.join(FORMATS)}.")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "kv" and not allow_pickle:
        raise ValueError(f"{path}: a gensim .kv file is a Python pickle, and loading one runs whatever code it holds. "
                         "Pass allow_pickle=True (--adapter allow_pickle=true) only for a file you made or trust, or "
                         "give the vectors as word2vec / GloVe text or fastText .bin (KeyedVectors.save_word2vec_format).")
    native = _native_dir(path, fmt)
    if convert and (native / "vectors.json").is_file():
        return _read_native(native)
    try:
        if fmt == "kv":
            kv = KeyedVectors.load(str(path))
        elif fmt == "fasttext":
            kv = load_facebook_vectors(str(path))
        else:
            kv = KeyedVectors.load_word2vec_format(str(path), binary=fmt == "word2vec_binary", no_header=fmt == "glove")
    except Exception as err:
        raise ValueError(f"{path}: cannot read it as {fmt} vectors ({str(err).splitlines()[0] if str(err) else type(err).__name__}).") from err
    if convert:
        _write_native(kv, native, path, fmt)
        return _read_native(native)
    return kv


class _SequenceEncoder(nn.Module):
    """A small trainable encoder over word vectors: a width-3 CNN or a BiLSTM."""

    def __init__(self, kind: str, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "cnn":
            self.net = nn.Conv1d(dim_in, dim_out, kernel_size=3, padding=1)
        else:
            self.net = nn.LSTM(dim_in, dim_out // 2, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "cnn":
            return torch.relu(self.net(x.transpose(1, 2)).transpose(1, 2))
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.net(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out


@register_adapter("static_vectors")
class StaticVectorsAdapter(Adapter):
    """Word vectors + pooling (+ an optional CNN/BiLSTM) as a text backbone.

    Args:
        vectors: A vectors file (see :func:`load_vectors`), or a folder written by
            :meth:`save_pretrained`.
        vocab_texts: Texts whose words make up the vocabulary (the training texts).
        vocab_budget: Most frequent words of the vectors kept besides those.
        format: Vectors file format (``auto`` detects it).
        lowercase: Lower-case tokens; None: when the vectors have no upper-case words.
        token_pattern: Regular expression of a token (``regex`` syntax; the default keeps
            letters with their combining marks, e.g. Devanagari vowel signs).
        oov: ``zero``, ``random`` or ``subword`` for training words the vectors lack.
        pooling: ``mean``, ``max``, ``mean_max`` or ``sif``.
        sif_a: The SIF weighting constant ``a``.
        max_tokens: Tokens kept per text.
        encoder: None, ``cnn`` or ``bilstm``.
        encoder_dim: Output size of the encoder.
        seed: Seeds random OOV vectors and the encoder.
        allow_pickle: Read a gensim ``.kv`` vectors file (a pickle: only one you trust; never saved
            with the model).

    >>> adapter = StaticVectorsAdapter("glove.6B.100d.txt", vocab_texts=train.inputs)  # doctest: +SKIP
    """

    pipeline_tag = "text-classification"
    max_length_setting = "max_tokens"
    training_texts_setting = "vocab_texts"
    summary = BUILTIN_MODALITIES["static_vectors"][0]

    def __init__(self, vectors: str | os.PathLike, *, vocab_texts: Sequence[str] | None = None, vocab_budget: int = 10_000,
                 format: str = "auto", lowercase: bool | None = None, token_pattern: str = TOKEN_PATTERN,
                 oov: str = "zero", pooling: str = "mean", sif_a: float = 1e-3, max_tokens: int = 256,
                 encoder: str | None = None, encoder_dim: int = 128, seed: int = 0, allow_pickle: bool = False,
                 _vocabulary: list[str] | None = None, _dim: int | None = None) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"StaticVectorsAdapter pooling={pooling!r}; expected one of {', '.join(POOLINGS)}.")
        if oov not in OOV:
            raise ValueError(f"StaticVectorsAdapter oov={oov!r}; expected one of {', '.join(OOV)}.")
        if encoder not in ENCODERS:
            raise ValueError(f"StaticVectorsAdapter encoder={encoder!r}; expected None, 'cnn' or 'bilstm'.")
        if max_tokens < 1 or vocab_budget < 0:
            raise ValueError("StaticVectorsAdapter max_tokens must be >= 1 and vocab_budget >= 0.")
        self.model_name_or_path = str(vectors)
        self.settings = dict(vocab_budget=vocab_budget, format=format, token_pattern=token_pattern, oov=oov,
                             pooling=pooling, sif_a=sif_a, max_tokens=max_tokens, encoder=encoder,
                             encoder_dim=encoder_dim, seed=seed)
        self.pooling, self.max_tokens, self.oov = pooling, max_tokens, oov
        self._pattern = regex.compile(token_pattern)
        generator = torch.Generator().manual_seed(seed)
        if _vocabulary is not None:  # rebuilt by from_pretrained; weights come from the model's safetensors
            self.lowercase = bool(lowercase)
            vocabulary, matrix = _vocabulary, torch.zeros(len(_vocabulary), int(_dim or 1))
            counts: Counter = Counter()
        else:
            kv = load_vectors(vectors, format, allow_pickle=allow_pickle)
            if lowercase is None:
                lowercase = not any(w != w.lower() for w in kv.index_to_key[:10_000])
            self.lowercase = bool(lowercase)
            counts = Counter(t for text in (vocab_texts or []) for t in self.tokenize(text))
            vocabulary, matrix = self._build_vocabulary(kv, counts, vocab_budget, oov, generator)
        self.vocabulary = vocabulary
        self.index = {w: i for i, w in enumerate(vocabulary)}
        self.embedding = nn.Embedding(len(vocabulary), matrix.shape[1], padding_idx=0)
        with torch.no_grad():
            self.embedding.weight.copy_(matrix)
        total = sum(counts.values()) or 1
        weights = torch.tensor([sif_a / (sif_a + counts.get(w, 0) / total) for w in vocabulary], dtype=torch.float32)
        self.register_buffer("word_weights", weights)
        dim = matrix.shape[1]
        self.encoder = None
        if encoder:  # drawn from the adapter's own seed; the caller's random state (the head's) is left alone
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.encoder = _SequenceEncoder(encoder, dim, encoder_dim)
            dim = encoder_dim
        self.embedding_dim = dim * (2 if pooling == "mean_max" else 1)

    # --- vocabulary ---------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        tokens = self._pattern.findall(text.lower() if self.lowercase else text)
        return tokens[: self.max_tokens]

    def _build_vocabulary(self, kv: Any, counts: Counter, budget: int, oov: str,
                          generator: torch.Generator) -> tuple[list[str], torch.Tensor]:
        words = [PAD, UNK]
        rows: list[int] = []
        extra: list[str] = []
        for w, _ in counts.most_common():
            if w in kv.key_to_index:
                words.append(w)
                rows.append(kv.key_to_index[w])
            elif oov != "zero":
                extra.append(w)
        seen = set(words)
        for w in kv.index_to_key[:budget]:
            if w not in seen:
                words.append(w)
                rows.append(kv.key_to_index[w])
                seen.add(w)
        dim = kv.vector_size
        known = torch.from_numpy(np.asarray(kv.vectors[np.asarray(rows, dtype=np.int64)] if rows else np.zeros((0, dim)),
                                            dtype=np.float32))
        if oov == "subword":
            if not hasattr(kv, "get_vector") or not getattr(kv, "bucket", 0):
                raise ValueError(f"oov='subword' needs fastText vectors with subword information (.bin); "
                                 f"{self.model_name_or_path!r} has none.")
            unseen = torch.from_numpy(np.stack([kv.get_vector(w) for w in extra]).astype(np.float32)) if extra else torch.zeros(0, dim)
        else:
            scale = float(known.std()) if len(known) > 1 else 0.1
            unseen = torch.randn(len(extra), dim, generator=generator) * scale
        matrix = torch.cat([torch.zeros(2, dim), known, unseen])
        return words + extra, matrix

    # --- contract -----------------------------------------------------------------------
    def validate_inputs(self, inputs: Sequence[Any], source: str = "inputs", hint: str = "") -> None:
        require_texts(inputs, source, "static-vectors")

    def preprocess(self, inputs: Sequence[Any], *, training: bool = False) -> dict[str, torch.Tensor]:
        ids = [[self.index.get(t, 1) for t in self.tokenize(text)] or [1] for text in inputs]
        width = max(len(x) for x in ids)
        input_ids = torch.zeros(len(ids), width, dtype=torch.long)
        for row, x in enumerate(ids):
            input_ids[row, : len(x)] = torch.tensor(x)
        return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}

    def forward_features(self, batch: dict[str, torch.Tensor]) -> Features:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        tokens = self.embedding(ids)
        if self.encoder is not None:
            tokens = self.encoder(tokens, mask)
        m = mask.unsqueeze(-1).to(tokens.dtype)
        if self.pooling == "sif":
            w = self.word_weights[ids].unsqueeze(-1) * m
            pooled = (tokens * w).sum(1) / w.sum(1).clamp(min=1e-9)
        else:
            mean = (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)
            if self.pooling == "mean":
                pooled = mean
            else:
                mx = tokens.masked_fill(m == 0, float("-inf")).max(1).values
                pooled = mx if self.pooling == "max" else torch.cat([mean, mx], dim=-1)
        return Features(pooled=pooled, tokens=tokens, mask=mask)

    def layer_groups(self) -> list[LayerGroup]:
        return [LayerGroup("embeddings", modules=[self.embedding])]

    def head_modules(self) -> list[nn.Module]:
        return [self.encoder] if self.encoder is not None else []

    def get_config(self) -> dict[str, Any]:
        return {**self.settings, "lowercase": self.lowercase, "source": self.model_name_or_path}

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps({"vocabulary": self.vocabulary,
                                                       "dim": int(self.embedding.weight.shape[1])}, ensure_ascii=False))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **config: Any) -> StaticVectorsAdapter:
        saved = json.loads((Path(folder) / "vocab.json").read_text())
        source = config.pop("source", None)
        adapter = cls(folder, _vocabulary=saved["vocabulary"], _dim=saved["dim"], **config)
        if source:
            adapter.model_name_or_path = source
        return adapter
