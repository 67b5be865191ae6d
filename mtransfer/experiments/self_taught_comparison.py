"""The self-taught vectors experiment: random vs self-taught word2vec vs a sentence encoder on fortunes topics.

Run it with ``recipes/self_taught_vectors.py``; the library part is :mod:`mtransfer.self_taught`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mtransfer.atomic import atomic_write_json
from mtransfer.builtins import minilm_path
from mtransfer.builtins.corpora import fortunes_corpus, fortunes_splits
from mtransfer.data import load_labeled
from mtransfer.model import TransferModel
from mtransfer.self_taught import random_vectors_like, train_word_vectors
from mtransfer.training import Trainer, TrainingArguments


def compare_self_taught(output_dir: str | Path = "outputs/self_taught", *, train_per_topic: int = 48, seed: int = 0,
                        epochs: int = 20, vector_size: int = 100, w2v_epochs: int = 10,
                        progress_bar: bool = False) -> list[dict[str, Any]]:
    """Random vs self-taught word vectors vs a sentence-transformers encoder on fortunes topics."""
    out = Path(output_dir)
    splits = fortunes_splits(train_per_topic=train_per_topic, seed=seed)
    train = load_labeled(splits["train"])
    valid = load_labeled(splits["validation"], label_names=train.label_names)
    test = load_labeled(splits["test"], label_names=train.label_names)
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
        model = TransferModel.from_backbone("static_vectors", path, labels=train.label_names, seed=seed,
                                            vocab_texts=train.inputs, vocab_budget=20_000, pooling="mean")
        trainer = Trainer(model, TrainingArguments(output_dir=str(out / name.split()[0]), **settings), train, valid)
        result = trainer.train()
        rows.append({"backbone": name, "valid_accuracy": result.final_metrics["eval_accuracy"],
                     "test_accuracy": trainer.evaluate(test)["eval_accuracy"], "seconds": result.train_seconds})
    model = TransferModel.from_backbone("sentence", minilm_path(), labels=train.label_names, seed=seed)
    probe = {**settings, "strategy": "frozen", "num_epochs": 8, "learning_rate": 2e-2, "head_epochs": 1}
    trainer = Trainer(model, TrainingArguments(output_dir=str(out / "sentence"), **probe), train, valid)
    result = trainer.train()
    rows.append({"backbone": "sentence-transformers MiniLM-L6 (frozen)", "valid_accuracy": result.final_metrics["eval_accuracy"],
                 "test_accuracy": trainer.evaluate(test)["eval_accuracy"], "seconds": result.train_seconds})
    print(f"\n{'backbone':<42}{'valid acc':>10}{'test acc':>10}{'time':>8}")
    for r in rows:
        print(f"{r['backbone']:<42}{r['valid_accuracy']:>10.3f}{r['test_accuracy']:>10.3f}{r['seconds']:>7.0f}s")
    print(f"{'chance':<42}{0.2:>10.3f}{0.2:>10.3f}")
    atomic_write_json(out / "results.json", {"pretrain_seconds": pretrain_seconds, "corpus_texts": len(corpus), "rows": rows})
    return rows
