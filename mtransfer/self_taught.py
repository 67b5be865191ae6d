"""Self-taught transfer for text: learn word vectors on unlabelled text, then transfer them.

:func:`train_word_vectors` trains word2vec or fastText with gensim on an unlabelled corpus
(tokenised like :class:`~mtransfer.adapters.static_vectors.StaticVectorsAdapter`) and writes
the vectors in the standard word2vec text format, or fastText's ``.bin`` (with subwords).

:func:`compare_self_taught` is the experiment behind ``recipes/self_taught_vectors.py``: on
fortunes topics, the same static-vector classifier with random embeddings, with vectors
self-taught on the unlabelled fortunes (validation and test texts left out), and, for
reference, a sentence-transformers encoder (MiniLM-L6) as a frozen probe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np



def train_word_vectors(texts: Sequence[str], path: str | Path, *, kind: str = "word2vec", vector_size: int = 100,
                       window: int = 5, min_count: int = 2, epochs: int = 15, seed: int = 0, lowercase: bool = True,
                       workers: int = 1) -> Path:
    """Train word vectors on unlabelled texts and write them to ``path``.

    Args:
        texts: The unlabelled corpus.
        path: Output file: word2vec text format, or fastText ``.bin`` for ``kind="fasttext"``.
        kind: ``word2vec`` (skip-gram) or ``fasttext`` (skip-gram with subwords).
        vector_size, window, min_count, epochs: gensim's settings.
        seed: gensim's seed (with ``workers=1`` the result is reproducible).
        lowercase: Lower-case before tokenising.
    """
    import regex
    from gensim.models import FastText, Word2Vec

    from mtransfer.adapters.static_vectors import TOKEN_PATTERN

    if kind not in ("word2vec", "fasttext"):
        raise ValueError(f"train_word_vectors kind={kind!r}; expected 'word2vec' or 'fasttext'.")
    pattern = regex.compile(TOKEN_PATTERN)
    sentences = [pattern.findall(t.lower() if lowercase else t) for t in texts]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise ValueError("train_word_vectors: the corpus has no tokens.")
    cls = FastText if kind == "fasttext" else Word2Vec
    model = cls(sentences, vector_size=vector_size, window=window, min_count=min_count, epochs=epochs, sg=1,
                seed=seed, workers=workers)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if kind == "fasttext":
        from gensim.models.fasttext import save_facebook_model

        save_facebook_model(model, str(tmp))
    else:
        model.wv.save_word2vec_format(str(tmp), binary=False)
    tmp.replace(path)
    return path


def random_vectors_like(path: str | Path, out: str | Path, seed: int = 0) -> Path:
    """The same words as ``path``'s vectors, with random vectors of the same scale (the no-transfer baseline)."""
    from gensim.models import KeyedVectors

    from mtransfer.adapters.static_vectors import load_vectors

    kv = load_vectors(path)
    vectors = np.random.default_rng(seed).standard_normal(kv.vectors.shape).astype(np.float32) * float(np.std(kv.vectors))
    rand = KeyedVectors(kv.vector_size)
    rand.add_vectors(list(kv.index_to_key), vectors)
    out = Path(out)
    rand.save_word2vec_format(str(out), binary=False)
    return out
