"""Partial-network cache: phases that train the top of a backbone read the frozen lower part's output from the cache.

The equality tests run the same last-2 training with the cache and with recomputing: per-epoch losses agree to
1e-5 (relative, for CTC's larger losses), for a text encoder, a ViT and a CTC speech encoder; the cached run's frozen
blocks run for the check, the extraction and the final evaluation, never in an epoch.
"""

import json

import numpy as np
import pytest
import torch

import mtransfer as mt
from mtransfer.partial_cache import check_replay, split_block
from mtransfer.record import RunRecord
from tests.test_speech import TEXTS, clip
from tests.tiny import build_tiny_bert, build_tiny_speech, extraction_texts


def count_block_runs(block):
    """Count the real runs of ``block`` (an instance-level forward: skipped blocks do not count)."""
    calls = {"n": 0}
    original = block.forward

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    block.forward = counting
    return calls


def train_twice(build, train, val, tmp_path, **settings):
    """The same run with the partial cache and with recomputing: (cached result, its trainer, recomputed result,
    lowest block runs cached, lowest block runs recomputed)."""
    out = []
    for name, gb in (("cached", 8.0), ("recomputed", 0)):
        model = build()
        runs = count_block_runs(model.adapter.blocks()[0])
        args = mt.TrainingArguments(output_dir=str(tmp_path / name), seed=0, progress_bar=False, report_to=[],
                                    plot=False, save_checkpoints="none", cache_dir=str(tmp_path / "cache"),
                                    partial_cache_gb=gb, **settings)
        trainer = mt.Trainer(model, args, train, val)
        out.append((trainer.train(), trainer, runs["n"]))
    (cached, trainer, cached_runs), (recomputed, _, recomputed_runs) = out
    return cached, trainer, recomputed, cached_runs, recomputed_runs


def assert_same_epochs(a, b, keys=("train_loss", "eval_loss")):
    assert len(a.history) == len(b.history)
    for x, y in zip(a.history, b.history):
        for k in keys:
            assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-5), (k, x, y)


@pytest.fixture(scope="module")
def bert4(tmp_path_factory):
    """A tiny BERT with 4 blocks and dropout 0.1 (the blocks that train keep theirs)."""
    return build_tiny_bert(tmp_path_factory.mktemp("bert4"), num_layers=4, dropout=0.1)


def test_last_two_text_blocks_train_on_the_cached_input_with_the_losses_of_recomputing(bert4, topic_data, tmp_path):
    train = mt.load_labeled(topic_data[0])
    val = mt.load_labeled(topic_data[1], label_names=train.label_names)

    def build():
        return mt.TransferModel.from_backbone("text", bert4, labels=train.label_names, seed=0)

    cached, trainer, recomputed, cached_runs, recomputed_runs = train_twice(
        build, train, val, tmp_path, strategy="last_n", last_n=2, num_epochs=3, learning_rate=3e-3, batch_size=16,
        eval_batch_size=32)
    assert_same_epochs(cached, recomputed)
    assert cached.final_metrics["eval_loss"] == pytest.approx(recomputed.final_metrics["eval_loss"], abs=1e-5)
    assert cached.history[-1]["train_loss"] < cached.history[0]["train_loss"]
    record = RunRecord.load(cached.metrics_path)
    assert record.partial_cache == [{"phase": "top 2 + head", "block": 2, "group": "layer.2",
                                     "megabytes": record.partial_cache[0]["megabytes"]}]
    assert record.partial_cache[0]["megabytes"] > 0
    assert RunRecord.load(recomputed.metrics_path).partial_cache[0]["recomputed"] == "partial_cache_gb=0"
    # the lowest block ran for the check, the extraction (train + eval) and the final evaluation, never in an epoch
    batches = lambda n, size: -(-n // size)  # noqa: E731
    epochs_of_recomputing = 3 * (batches(len(train), 16) + batches(len(val), 32))
    assert recomputed_runs >= epochs_of_recomputing
    assert cached_runs <= 2 + batches(len(train), 32) + 2 * batches(len(val), 32)
    # the entry holds each text's real tokens (the input of block 2) and is read again by the next run
    cache = trainer._feature_cache()
    hits = cache.hits
    entry = cache.features(trainer.unwrapped.adapter, train.inputs, block=2)
    assert cache.hits == hits + 1
    hidden, mask = entry.frame_rows([0, 1])
    tokens = trainer.unwrapped.adapter.preprocess(train.inputs[:2])["attention_mask"].sum(1)
    assert mask.sum(1).tolist() == tokens.tolist()


def test_a_gradual_unfreezing_run_caches_below_each_phases_lowest_block(bert4, topic_data, tmp_path):
    train = mt.load_labeled(topic_data[0])
    val = mt.load_labeled(topic_data[1], label_names=train.label_names)

    def build():
        return mt.TransferModel.from_backbone("text", bert4, labels=train.label_names, seed=0)

    cached, _, recomputed, _, _ = train_twice(
        build, train, val, tmp_path, strategy="gradual_unfreezing", num_epochs=4, unfreeze_every=1,
        learning_rate=3e-3, head_learning_rate=1e-2, batch_size=16)
    assert_same_epochs(cached, recomputed)
    blocks = [n["block"] for n in RunRecord.load(cached.metrics_path).partial_cache]
    assert blocks == [3, 2, 1]  # the phases that train the top 1, 2 and 3 blocks


def test_last_two_vit_blocks_train_on_the_cached_patch_states(tiny_vision, tmp_path):
    from tests.tiny import shape_images

    train = mt.load_labeled(shape_images(8, size=32, seed=0), input_column="image")
    val = mt.load_labeled(shape_images(4, size=32, seed=1), input_column="image", label_names=train.label_names)

    def build(augmentation=None):
        return mt.TransferModel.from_backbone("image", tiny_vision("vit"), labels=train.label_names, seed=0,
                                              augmentation=augmentation)

    assert build(True).adapter.random_below_blocks() == "training images are augmented"  # the default: recomputed
    model = build()
    assert [g.name for g in model.layer_groups()][-3:] == ["layer.1", "top", "head"]
    cached, _, recomputed, cached_runs, recomputed_runs = train_twice(
        build, train, val, tmp_path, strategy="last_n", last_n=2, num_epochs=3, learning_rate=3e-3, batch_size=8)
    assert_same_epochs(cached, recomputed)
    assert RunRecord.load(cached.metrics_path).partial_cache[0]["block"] == 1
    assert cached_runs < recomputed_runs


def test_last_two_ctc_encoder_blocks_train_on_cached_frames(tmp_path):
    folder = build_tiny_speech_without_spec_augment(tmp_path / "w2v", layers=3)
    train = mt.load_labeled([{"audio": clip(i), "text": t} for i, t in enumerate(TEXTS)], input_column="audio",
                            label_column="text", task="ctc")
    val = mt.load_labeled([{"audio": clip(i + 6), "text": t} for i, t in enumerate(TEXTS[:4])], input_column="audio",
                          label_column="text", task="ctc", vocabulary=train.vocabulary)

    def build():
        return mt.TransferModel.from_backbone("audio", folder, labels=train.vocabulary, task="ctc", seed=0)

    cached, _, recomputed, cached_runs, recomputed_runs = train_twice(
        build, train, val, tmp_path, strategy="last_n", last_n=2, num_epochs=3, learning_rate=3e-3, batch_size=4,
        eval_batch_size=4, show_transcripts=False)
    assert_same_epochs(cached, recomputed, keys=("train_loss", "eval_loss", "eval_cer"))
    assert RunRecord.load(cached.metrics_path).partial_cache[0] | {"megabytes": 0} == {
        "phase": "top 2 + head", "block": 2, "group": "layer.2", "megabytes": 0}
    assert cached_runs < recomputed_runs


def build_tiny_speech_without_spec_augment(folder, layers: int):
    """The tiny wav2vec2 of the tests with ``layers`` blocks and SpecAugment off (mask_time_prob=0)."""
    from transformers import AutoConfig, AutoModel

    build_tiny_speech("wav2vec2", folder)
    config = AutoConfig.from_pretrained(folder)
    config.num_hidden_layers, config.mask_time_prob = layers, 0.0
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    return folder


def test_the_phase_recomputes_and_says_why_where_the_cache_would_not_be_exact(tiny_speech, bert4, topic_data,
                                                                              tmp_path, capsys):
    train = mt.load_labeled(topic_data[0][:24])
    args = dict(strategy="last_n", num_epochs=1, batch_size=16, progress_bar=False, report_to=[], plot=False,
                save_checkpoints="none", cache_dir=str(tmp_path / "cache"))
    # over the budget (estimated from one batch)
    model = mt.TransferModel.from_backbone("text", bert4, labels=train.label_names, seed=0)
    mt.Trainer(model, mt.TrainingArguments(output_dir=str(tmp_path / "a"), last_n=1, partial_cache_gb=1e-9, **args), train).train()
    assert "the frozen blocks below layer.3 run every epoch: its estimated 0.0 GB exceed partial_cache_gb=1e-09" \
        in capsys.readouterr().out
    # SpecAugment below the blocks: the cache would drop it
    ctc = mt.load_labeled([{"audio": clip(i), "text": t} for i, t in enumerate(TEXTS)], input_column="audio",
                          label_column="text", task="ctc")
    model = mt.TransferModel.from_backbone("audio", tiny_speech("wav2vec2"), labels=ctc.vocabulary, task="ctc", seed=0)
    mt.Trainer(model, mt.TrainingArguments(output_dir=str(tmp_path / "b"), last_n=2, show_transcripts=False, **args), ctc).train()
    assert "SpecAugment masks the encoder's input in training" in capsys.readouterr().out


def test_the_replay_check_refuses_architectures_whose_blocks_pass_more_than_hidden_states(tiny_speech, tiny_vision):
    from mtransfer.adapters.base import build_adapter

    wavlm = build_adapter("audio", tiny_speech("wavlm"))  # layer 0 computes the position bias every layer reads
    batch = wavlm.preprocess([clip(0), clip(3)])
    why, _ = check_replay(wavlm, batch, 1)
    assert why.startswith("replaying from block 1 failed")
    convnext = build_adapter("image", tiny_vision("convnext"))  # stages change the feature map's shape
    images = [np.full((32, 32, 3), 90, dtype=np.uint8), np.zeros((32, 32, 3), dtype=np.uint8)]
    why, _ = check_replay(convnext, convnext.preprocess(images), 1)
    assert "cannot be cached" in why
    text = build_adapter("text", build_tiny_bert_path())
    why, per_row = check_replay(text, text.preprocess(extraction_texts(6)), 1)
    assert why is None and per_row > 0


def build_tiny_bert_path():
    import tempfile
    from pathlib import Path

    return build_tiny_bert(Path(tempfile.mkdtemp()), num_layers=2)


def test_the_split_is_the_lowest_trainable_block_above_the_first(bert4):
    model = mt.TransferModel.from_backbone("text", bert4, labels=["a", "b"], seed=0)
    groups = model.layer_groups()
    names = [g.name for g in groups]
    assert names == ["embeddings", "layer.0", "layer.1", "layer.2", "layer.3", "head"]
    at = lambda *n: frozenset(names.index(x) for x in n)  # noqa: E731
    assert split_block(model.adapter, groups, at("layer.2", "layer.3", "head")) == 2
    assert split_block(model.adapter, groups, at("layer.1", "head")) == 1  # chain-thaw: one block alone
    assert split_block(model.adapter, groups, at("layer.0", "layer.1", "layer.2", "layer.3", "head")) is None
    assert split_block(model.adapter, groups, frozenset(range(len(names)))) is None
    assert split_block(model.adapter, groups, at("head")) is None  # head-only: the pooled-feature cache


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_extract_their_shards_once_and_train_as_recomputing(tiny_bert, tmp_path):
    """Under `accelerate launch` the main process checks the replay and decides for both; the extraction is shared;
    the losses, metrics and weights equal those of the same 2-process run recomputing the frozen blocks."""
    from tests.test_multiprocess import launch_ranks

    runs = {}
    for name, gb in (("cached", 8), ("recomputed", 0)):
        ranks, _ = launch_ranks("tests/launch_partial.py", tiny_bert, tmp_path / name, gb)
        runs[name] = (ranks, json.loads((tmp_path / name / "metrics.json").read_text()))
    (cached_ranks, cached), (recomputed_ranks, recomputed) = runs["cached"], runs["recomputed"]
    assert cached_ranks[0]["partial_cache"] == cached_ranks[1]["partial_cache"] == cached["partial_cache"]
    assert cached["partial_cache"][0]["block"] == 1 and "recomputed" in recomputed["partial_cache"][0]
    for a, b in zip(cached["history"], recomputed["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-5)
        assert a["eval_samples"] == b["eval_samples"] == 63
    assert cached_ranks[0]["checksum"] == cached_ranks[1]["checksum"]
    assert cached_ranks[0]["checksum"] == pytest.approx(recomputed_ranks[0]["checksum"], rel=1e-6)
