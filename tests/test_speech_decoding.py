"""mtransfer.speech.decoding: CTC beam search with an optional KenLM n-gram."""

import pytest
import torch

from mtransfer.speech.ctc import greedy_ids
from mtransfer.speech.vocabulary import Vocabulary


def _peaked(frames, size, ambiguous=None):
    """Log-probability-like logits: one symbol per frame; ``ambiguous`` maps a frame to {symbol: probability}."""
    logits = torch.full((1, len(frames), size), -12.0)
    for t, k in enumerate(frames):
        for sym, p in ((ambiguous or {}).get(t) or {k: 0.98}).items():
            logits[0, t, sym] = float(torch.tensor(p).log())
    return logits


def test_beam_search_without_a_language_model_agrees_with_greedy():
    from mtransfer.speech.decoding import BeamSearchDecoder

    vocab = Vocabulary(["[PAD]", "[UNK]", "|", "a", "b", "c"])
    frames = [3, 3, 0, 3, 2, 4, 4, 0, 5, 2, 1, 5, 5]
    logits = _peaked(frames, len(vocab))
    mask = torch.ones(1, len(frames), dtype=torch.long)
    mask[0, 11:] = 0
    greedy = vocab.decode(greedy_ids(logits, mask)[0])
    for width in (1, 16):
        assert BeamSearchDecoder(vocab, beam_width=width).decode(logits, mask) == [greedy] == ["aa bc [UNK]"]
    with pytest.raises(ValueError, match="beam_width=0"):
        BeamSearchDecoder(vocab, beam_width=0)
    with pytest.raises(FileNotFoundError, match="no-such.arpa: no such KenLM file"):
        BeamSearchDecoder(vocab, lm="no-such.arpa")


def test_a_word_language_model_moves_the_beam_to_a_known_word(tmp_path):
    """Greedy reads 'adc' (d at 0.55 against b at 0.45); a unigram model that knows 'abc' (and not 'adc') makes the
    beam choose 'abc', and a weight of 0 gives the acoustic choice back."""
    pytest.importorskip("kenlm")
    from mtransfer.speech.decoding import BeamSearchDecoder

    vocab = Vocabulary(["[PAD]", "[UNK]", "|", "a", "b", "c", "d"])
    arpa = tmp_path / "words.arpa"
    arpa.write_text("\\data\\\nngram 1=4\nngram 2=2\n\n\\1-grams:\n-99\t<s>\t-0.3\n-0.5\t</s>\n-5.0\t<unk>\n"
                    "-0.2\tabc\t-0.3\n\n\\2-grams:\n-0.1\t<s> abc\n-0.1\tabc </s>\n\n\\end\\\n")
    logits = _peaked([3, 0, 4, 0, 5], len(vocab), ambiguous={2: {4: 0.45, 6: 0.55}})
    assert vocab.decode(greedy_ids(logits)[0]) == "adc"
    assert BeamSearchDecoder(vocab, beam_width=8, lm=arpa, alpha=1.0, beta=0.0).decode(logits) == ["abc"]
    assert BeamSearchDecoder(vocab, beam_width=8, lm=arpa, alpha=0.0, beta=0.0).decode(logits) == ["adc"]


def test_beam_decoded_phones_go_back_to_units_for_the_phone_error_rate():
    from mtransfer.speech.decoding import BeamSearchDecoder

    vocab = Vocabulary(["[PAD]", "[UNK]", "|", "t", "tʃ", "a", "aː"], kind="phones", language="hi")
    assert BeamSearchDecoder(vocab).units("tʃaː ta") == ["tʃ", "aː", "|", "t", "a"]
