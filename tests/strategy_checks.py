"""Shared check: a model trains under a strategy exactly as planned, and save -> load predicts identically."""

from __future__ import annotations

from pathlib import Path

import torch

import mtransfer as mt
from tests.test_training import Recorder, changed_groups

EPOCHS = {"frozen": 1, "last_n": 1, "full": 1, "two_stage": 2, "gradual_unfreezing": 3}


def epochs_for(strategy: str, model: mt.TransferModel) -> int:
    """Enough epochs for the strategy to reach every phase (chain-thaw: head, each group, all)."""
    return EPOCHS.get(strategy, len(model.layer_groups()) + 1)


def train_and_reload(model: mt.TransferModel, train, val, strategy: str, tmp_path: Path, predict_inputs, **overrides):
    """Train under ``strategy``; check each epoch moved exactly the planned groups; return the reloaded model."""
    args = mt.TrainingArguments(output_dir=str(tmp_path / "run"), strategy=strategy, num_epochs=epochs_for(strategy, model),
                                learning_rate=1e-3, head_learning_rate=1e-2, last_n=1, batch_size=12, progress_bar=False,
                                report_to=[], plot=False, save_checkpoints=False, load_best_model_at_end=False, **overrides)
    trainer = mt.Trainer(model, args, train, val)
    rec = Recorder()
    trainer.callbacks.append(rec)
    trainer.train()
    for epoch in range(args.num_epochs):
        planned = trainer.plan.trainable_names(epoch)
        assert changed_groups(rec.snapshots[epoch], rec.snapshots[epoch + 1]) == planned, (strategy, epoch)
        assert rec.with_grad[epoch] == planned, (strategy, epoch)
    assert all(len(h) for h in trainer.state.history)
    model.save_pretrained(tmp_path / "saved")
    loaded = mt.TransferModel.from_pretrained(tmp_path / "saved")
    assert torch.equal(model.predict_outputs(predict_inputs), loaded.predict_outputs(predict_inputs))
    return loaded
