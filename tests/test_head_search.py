"""The head-only phase's rate chosen on cached features (mtransfer.head_search) and its place in a run."""

import math

import pytest
import torch

import mtransfer as mt
from mtransfer.head_search import HEAD_LEARNING_RATES, folds_of, search_head_settings
from mtransfer.heads import Head, HeadConfig
from mtransfer.record import RunRecord


def make(tiny_bert, topic_data, tmp_path, *, with_eval=True, head=None, **settings):
    train_rows, eval_rows = topic_data
    train = mt.load_labeled(train_rows)
    val = mt.load_labeled(eval_rows, label_names=train.label_names)
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0, head=head)
    args = mt.TrainingArguments(**{"output_dir": str(tmp_path / "run"), "num_epochs": 3, "batch_size": 16,
                                   "progress_bar": False, "report_to": [], "plot": False, "save_checkpoints": False,
                                   **settings})
    return mt.Trainer(model, args, train, val if with_eval else None)


def test_folds_are_disjoint_cover_everything_and_keep_the_classes_balanced():
    labels = torch.tensor([0] * 9 + [1] * 6 + [2] * 3)
    parts = folds_of(labels, 3, seed=1, stratify=True)
    assert sorted(torch.cat(parts).tolist()) == list(range(18))
    for part in parts:
        assert torch.bincount(labels[part], minlength=3).tolist() == [3, 2, 1]
    assert [p.tolist() for p in folds_of(labels, 3, seed=1, stratify=True)] == [p.tolist() for p in parts]


def test_a_frozen_run_with_no_rate_chooses_one_on_the_cache_and_trains_at_it(tiny_bert, topic_data, tmp_path, capsys):
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="frozen")
    trainer.train()
    choice = trainer.head_choice
    assert choice["searched"] and choice["validation"] == "eval_dataset (63 examples)"
    assert len(choice["candidates"]) == len(HEAD_LEARNING_RATES) * 3 == 27  # rates x weight decays (0.01, 0.1, 1)
    assert trainer.plan.phases[0].peak_lrs[-1] == choice["learning_rate"]
    head_groups = [g for g in trainer.optimizer.param_groups if g["layer_group"] == len(trainer.group_names) - 1]
    assert sorted(g["weight_decay"] for g in head_groups) == [0.0, choice["weight_decay"]]  # biases take none
    record = RunRecord.load(tmp_path / "run" / "metrics.json")
    assert record.head_search == choice and record.plan[0]["peak_lr"]["head"] == choice["learning_rate"]
    assert "chosen among 27 candidates" in capsys.readouterr().out


def test_the_search_trains_each_candidate_as_the_run_would(tiny_bert, topic_data, tmp_path):
    """No dropout: the chosen candidate's validation loss is the run's final evaluation loss."""
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="frozen", head={"dropout": 0.0},
                   load_best_model_at_end=False, lr_schedule="linear", warmup_ratio=0.2)
    result = trainer.train()
    best = next(c for c in trainer.head_choice["candidates"]
                if c["learning_rate"] == trainer.head_choice["learning_rate"]
                and c["weight_decay"] == trainer.head_choice["weight_decay"])
    assert best["loss"] == pytest.approx(result.final_metrics["eval_loss"], abs=1e-5)
    assert best["value"] == pytest.approx(result.final_metrics["eval_accuracy"])


def test_without_evaluation_data_it_cross_validates_the_training_data(tiny_bert, topic_data, tmp_path):
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="two_stage", head_epochs=1, with_eval=False)
    trainer.train()
    assert trainer.head_choice["validation"] == "3-fold cross-validation of the training data (144 examples)"
    assert trainer.head_choice["epochs"] == 1  # the head stage's length
    assert trainer.plan.phases[0].peak_lrs[-1] == trainer.head_choice["learning_rate"]
    assert trainer.plan.phases[1].peak_lrs[-1] == pytest.approx(2e-5)  # the backbone stage keeps learning_rate


@pytest.mark.parametrize("given", [{"head_learning_rate": 3e-3}, {"learning_rate": 3e-3}])
def test_a_rate_the_user_gave_is_kept(tiny_bert, topic_data, tmp_path, given):
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=1, **given)
    trainer.train()
    assert trainer.head_choice is None
    assert trainer.plan.phases[0].peak_lrs[-1] == 3e-3
    assert RunRecord.load(tmp_path / "run" / "metrics.json").head_search is None


def test_without_the_cache_the_default_rate_is_used_and_the_record_says_why(tiny_bert, topic_data, tmp_path):
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=1, cache_features=False)
    trainer.train()
    assert trainer.head_choice == {"learning_rate": 5e-3, "weight_decay": 0.01, "searched": False,
                                   "reason": "cache_features=False"}
    assert trainer.plan.phases[0].peak_lrs[-1] == 5e-3


def test_a_resumed_run_keeps_the_rate_it_chose(tiny_bert, topic_data, tmp_path, monkeypatch):
    make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=2, save_checkpoints="all").train()
    first = RunRecord.load(tmp_path / "run" / "metrics.json").head_search
    import mtransfer.training as training

    monkeypatch.setattr(training, "search_head_settings", lambda *a, **k: pytest.fail("searched again on resume"))
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=2, save_checkpoints="all",
                   resume_from_checkpoint=str(tmp_path / "run" / "checkpoints" / "epoch_1"))
    trainer.train()
    assert trainer.head_choice == first


def test_search_ranks_by_the_validation_loss_and_regression_works():
    torch.manual_seed(0)
    x = torch.randn(60, 5)
    y = (x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]))[:, None] * 10 + 100
    head = Head(HeadConfig(task="regression", num_outputs=1, input_dim=5, dropout=0.0))
    head.set_target_stats(y)
    result = search_head_settings(head, [x], y, epochs=20, batch_size=8, multiplier=lambda s, spe: 1.0, metric="mse",
                                  greater_is_better=False, learning_rates=(1e-4, 1e-1, 1e4), weight_decays=(0.0,))
    assert result.learning_rate == 1e-1  # 1e-4 barely moves in 120 steps
    by_rate = {c["learning_rate"]: c["value"] for c in result.candidates}
    assert by_rate[1e-1] < by_rate[1e-4] and math.isfinite(by_rate[1e-1])  # 1e4 diverges: never chosen
    assert head.out.weight.abs().sum() > 0 and result.validation.startswith("3-fold")
