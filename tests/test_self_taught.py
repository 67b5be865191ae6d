"""mtransfer.self_taught: word vectors trained on unlabelled text, and their random twin."""

import numpy as np

from mtransfer.adapters.static_vectors import load_vectors
from mtransfer.self_taught import random_vectors_like, train_word_vectors


def test_trained_vectors_hold_the_corpus_words_and_the_random_twin_the_same_words_at_the_same_scale(tmp_path):
    texts = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"] * 20
    path = train_word_vectors(texts, tmp_path / "w2v.txt", vector_size=8, min_count=2, epochs=3)
    kv = load_vectors(path, convert=False)
    assert {"the", "cat", "dog", "sat"} <= set(kv.index_to_key) and kv.vector_size == 8
    twin = load_vectors(random_vectors_like(path, tmp_path / "random.txt", seed=0), convert=False)
    assert twin.index_to_key == kv.index_to_key
    assert 0.8 < np.std(twin.vectors) / np.std(kv.vectors) < 1.25
    assert not np.allclose(twin.vectors, kv.vectors)
    assert not list(tmp_path.glob(".*"))  # written through a temporary name
