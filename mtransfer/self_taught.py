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

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mtransfer.atomic import atomic_write_json


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


def compare_self_taught(output_dir: str | Path = "outputs/self_taught", *, train_per_topic: int = 48, seed: int = 0,
                        epochs: int = 20, vector_size: int = 100, w2v_epochs: int = 10,
                        progress_bar: bool = False) -> list[dict[str, Any]]:
    """Random vs self-taught word vectors vs a sentence-transformers encoder on fortunes topics."""
    import mtransfer as mt
    from mtransfer.corpora import fortunes_corpus, fortunes_splits
    from mtransfer.demo import minilm_path

    out = Path(output_dir)
    splits = fortunes_splits(train_per_topic=train_per_topic, seed=seed)
    train = mt.load_labeled(splits["train"])
    valid = mt.load_labeled(splits["validation"], label_names=train.label_names)
    test = mt.load_labeled(splits["test"], label_names=train.label_names)
    held_out = [r["text"] for r in splits["validation"] + splits["test"]]
    start = time.perf_counter()
    corpus = fortunes_corpus(exclude_texts=held_out)
    vectors = train_word_vectors(corpus, out / "fortunes.w2v.txt", vector_size=vector_size, seed=seed, epochs=w2v_epochs)
    pretrain_seconds = time.perf_counter() - start
    print(f"word2vec on {len(corpus):,} unlabelled fortunes ({sum(len(t.split()) for t in corpus):,} words): "
          f"{pretrain_seconds:.1f}s -> {vectors}")
    random_file = random_vectors_like(vectors, out / "random.w2v.txt", seed=seed)

    rows = []
    # the transfer recipe: a head on the frozen vectors, then the vectors fine-tuned at a lower rate
    settings = dict(strategy="two_stage", num_epochs=epochs, head_epochs=epochs // 2, head_learning_rate=3e-2,
                    learning_rate=3e-3, batch_size=16, seed=seed, progress_bar=progress_bar, report_to=[], plot=False,
                    save_checkpoints=False, lr_schedule="linear", warmup_ratio=0.1)
    for name, path in (("random embeddings", random_file), ("self-taught word2vec", vectors)):
        model = mt.TransferModel.from_backbone("static_vectors", path, labels=train.label_names, seed=seed,
                                               vocab_texts=train.inputs, vocab_budget=20_000, pooling="mean")
        trainer = mt.Trainer(model, mt.TrainingArguments(output_dir=str(out / name.split()[0]), **settings), train, valid)
        result = trainer.train()
        rows.append({"backbone": name, "valid_accuracy": result.final_metrics["eval_accuracy"],
                     "test_accuracy": trainer.evaluate(test)["eval_accuracy"], "seconds": result.train_seconds})
    model = mt.TransferModel.from_backbone("sentence", minilm_path(), labels=train.label_names, seed=seed)
    probe = {**settings, "strategy": "frozen", "num_epochs": 8, "learning_rate": 2e-2, "head_epochs": 1}
    trainer = mt.Trainer(model, mt.TrainingArguments(output_dir=str(out / "sentence"), **probe), train, valid)
    result = trainer.train()
    rows.append({"backbone": "sentence-transformers MiniLM-L6 (frozen)", "valid_accuracy": result.final_metrics["eval_accuracy"],
                 "test_accuracy": trainer.evaluate(test)["eval_accuracy"], "seconds": result.train_seconds})
    print(f"\n{'backbone':<42}{'valid acc':>10}{'test acc':>10}{'time':>8}")
    for r in rows:
        print(f"{r['backbone']:<42}{r['valid_accuracy']:>10.3f}{r['test_accuracy']:>10.3f}{r['seconds']:>7.0f}s")
    print(f"{'chance':<42}{0.2:>10.3f}{0.2:>10.3f}")
    atomic_write_json(out / "results.json", {"pretrain_seconds": pretrain_seconds, "corpus_texts": len(corpus), "rows": rows})
    return rows
