"""The contrastive strategy (SetFit's recipe for every adapter that pools): pairs, the pair loss, the head after."""

import json

import pytest
import torch

import mtransfer as mt
from mtransfer.contrastive import cosine_pair_loss, sample_pairs
from mtransfer.record import RunRecord


def data(topic_data):
    train = mt.load_labeled(topic_data[0])
    return train, mt.load_labeled(topic_data[1], label_names=train.label_names)


def test_pairs_are_half_positive_half_negative_balanced_over_classes_and_seeded():
    labels = torch.tensor([0] * 20 + [1] * 5 + [2] * 2)  # unbalanced on purpose
    pairs, targets = sample_pairs(labels, 3000, seed=3, epoch=1)
    assert pairs.shape == (3000, 2) and int(targets.sum()) == 1500
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    assert torch.equal(same, targets.bool())  # a positive pair shares a class, a negative one never does
    assert (pairs[:, 0] != pairs[:, 1]).all()  # never an example with itself
    anchors = torch.bincount(labels[pairs[targets == 1, 0]], minlength=3).float() / 1500
    assert torch.allclose(anchors, torch.full((3,), 1 / 3), atol=0.05)  # classes, not examples, are drawn uniformly
    negatives = torch.bincount(labels[pairs[targets == 0].flatten()], minlength=3).float() / 3000
    assert torch.allclose(negatives, torch.full((3,), 1 / 3), atol=0.05)
    again = sample_pairs(labels, 3000, seed=3, epoch=1)
    assert torch.equal(again[0], pairs) and torch.equal(again[1], targets)
    assert not torch.equal(sample_pairs(labels, 3000, seed=3, epoch=2)[0], pairs)  # a new draw each epoch
    assert not torch.equal(sample_pairs(labels, 3000, seed=4, epoch=1)[0], pairs)


def test_pairs_need_two_classes_and_a_class_with_two_examples():
    with pytest.raises(ValueError, match="at least two classes"):
        sample_pairs(torch.zeros(5), 10, seed=0)
    with pytest.raises(ValueError, match="a class with at least two examples"):
        sample_pairs(torch.arange(4), 10, seed=0)


def test_the_pair_loss_is_the_squared_error_of_the_cosine_against_the_label():
    pooled = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])  # left: rows 0-1, right: rows 2-3
    assert cosine_pair_loss(pooled, torch.tensor([1.0, 0.0])).item() == pytest.approx(0.0)
    assert cosine_pair_loss(pooled, torch.tensor([0.0, 1.0])).item() == pytest.approx(1.0)


def similarity_gap(model, train):
    """Mean cosine similarity of same-class pairs minus that of different-class pairs, then each, on the training
    texts; centred first (a random encoder's embeddings share one direction: every cosine starts near 1)."""
    model.eval()
    with torch.no_grad():
        pooled = model.adapter.forward_features(model.adapter.preprocess(list(train.inputs))).pooled
    emb = torch.nn.functional.normalize(pooled, dim=-1)
    emb = torch.nn.functional.normalize(emb - emb.mean(0), dim=-1)
    sim = emb @ emb.T
    same = train.targets[:, None] == train.targets[None, :]
    off = ~torch.eye(len(train.targets), dtype=torch.bool)
    return (sim[same & off].mean() - sim[~same].mean()).item(), sim[same & off].mean().item(), sim[~same].mean().item()


def test_one_contrastive_epoch_pulls_classes_together_and_apart_then_fits_the_head(tiny_bert, topic_data, tmp_path):
    train, val = data(topic_data)
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0)
    gap0, same0, diff0 = similarity_gap(model, train)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "run"), strategy="contrastive", num_epochs=1,
                                learning_rate=1e-3, batch_size=16, contrastive_pairs=320, progress_bar=False,
                                report_to=[], plot=False, save_checkpoints="none")
    trainer = mt.Trainer(model, args, train, val)
    result = trainer.train()
    gap1, same1, diff1 = similarity_gap(trainer.model, train)
    assert same1 > same0 and diff1 < diff0 and gap1 > gap0 + 0.05
    assert result.history[0]["phase"] == "contrastive" and "eval_accuracy" not in result.history[0]
    record = RunRecord.load(tmp_path / "run" / "metrics.json")
    assert record.plan[0]["objective"] == "pairs" and "head" not in record.plan[0]["trainable"]
    assert record.linear_head["kind"] == "logistic" and record.linear_head["train_examples"] == len(train)
    # the fitted head is the model's: the final metrics are the saved model's
    saved = mt.TransferModel.from_pretrained(tmp_path / "run" / "model")
    preds = saved.predict(val.inputs)
    accuracy = sum(p == train.label_names[int(t)] for p, t in zip(preds, val.targets)) / len(val)
    assert record.final_eval["eval_accuracy"] == pytest.approx(accuracy)
    assert accuracy > 0.6  # three topics the tuned features separate


def test_the_neural_head_trains_after_the_pairs_and_the_schedule_follows_each_phases_steps(tiny_bert, topic_data, tmp_path):
    train, val = data(topic_data)
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "run"), strategy="contrastive", contrastive_head="neural",
                                num_epochs=3, head_epochs=1, learning_rate=1e-3, batch_size=16, contrastive_pairs=64,
                                lr_schedule="constant", warmup_ratio=0.0, progress_bar=False, report_to=[], plot=False,
                                save_checkpoints="none")
    trainer = mt.Trainer(model, args, train, val)
    result = trainer.train()
    assert [h["phase"] for h in result.history] == ["contrastive", "contrastive", "head + all"]
    assert "eval_accuracy" in result.history[2] and trainer.linear_head is None
    assert trainer.epoch_steps == [4, 4, 9]  # 64 pairs / 16, then 144 examples / 16
    assert result.history[2]["lr"]["head"] == pytest.approx(5e-3)


def test_contrastive_refuses_what_it_cannot_do(tiny_bert, topic_data, tmp_path):
    train, val = data(topic_data)
    common = dict(output_dir=str(tmp_path / "run"), strategy="contrastive", progress_bar=False, report_to=[])
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, head={"hidden_sizes": [8]})
    with pytest.raises(ValueError, match="contrastive_head='logistic' fits a linear head"):
        mt.Trainer(model, mt.TrainingArguments(**common), train, val)
    with pytest.raises(ValueError, match="contrastive_head='nonsense'"):
        mt.TrainingArguments(**common, contrastive_head="nonsense")
    with pytest.raises(ValueError, match="head_epochs=3 must be < num_epochs=3"):
        mt.TrainingArguments(**common, contrastive_head="neural", num_epochs=3, head_epochs=3)


def test_contrastive_export_agrees_with_mtransfer_on_50_inputs(tiny_bert, topic_data, tmp_path):
    from transformers import pipeline

    from mtransfer.export import export_transformers
    from tests.test_export import pipeline_scores

    train, val = data(topic_data)
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0, pooling="mean")
    args = mt.TrainingArguments(output_dir=str(tmp_path / "run"), strategy="contrastive", num_epochs=1,
                                learning_rate=1e-3, contrastive_pairs=64, progress_bar=False, report_to=[], plot=False,
                                save_checkpoints="none")
    trainer = mt.Trainer(model, args, train, val)
    trainer.train()
    folder = export_transformers(trainer.model, tmp_path / "hf")
    texts = [r["text"] for r in topic_data[0][:50]]
    pipe = pipeline("text-classification", model=str(folder), trust_remote_code=True)
    got = pipeline_scores(pipe(texts, top_k=None), trainer.model.label_names)
    assert torch.allclose(got, trainer.model.predict_proba(texts), atol=1e-5)
    assert json.loads((folder / "config.json").read_text())["id2label"]["0"] == trainer.model.label_names[0]


@pytest.mark.multiprocess
def test_two_processes_train_the_pairs_one_process_draws_each_once(tiny_bert, tmp_path):
    import random

    from tests.test_multiprocess import launch_ranks
    from tests.tiny import topic_examples

    out = tmp_path / "ddp"
    ranks, _ = launch_ranks("tests/launch_contrastive.py", tiny_bert, out)
    train = mt.load_labeled(topic_examples(random.Random(0), 16))
    for epoch in (1, 2):
        one_process = sample_pairs(train.targets, 64, seed=42, epoch=epoch - 1)[0].tolist()
        a, b = ranks[0]["seen"][str(epoch)], ranks[1]["seen"][str(epoch)]
        assert len(a) == len(b) == 32  # 8 batches of 8 pairs, 4 on each process
        assert sorted(a + b) == sorted(one_process)  # together, exactly the single-process epoch's pairs
        positions = ranks[0]["positions"][str(epoch)] + ranks[1]["positions"][str(epoch)]
        assert sorted(positions) == list(range(64))  # disjoint shards of the one list
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # one model: gradients synchronised, the same head fitted
    assert ranks[0]["head"] == ranks[1]["head"]
    assert json.loads((out / "metrics.json").read_text())["linear_head"]["kind"] == "logistic"


def test_a_sentence_transformers_backbone_trains_contrastively_and_reloads(tiny_sentence, topic_data, tmp_path):
    train, val = data(topic_data)
    model = mt.TransferModel.from_backbone("sentence", tiny_sentence, labels=train.label_names, seed=0, max_length=20)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "o"), strategy="contrastive", num_epochs=1, learning_rate=1e-3,
                                contrastive_pairs=96, progress_bar=False, report_to=[], plot=False, save_checkpoints=False)
    result = mt.Trainer(model, args, train, val).train()
    assert result.final_metrics["eval_samples"] == 63 and result.final_metrics["eval_accuracy"] > 0.5
    loaded = mt.TransferModel.from_pretrained(result.model_dir)
    assert torch.equal(loaded.predict_outputs(val.inputs), model.predict_outputs(val.inputs))


def test_contrastive_through_the_cli_with_its_card(tiny_bert, topic_data, tmp_path, capsys):
    from mtransfer.cli import main
    from tests.test_cli import write_csv

    train, valid = write_csv(tmp_path / "train.csv", topic_data[0]), write_csv(tmp_path / "valid.csv", topic_data[1])
    out = tmp_path / "run"
    assert main(["train", "--model", str(tiny_bert), "--train", str(train), "--validation", str(valid), "--output-dir",
                 str(out), "--strategy", "contrastive", "--epochs", "1", "--lr", "1e-3", "--set", "contrastive_pairs=64",
                 "--no-progress", "--set", "report_to=none", "--set", "plot=false"]) == 0
    printed = capsys.readouterr().out
    assert "head: logistic regression on the tuned features of 144 training examples (C=" in printed
    record = json.loads((out / "metrics.json").read_text())
    assert record["plan"][0]["objective"] == "pairs" and record["linear_head"]["kind"] == "logistic"
    assert main(["card", "--run-dir", str(out)]) == 0
    card = (out / "model" / "README.md").read_text()
    assert "- head: logistic regression on the contrastively tuned features of 144 training examples (C = " in card
    assert "| contrastive | 1-1 | embeddings, layer.0, layer.1 | head |" in card
