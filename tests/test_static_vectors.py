import numpy as np
import pytest
import torch
from gensim.models import FastText, KeyedVectors, Word2Vec
from gensim.test.utils import datapath

import mtransfer as mt
from mtransfer.adapters.static_vectors import StaticVectorsAdapter, detect_format, load_vectors

GLOVE = datapath("test_glove.txt")  # real GloVe rows shipped with gensim


@pytest.fixture(scope="module")
def sentences():
    from gensim.test.utils import common_texts

    return [list(s) for s in common_texts] * 20


def test_real_glove_file_equals_gensims_own_reader_and_is_memory_mapped_after_conversion():
    ref = KeyedVectors.load_word2vec_format(GLOVE, binary=False, no_header=True)
    assert detect_format(__import__("pathlib").Path(GLOVE)) == "glove"
    first = load_vectors(GLOVE)
    second = load_vectors(GLOVE)  # the native copy
    assert isinstance(second.vectors, np.memmap)
    for kv in (first, second):
        assert kv.index_to_key == ref.index_to_key
        assert np.array_equal(np.asarray(kv.vectors), ref.vectors)


@pytest.mark.parametrize("binary", [True, False])
def test_word2vec_binary_and_text_round_trip(binary, sentences, tmp_path):
    model = Word2Vec(sentences, vector_size=16, min_count=1, seed=0, workers=1)
    path = tmp_path / ("v.bin" if binary else "v.txt")
    model.wv.save_word2vec_format(str(path), binary=binary)
    assert detect_format(path) == ("word2vec_binary" if binary else "word2vec")
    kv = load_vectors(path)
    assert kv.index_to_key == model.wv.index_to_key
    assert np.allclose(np.asarray(kv.vectors), model.wv.vectors, atol=0 if binary else 1e-6)


def test_fasttext_oov_words_get_nonzero_subword_vectors(sentences, tmp_path):
    from gensim.models.fasttext import save_facebook_model

    model = FastText(sentences, vector_size=16, min_count=1, seed=0, workers=1, min_n=2, max_n=4, bucket=5000)
    path = tmp_path / "ft.bin"
    save_facebook_model(model, str(path))
    assert detect_format(path) == "fasttext"
    adapter = StaticVectorsAdapter(path, vocab_texts=["human interfaces computers", "graphs"], oov="subword",
                                   vocab_budget=0, lowercase=True)
    assert "interfaces" not in model.wv.key_to_index and "interfaces" in adapter.vocabulary
    row = adapter.embedding.weight[adapter.index["interfaces"]]
    assert row.abs().sum() > 0
    assert torch.allclose(row, torch.from_numpy(model.wv["interfaces"]), atol=1e-5)
    with pytest.raises(ValueError, match="oov='subword' needs fastText vectors"):
        StaticVectorsAdapter(GLOVE, vocab_texts=["zzqx"], oov="subword")


def test_vocabulary_is_restricted_to_training_words_plus_budget():
    adapter = StaticVectorsAdapter(GLOVE, vocab_texts=["The é ö words", "zzqx ü"], vocab_budget=3)
    kv = load_vectors(GLOVE)
    assert adapter.lowercase  # GloVe is lower-cased
    assert adapter.vocabulary[:2] == ["[PAD]", "[UNK]"]
    in_texts = [w for w in ["the", "é", "ö", "ü"] if w in kv.key_to_index]
    assert set(in_texts) <= set(adapter.vocabulary)
    assert len(adapter.vocabulary) <= 2 + len(in_texts) + 3
    assert "zzqx" not in adapter.vocabulary  # oov='zero': shares [UNK]
    assert torch.equal(adapter.embedding.weight[adapter.index["the"]], torch.from_numpy(kv["the"].copy()))
    ids = adapter.preprocess(["zzqx the"])["input_ids"][0].tolist()
    assert ids == [1, adapter.index["the"]]


def test_random_oov_and_unicode_tokens():
    adapter = StaticVectorsAdapter(GLOVE, vocab_texts=["zzqx हु"], oov="random", vocab_budget=0)
    assert adapter.tokenize("zzqx हु, don't") == ["zzqx", "हु", ",", "don't"]
    assert adapter.embedding.weight[adapter.index["zzqx"]].abs().sum() > 0


@pytest.mark.parametrize("pooling", ["mean", "max", "mean_max", "sif"])
def test_pooling_modes(pooling):
    adapter = StaticVectorsAdapter(GLOVE, vocab_texts=["the the é", "ö"], pooling=pooling, vocab_budget=0)
    batch = adapter.preprocess(["the é", "ö"])
    pooled = adapter.forward_features(batch).pooled
    e = adapter.embedding.weight.detach()
    the, eh, oh = (e[adapter.index[w]] for w in ("the", "é", "ö"))
    if pooling == "mean":
        assert torch.allclose(pooled[0], (the + eh) / 2) and torch.allclose(pooled[1], oh)
    elif pooling == "max":
        assert torch.allclose(pooled[0], torch.maximum(the, eh))
    elif pooling == "mean_max":
        assert pooled.shape[1] == 2 * e.shape[1] and adapter.embedding_dim == 100
    else:  # frequent words weigh less: 'the' (2 of 4 tokens) < 'é' (1 of 4)
        w_the, w_e = 1e-3 / (1e-3 + 0.5), 1e-3 / (1e-3 + 0.25)
        assert torch.allclose(pooled[0], (w_the * the + w_e * eh) / (w_the + w_e), atol=1e-6)


@pytest.mark.parametrize("encoder", [None, "cnn", "bilstm"])
def test_trains_under_strategies_and_round_trips(encoder, topic_data, tmp_path):
    import random

    # real GloVe rows for a few words; topic words are OOV and get random vectors
    train = mt.load_labeled(topic_data[0])
    val = mt.load_labeled(topic_data[1], label_names=train.label_names)
    model = mt.TransferModel.from_backbone("static_vectors", GLOVE, labels=train.label_names, seed=0,
                                           vocab_texts=train.inputs, oov="random", encoder=encoder, encoder_dim=24)
    groups = [g.name for g in model.layer_groups()]
    assert groups == ["embeddings", "head"]
    before = model.adapter.embedding.weight.detach().clone()
    args = mt.TrainingArguments(output_dir=str(tmp_path / "o"), strategy="two_stage", num_epochs=3, head_epochs=1,
                                learning_rate=5e-2, batch_size=16, progress_bar=False, report_to=[], plot=False,
                                save_checkpoints=False, cache_dir=str(tmp_path / "c"))
    rec = []

    class Watch(mt.TrainerCallback):
        def on_epoch_end(self, trainer, epoch, record):
            rec.append(model.adapter.embedding.weight.detach().clone())

    res = mt.Trainer(model, args, train, val, callbacks=[Watch()]).train()
    assert torch.equal(rec[0], before)  # stage 1: embeddings frozen
    assert not torch.equal(rec[-1], before)  # stage 2: fine-tuned
    assert res.final_metrics["eval_accuracy"] > 0.6
    loaded = mt.TransferModel.from_pretrained(res.model_dir)
    assert loaded.adapter.vocabulary == model.adapter.vocabulary
    assert torch.equal(loaded.predict_outputs(val.inputs), model.predict_outputs(val.inputs))
    del random


def test_the_model_seed_draws_the_head_and_the_adapter_seed_the_encoder(topic_data):
    # reproduced on main: the encoder's own seeding reset torch inside from_backbone, so every model seed
    # drew the same head
    train = mt.load_labeled(topic_data[0])

    def build(seed):
        return mt.TransferModel.from_backbone("static_vectors", GLOVE, labels=train.label_names, seed=seed,
                                              vocab_texts=train.inputs, encoder="cnn", encoder_dim=8)

    first, second = build(0), build(1)
    assert torch.equal(first.adapter.encoder.net.weight, second.adapter.encoder.net.weight)
    assert not torch.equal(first.head.out.weight, second.head.out.weight)
    assert torch.equal(build(0).head.out.weight, first.head.out.weight)


def test_encoder_trains_with_the_head_and_disables_feature_caching(topic_data, tmp_path):
    train = mt.load_labeled(topic_data[0])
    model = mt.TransferModel.from_backbone("static_vectors", GLOVE, labels=train.label_names, seed=0,
                                           vocab_texts=train.inputs, oov="random", encoder="cnn", encoder_dim=8)
    enc_before = model.adapter.encoder.net.weight.detach().clone()
    args = mt.TrainingArguments(output_dir=str(tmp_path / "o"), strategy="frozen", num_epochs=1, learning_rate=1e-2,
                                progress_bar=False, report_to=[], plot=False, save_checkpoints=False,
                                cache_dir=str(tmp_path / "c"))
    trainer = mt.Trainer(model, args, train)
    trainer.train()
    assert not torch.equal(model.adapter.encoder.net.weight, enc_before)
    assert trainer.feature_cache is None


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_vectors(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("2 3\nword 0.1 x\n")
    with pytest.raises(ValueError, match=r"bad.txt: cannot read it as word2vec vectors"):
        load_vectors(bad)
    with pytest.raises(ValueError, match="pooling='attention'"):
        StaticVectorsAdapter(GLOVE, pooling="attention")


class _RunsCode:
    """What a crafted pickle does: calls a function of the attacker's choice when it is loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_kv_file_is_refused_without_an_opt_in_and_the_cache_holds_no_pickle(sentences, tmp_path, capsys):
    """On the earlier main, a crafted .kv file ran code through `mtransfer train --modality static_vectors`, and the
    cache's converted copies were pickles too."""
    import pickle

    from mtransfer.cli import main

    marker = tmp_path / "ran.marker"
    (tmp_path / "evil.kv").write_bytes(pickle.dumps(_RunsCode(str(marker))))
    with pytest.raises(ValueError) as err:
        load_vectors(tmp_path / "evil.kv")
    assert str(err.value).startswith(f"{tmp_path / 'evil.kv'}: a gensim .kv file is a Python pickle, and loading one "
                                     "runs whatever code it holds. Pass allow_pickle=True (--adapter allow_pickle=true)")
    (tmp_path / "train.csv").write_text("text,label\nthe cat,a\nthe dog,b\n")
    assert main(["train", "--modality", "static_vectors", "--model", str(tmp_path / "evil.kv"), "--train",
                 str(tmp_path / "train.csv"), "--output-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "a gensim .kv file is a Python pickle" in capsys.readouterr().err
    assert not marker.exists()
    # a .kv file of one's own, with the opt-in; its converted copy (like every other) is .npy and JSON only
    model = Word2Vec(sentences, vector_size=8, min_count=1, seed=0, workers=1)
    model.wv.save(str(tmp_path / "own.kv"))
    kv = load_vectors(tmp_path / "own.kv", allow_pickle=True)
    assert kv.index_to_key == model.wv.index_to_key and isinstance(kv.vectors, np.memmap)
    from mtransfer.adapters.static_vectors import _native_dir

    native = _native_dir(tmp_path / "own.kv", "kv")
    assert sorted(p.name for p in native.iterdir()) == ["keys.json", "vectors.json", "vectors.npy"]
    with open(native / "vectors.npy", "rb") as fh:
        assert fh.read(6) == b"\x93NUMPY"
    # the next load reads the converted copy (no pickle read)
    assert load_vectors(tmp_path / "own.kv", allow_pickle=True).index_to_key == model.wv.index_to_key
