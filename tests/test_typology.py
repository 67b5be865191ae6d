"""URIEL typological similarity (lang2vec's data read offline) as a source ranker."""

import numpy as np
import pytest

from mtransfer.ranking.typology import uriel_similarity, uriel_vector


def test_uriel_puts_bengali_closest_to_assamese_and_spanish_to_italian():
    scores = uriel_similarity(["bn", "hi", "tr", "ru", "de", "es"], ["as", "it"])
    assert max(scores["as"], key=scores["as"].get) == "bn" and max(scores["it"], key=scores["it"].get) == "es"
    assert scores["as"]["bn"] == pytest.approx(0.8455, abs=1e-4)  # lang2vec 1.1.2's own cosine of these vectors
    assert np.array_equal(uriel_vector("as"), uriel_vector("asm")) and uriel_vector("bn").shape == (289,)


def test_an_unknown_language_is_named():
    with pytest.raises(ValueError, match=r"URIEL has no language 'xx' \(looked up as 'xx'\)"):
        uriel_similarity(["bn"], ["xx"])
