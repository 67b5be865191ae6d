"""Builders for tiny random models and synthetic data used by the tests (and subprocess scripts)."""

from __future__ import annotations

import random
from pathlib import Path

TOPICS = {
    "food": "bread cheese soup apple pasta rice salad cake butter tea".split(),
    "science": "atom energy physics cell gene planet orbit theory data lab".split(),
    "sport": "goal match team ball coach race score player league win".split(),
}
FILLER = "the a of and to in is it that on with this was for".split()


def build_tiny_bert(folder: Path, num_layers: int = 2) -> Path:
    """Write a tiny random BERT and a word-level WordPiece tokenizer to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    words = sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.1)
    torch.manual_seed(0)
    model = BertModel(config)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def topic_examples(rng: random.Random, per_topic: int) -> list[dict]:
    """Sentences mixing filler words with 2-4 words of one topic."""
    rows = []
    for topic, words in TOPICS.items():
        for _ in range(per_topic):
            tokens = rng.sample(FILLER, 4) + rng.sample(words, rng.randint(2, 4))
            rng.shuffle(tokens)
            rows.append({"text": " ".join(tokens), "label": topic})
    rng.shuffle(rows)
    return rows


def extraction_texts(n: int = 50) -> list[str]:
    """Deterministic texts of varied length, for feature-extraction tests."""
    rng = random.Random(7)
    words = [w for ws in TOPICS.values() for w in ws] + FILLER
    return [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(n)]


def build_tiny_sentence_transformer(bert_folder: Path, folder: Path) -> Path:
    """A sentence-transformers model around the tiny BERT: mean pooling, a dense layer, normalisation."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    torch.manual_seed(0)
    transformer = models.Transformer(str(bert_folder), max_seq_length=32)
    modules = [transformer, models.Pooling(32, "mean"), models.Dense(32, 16), models.Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return Path(folder)
