"""Shared check: a model trains under a strategy exactly as planned, and save -> load predicts identically.

Per epoch it checks that exactly the planned layer groups change and get gradients, that every
optimizer param group carries the planned learning rate (by the group's position) and the
expected weight decay, and that in head-only epochs the backbone's buffers (batch-norm
statistics) stay as they were.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import mtransfer as mt
from tests.test_training import Recorder, changed_groups

EPOCHS = {"frozen": 1, "last_n": 1, "full": 1, "two_stage": 2, "gradual_unfreezing": 3}
WEIGHT_DECAY = 0.05


def epochs_for(strategy: str, model: mt.TransferModel) -> int:
    """Enough epochs for the strategy to reach every phase (chain-thaw: head, each group, all)."""
    return EPOCHS.get(strategy, len(model.layer_groups()) + 1)


def expected_no_decay(model: nn.Module) -> set[int]:
    """An independent oracle by names: biases, norm-layer parameters, ViT class and position tokens."""
    norms = {name for name, m in model.named_modules()
             if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)) or type(m).__name__.endswith("Norm")}
    out = set()
    for name, p in model.named_parameters():
        owner = name.rsplit(".", 1)[0]
        if name.endswith(".bias") or owner in norms or name.endswith(("cls_token", "position_embeddings", "mask_token", "pos_embed", "reg_token", "dist_token")):
            out.add(id(p))
    return out


class PlanRecorder(Recorder):
    """Recorder plus, per epoch, the optimizer param groups' (position, lr, weight decay, params) and adapter buffers."""

    def __init__(self):
        super().__init__()
        self.param_groups, self.buffers = {}, []

    def on_train_begin(self, trainer):
        super().on_train_begin(trainer)
        self.buffers.append(self._buffers(trainer))

    def on_before_optimizer_step(self, trainer):
        super().on_before_optimizer_step(trainer)
        self.param_groups.setdefault(self.epoch, [
            (pg["layer_group"], pg["lr"], pg["weight_decay"], [id(p) for p in pg["params"]])
            for pg in trainer.optimizer.param_groups])

    def on_epoch_end(self, trainer, epoch, record):
        super().on_epoch_end(trainer, epoch, record)
        self.buffers.append(self._buffers(trainer))

    @staticmethod
    def _buffers(trainer):
        adapter = trainer.accelerator.unwrap_model(trainer.model).adapter
        return {k: v.detach().clone() for k, v in adapter.named_buffers() if v.is_floating_point()}


def check_plan_followed(trainer, rec: PlanRecorder) -> None:
    model = trainer.accelerator.unwrap_model(trainer.model)
    no_decay = expected_no_decay(model)
    head = len(trainer.group_names) - 1
    for epoch in range(trainer.args.num_epochs):
        phase = trainer.plan.phase_at(epoch)
        planned = trainer.plan.trainable_names(epoch)
        assert changed_groups(rec.snapshots[epoch], rec.snapshots[epoch + 1]) == planned, (trainer.args.strategy, epoch)
        assert rec.with_grad[epoch] == planned, (trainer.args.strategy, epoch)
        for position, lr, wd, params in rec.param_groups[epoch]:
            assert lr == phase.peak_lrs[position], (epoch, trainer.group_names[position], lr)
            assert (lr > 0) == (position in phase.trainable)
            expected = {0.0 if i in no_decay else WEIGHT_DECAY for i in params}
            assert expected == {wd}, (trainer.group_names[position], wd)
        if phase.trainable == frozenset({head}):  # head only: the backbone's statistics must not drift
            before, after = rec.buffers[epoch], rec.buffers[epoch + 1]
            assert all(torch.equal(before[k], after[k]) for k in before), (trainer.args.strategy, epoch)


def train_and_reload(model: mt.TransferModel, train, val, strategy: str, tmp_path: Path, predict_inputs,
                     load_kwargs=None, **overrides):
    """Train under ``strategy``; check each epoch followed the plan; return the reloaded model."""
    settings = dict(output_dir=str(tmp_path / "run"), strategy=strategy, num_epochs=epochs_for(strategy, model),
                    learning_rate=1e-3, head_learning_rate=1e-2, last_n=1, batch_size=12, progress_bar=False,
                    report_to=[], plot=False, save_checkpoints=False, load_best_model_at_end=False,
                    lr_schedule="constant", warmup_ratio=0.0, weight_decay=WEIGHT_DECAY, contrastive_pairs=48)
    settings.update(overrides)
    args = mt.TrainingArguments(**settings)
    trainer = mt.Trainer(model, args, train, val)
    rec = PlanRecorder()
    trainer.callbacks.append(rec)
    trainer.train()
    check_plan_followed(trainer, rec)
    assert all(len(h) for h in trainer.state.history)
    model.save_pretrained(tmp_path / "saved")
    loaded = mt.TransferModel.from_pretrained(tmp_path / "saved", **(load_kwargs or {}))
    assert torch.equal(model.predict_outputs(predict_inputs), loaded.predict_outputs(predict_inputs))
    return loaded
