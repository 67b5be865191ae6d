"""mtransfer.speech.ctc: greedy decoding, edit counts and error rates."""

import jiwer
import pytest
import torch

from mtransfer.speech.ctc import collapse, edit_counts, error_rates, greedy_ids
from mtransfer.speech.vocabulary import Vocabulary


def test_greedy_decoding_of_hand_made_logits():
    vocab = Vocabulary(["[PAD]", "[UNK]", "|", "a", "b", "c"])
    # frames: a a _ a | b b _ c | (then padding the mask cuts off)
    frames = [3, 3, 0, 3, 2, 4, 4, 0, 5, 2, 5, 5]
    logits = torch.full((2, len(frames), 6), -5.0)
    for t, k in enumerate(frames):
        logits[0, t, k] = 5.0
        logits[1, t, [5, 0][t % 2]] = 5.0
    mask = torch.ones(2, len(frames), dtype=torch.long)
    mask[0, 10:] = 0
    mask[1, 5:] = 0
    ids = greedy_ids(logits, mask)
    assert ids[0] == frames[:10] and len(ids[1]) == 5
    assert collapse(ids[0]) == [3, 3, 2, 4, 5, 2]
    assert vocab.decode(ids[0]) == "aa bc"  # repeats merged, blanks dropped, the delimiter a space, ends stripped
    assert vocab.decode(ids[1]) == "ccc"  # c _ c _ c: blanks separate repeats
    assert vocab.decode([2, 3, 0, 2, 2, 4]) == "a b"


def test_error_rates_equal_jiwer_and_the_shipped_evaluate_modules():
    from mtransfer.metrics import load_metric

    refs = ["the cat sat on the mat", "a b c d", "hello world", "speech recognition"]
    hyps = ["the cat sit on mat", "a c d e", "helo wrld", "speech wreck a nice beach"]
    rates = error_rates(edit_counts(refs, hyps))
    assert rates["wer"] == pytest.approx(jiwer.wer(refs, hyps))
    assert rates["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    assert load_metric("wer").compute(predictions=hyps, references=refs)["wer"] == pytest.approx(jiwer.wer(refs, hyps))
    assert load_metric("cer").compute(predictions=hyps, references=refs)["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    # counts gathered from two shards give the rates of all utterances at once
    halves = edit_counts(refs[:2], hyps[:2]), edit_counts(refs[2:], hyps[2:])
    assert error_rates(torch.cat([torch.as_tensor(h) for h in halves]).numpy()) == rates
    # phone error rate over units
    per = error_rates(edit_counts(["ab"], ["ac"], [["tʃ", "aː"]], [["tʃ", "a"]]), "phones")
    assert per["per"] == 0.5
