"""Length-grouped training batches (``TrainingArguments.group_by_length``, on for CTC by default)."""

import numpy as np
import pytest
import torch

import mtransfer as mt
from mtransfer.data import LengthGroupedBatchSampler, random_padding_fraction
from mtransfer.record import RunRecord
from tests.test_speech import TEXTS, clip


def clip_lengths(n=200, seed=0):
    """Utterance lengths like a read-speech corpus's: 1-6 s at 16 kHz, log-normal."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(2.5 * 16000), 0.45, n), 16000, 6 * 16000).astype(int).tolist()


def test_each_epoch_takes_every_example_once_in_batches_of_similar_length():
    lengths = clip_lengths()
    sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(i for b in batches for i in b) == list(range(200))
        assert [len(b) for b in batches] == [8] * 25
        for b in batches:  # jitter 0.1: a batch's lengths are within about 20% of each other
            spread = max(lengths[i] for i in b) / min(lengths[i] for i in b)
            assert spread < 1.5, [lengths[i] for i in b]
    grouped, shuffled = sampler.padding_fraction(), random_padding_fraction(lengths, 8, seed=3)
    assert grouped < 0.1 and shuffled > 0.3, (grouped, shuffled)  # 8% against 38%


def test_the_batches_change_from_epoch_to_epoch_and_repeat_for_the_same_seed_and_epoch():
    lengths = clip_lengths()

    def batches(seed, epoch):
        sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(0, 1) == batches(0, 1)
    first, second = {frozenset(b) for b in batches(0, 0)}, {frozenset(b) for b in batches(0, 1)}
    assert len(first & second) < 10  # the make-up changes, not only the order
    assert batches(0, 0) != batches(1, 0)


def test_a_short_batch_comes_last_so_that_data_parallel_shards_stay_whole():
    from accelerate.data_loader import BatchSamplerShard

    lengths = clip_lengths(n=43)
    sampler = LengthGroupedBatchSampler(lengths, batch_size=4, seed=0)
    batches = list(sampler)
    assert [len(b) for b in batches] == [4] * 10 + [3] and len(sampler) == 11
    shards = [list(BatchSamplerShard(sampler, num_processes=2, process_index=k)) for k in (0, 1)]
    assert [len(s) for s in shards] == [6, 6] and all(len(b) == 4 for s in shards for b in s)
    seen = [i for s in shards for b in s for i in b]
    assert set(seen) == set(range(43))  # accelerate completes the last round with the first examples


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="expected batch_size, group_batches and num_processes >= 1"):
        LengthGroupedBatchSampler([1, 2], batch_size=0, seed=0)
    with pytest.raises(ValueError, match="group_by_length"):
        mt.TrainingArguments(group_by_length="yes")


def test_ctc_runs_group_by_length_by_default_and_record_the_padding_saved(tiny_speech, tmp_path):
    rows = [{"audio": clip(i % 6, seconds=0.5 + 0.25 * i), "text": TEXTS[i % 6]} for i in range(12)]
    train = mt.load_labeled(rows, input_column="audio", label_column="text", task="ctc")
    records = {}
    for name, group in (("auto", None), ("off", False)):
        model = mt.TransferModel.from_backbone("audio", tiny_speech("wav2vec2"), labels=train.vocabulary, task="ctc",
                                               seed=0)
        args = mt.TrainingArguments(output_dir=str(tmp_path / name), num_epochs=1, batch_size=4, seed=0, report_to=[],
                                    plot=False, progress_bar=False, save_checkpoints="none", show_transcripts=False,
                                    group_by_length=group)
        records[name] = RunRecord.load(mt.Trainer(model, args, train).train().metrics_path)
    auto = records["auto"].batching
    assert auto["group_by_length"] is True and auto["padding"] < auto["padding_random_batches"]
    assert records["off"].batching == {"group_by_length": False}


def test_text_classification_groups_only_when_asked(tiny_bert, topic_data, tmp_path):
    train = mt.load_labeled(topic_data[0])
    out = {}
    for name, group in (("default", None), ("asked", True)):
        model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0)
        args = mt.TrainingArguments(output_dir=str(tmp_path / name), num_epochs=1, batch_size=4, seed=0, report_to=[],
                                    plot=False, progress_bar=False, save_checkpoints="none", group_by_length=group,
                                    cache_features=False)
        out[name] = RunRecord.load(mt.Trainer(model, args, train).train().metrics_path).batching
    assert out["default"] == {"group_by_length": False}
    assert out["asked"]["group_by_length"] is True
    tokens = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names).adapter.input_lengths(
        ["one two three", "one"])
    assert tokens[0] > tokens[1] >= 3  # [CLS] ... [SEP]


def test_evaluation_in_length_order_scores_as_evaluation_in_dataset_order(tiny_speech, tmp_path):
    rows = [{"audio": clip(i % 6, seconds=0.5 + 0.3 * ((5 * i) % 7)), "text": TEXTS[i % 6]} for i in range(10)]
    data = mt.load_labeled(rows, input_column="audio", label_column="text", task="ctc")
    model = mt.TransferModel.from_backbone("audio", tiny_speech("wav2vec2"), labels=data.vocabulary, task="ctc", seed=0)
    scores = {}
    for group in (True, False):
        args = mt.TrainingArguments(output_dir=str(tmp_path / str(group)), eval_batch_size=4, report_to=[],
                                    progress_bar=False, show_transcripts=False, group_by_length=group)
        trainer = mt.Trainer(model, args)
        scores[group] = trainer.evaluate(data)
        if group:
            (loader,) = [trainer._eval_batching(data)["batch_sampler"]]
            lengths = [int(x) for x in model.adapter.input_lengths(data.inputs)]
            firsts = [lengths[b[0]] for b in loader]
            assert firsts == sorted(firsts, reverse=True)
    assert scores[True]["eval_cer"] == scores[False]["eval_cer"]
    assert scores[True]["eval_wer"] == scores[False]["eval_wer"]
    assert scores[True]["eval_loss"] == pytest.approx(scores[False]["eval_loss"], rel=1e-5)


def test_data_parallel_processes_train_on_the_global_batches_of_one_process():
    from accelerate.data_loader import BatchSamplerShard

    lengths = clip_lengths(n=40)
    one = LengthGroupedBatchSampler(lengths, batch_size=8, seed=5)
    shards = [list(BatchSamplerShard(LengthGroupedBatchSampler(lengths, batch_size=4, seed=5, num_processes=2),
                                     num_processes=2, process_index=k)) for k in (0, 1)]
    assert [sorted(a + b) for a, b in zip(*shards)] == [sorted(b) for b in one]
