"""mtransfer.speech.vocabulary: characters and espeak-ng phones, normalised and round-tripped."""

import json


from mtransfer.speech.vocabulary import Vocabulary


def test_character_vocabulary_normalises_and_round_trips_through_wav2vec2_tokenizer(tmp_path):
    vocab = Vocabulary.from_texts(["Über Straße, 1!", "über cafe\u0301"])  # NFC: é is one character
    assert vocab.symbols[:3] == ["[PAD]", "[UNK]", "|"] and "é" in vocab.symbols and "," not in vocab.symbols
    tokenizer = vocab.to_tokenizer(tmp_path)
    assert json.loads((tmp_path / "vocab.json").read_text())["[PAD]"] == 0 and tokenizer.pad_token_id == 0
    for text in ["über straße 1", "café über"]:
        ids, unknown = vocab.encode(text)
        assert unknown == 0
        assert tokenizer(text).input_ids == ids
        assert tokenizer.decode(ids, group_tokens=False) == vocab.decode(ids, collapse=False) == text
    ids, unknown = vocab.encode("zoo bar")
    assert unknown == 3 and ids.count(1) == 3  # z, o, o are outside the vocabulary: [UNK], counted


def test_assamese_phones_are_read_as_spoken_not_spelled_out():
    """NFC turns the precomposed YYA back into YA + NUKTA, which the Assamese voice spells out letter by
    letter; the phones must be those of the word the corpus's audio speaks."""
    import unicodedata

    from mtransfer.speech.vocabulary import phonemize

    word = "ছৰ্বি\u09dfান"
    assert unicodedata.normalize("NFC", word) != word  # the decomposed form is what transcripts become
    vocab = Vocabulary.from_texts([word], kind="phones", language="as")
    units = vocab.units_of([word])[0]
    assert units == [p for w in phonemize([word], "as")[0] for p in [*w, "|"]][:-1]
    assert units == ["tʃʰ", "o", "ɾ", "b", "i", "a", "n"]  # not "... antastha ya bindu akar" (40 phones)


def test_phone_vocabulary_from_espeak_shares_one_inventory_and_round_trips(tmp_path):
    hi = Vocabulary.from_texts(["नमस्ते दुनिया"], kind="phones", language="hi")
    units = hi.units_of(["नमस्ते दुनिया"])[0]
    assert "|" in units and all(u and "ˈ" not in u for u in units)
    assert any(len(u) > 1 for u in units)  # phones, not bytes: e.g. aː
    mr = Vocabulary.from_texts(["नमस्कार"], kind="phones", language="mr")
    shared = hi.merged(mr)
    assert shared.symbols[:len(hi)] == hi.symbols and set(mr.symbols) <= set(shared.symbols)
    tokenizer = shared.to_tokenizer(tmp_path)
    ids, unknown = shared.encode("नमस्ते दुनिया")
    assert unknown == 0 and tokenizer.convert_tokens_to_ids(units) == ids
    assert tokenizer.decode(ids) == shared.decode(ids) == "".join(units).replace("|", " ")
