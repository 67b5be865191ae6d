import json
import math
from pathlib import Path

import pytest
import torch

import mtransfer as mt
from mtransfer.schedules import slanted_triangular
from mtransfer.training import TrainerCallback


def make(tiny_bert, topic_data, tmp_path, *, model_kwargs=None, **arg_overrides):
    train_rows, eval_rows = topic_data
    train = mt.load_labeled(train_rows)
    val = mt.load_labeled(eval_rows, label_names=train.label_names)
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0, **(model_kwargs or {}))
    settings = dict(output_dir=str(tmp_path / "run"), num_epochs=2, learning_rate=1e-3, batch_size=16,
                    progress_bar=False, report_to=[], plot=False, save_checkpoints=False)
    settings.update(arg_overrides)
    return mt.Trainer(model, mt.TrainingArguments(**settings), train, val)


def snapshot(model):
    return {g.name: [p.detach().clone() for p in g.parameters()] for g in model.layer_groups()}


class Recorder(TrainerCallback):
    """Per epoch: groups that got gradients, param-group LRs, and a parameter snapshot at the end."""

    def __init__(self):
        self.with_grad, self.lrs, self.snapshots, self.step_lrs = {}, {}, [], []

    def on_train_begin(self, trainer):
        self.snapshots.append(snapshot(trainer.accelerator.unwrap_model(trainer.model)))

    def on_epoch_begin(self, trainer, epoch):
        self.epoch = epoch
        self.with_grad[epoch] = set()

    def on_before_optimizer_step(self, trainer):
        model = trainer.accelerator.unwrap_model(trainer.model)
        for g in model.layer_groups():
            grads = [p.grad for p in g.parameters()]
            if any(x is not None for x in grads):
                self.with_grad[self.epoch].add(g.name)
        self.lrs[self.epoch] = {pg["group_name"]: pg["lr"] for pg in trainer.optimizer.param_groups}
        self.step_lrs.append({pg["group_name"]: pg["lr"] for pg in trainer.optimizer.param_groups})

    def on_epoch_end(self, trainer, epoch, record):
        self.snapshots.append(snapshot(trainer.accelerator.unwrap_model(trainer.model)))


def changed_groups(before, after):
    return {name for name in before if any(not torch.equal(a, b) for a, b in zip(before[name], after[name]))}


GROUPS = ["embeddings", "layer.0", "layer.1", "head"]
CASES = {
    "frozen": (dict(num_epochs=2), [{"head"}] * 2),
    "last_n": (dict(num_epochs=2, last_n=1), [{"layer.1", "head"}] * 2),
    "full": (dict(num_epochs=2), [set(GROUPS)] * 2),
    "two_stage": (dict(num_epochs=3, head_epochs=1), [{"head"}, set(GROUPS), set(GROUPS)]),
    "gradual_unfreezing": (dict(num_epochs=4), [{"head"}, {"head", "layer.1"}, {"head", "layer.1", "layer.0"}, set(GROUPS)]),
    "chain_thaw": (dict(num_epochs=5), [{"head"}, {"embeddings"}, {"layer.0"}, {"layer.1"}, set(GROUPS)]),
}


@pytest.mark.parametrize("strategy", list(CASES))
def test_strategy_trains_exactly_the_intended_groups(strategy, tiny_bert, topic_data, tmp_path):
    overrides, expected = CASES[strategy]
    trainer = make(tiny_bert, topic_data, tmp_path, strategy=strategy, weight_decay=0.1, **overrides)
    rec = Recorder()
    trainer.callbacks.append(rec)
    trainer.train()
    for epoch, groups in enumerate(expected):
        # frozen groups get no gradient ...
        assert rec.with_grad[epoch] == groups, f"epoch {epoch}"
        # ... and keep their values (weight decay included); trainable ones change
        assert changed_groups(rec.snapshots[epoch], rec.snapshots[epoch + 1]) == groups, f"epoch {epoch}"
        # frozen groups' learning rate is exactly zero
        assert {g for g, lr in rec.lrs[epoch].items() if lr > 0} == groups


def test_param_groups_carry_exact_discriminative_rates(tiny_bert, topic_data, tmp_path):
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="full", num_epochs=1, learning_rate=1e-3,
                   discriminative_lr_decay=2.6, lr_schedule="constant", warmup_ratio=0.0)
    rec = Recorder()
    trainer.callbacks.append(rec)
    trainer.train()
    expected = {"head": 1e-3, "layer.1": 1e-3 / 2.6, "layer.0": 1e-3 / 2.6**2, "embeddings": 1e-3 / 2.6**3}
    for lrs in rec.step_lrs:
        assert lrs == pytest.approx(expected, rel=1e-12)
    # both weight-decay and no-decay param groups of a layer group carry its rate
    names = [pg["group_name"] for pg in trainer.optimizer.param_groups]
    assert names.count("layer.0") == 2


def test_two_stage_rates_and_slanted_triangular_schedule_per_stage(tiny_bert, topic_data, tmp_path):
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="two_stage", num_epochs=3, head_epochs=1,
                   learning_rate=1e-4, head_learning_rate=1e-2, lr_schedule="slanted_triangular")
    rec = Recorder()
    trainer.callbacks.append(rec)
    trainer.train()
    steps = math.ceil(144 / 16)  # 9 optimizer steps per epoch
    assert len(rec.step_lrs) == 3 * steps
    for s in range(steps):  # stage 1: head only, its own schedule over 9 steps
        assert rec.step_lrs[s]["head"] == pytest.approx(1e-2 * slanted_triangular(s, steps))
        assert rec.step_lrs[s]["layer.0"] == 0.0
    for s in range(2 * steps):  # stage 2 restarts the schedule over 18 steps
        lrs = rec.step_lrs[steps + s]
        assert lrs["head"] == pytest.approx(1e-4 * slanted_triangular(s, 2 * steps))
        assert lrs["embeddings"] == lrs["head"]


def test_resume_after_kill_matches_uninterrupted_run(tiny_bert, topic_data, tmp_path):
    common = dict(strategy="two_stage", num_epochs=3, save_checkpoints=True, lr_schedule="linear")
    full = make(tiny_bert, topic_data, tmp_path / "a", **common)
    res_full = full.train()

    class Kill(TrainerCallback):
        def on_step_end(self, trainer, batch):
            if trainer.state.epoch == 0 and trainer.state.global_step == 12:  # mid-way through epoch 2
                raise KeyboardInterrupt

    killed = make(tiny_bert, topic_data, tmp_path / "b", **common)
    killed.callbacks.append(Kill())
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    ckpts = sorted(p.name for p in (tmp_path / "b" / "run" / "checkpoints").iterdir())
    assert ckpts == ["epoch_1"]  # nothing half-written

    resumed = make(tiny_bert, topic_data, tmp_path / "b", resume_from_checkpoint="latest", **common)
    res = resumed.train()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["eval_loss"] for r in res.history] == [r["eval_loss"] for r in res_full.history]
    assert [r["train_loss"] for r in res.history] == [r["train_loss"] for r in res_full.history]
    assert res.final_metrics == res_full.final_metrics


def test_checkpoints_rotate_and_resume_errors(tiny_bert, topic_data, tmp_path):
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=3, save_checkpoints="all",
                   save_total_limit=2)
    trainer.train()
    root = tmp_path / "run" / "checkpoints"
    best = trainer.state.best_epoch
    assert sorted(p.name for p in root.iterdir()) == sorted({"epoch_2", "epoch_3", f"epoch_{best}"})
    state = json.loads((root / "epoch_3" / "trainer_state.json").read_text())
    assert state["epoch"] == 2 and state["global_step"] == 27
    with pytest.raises(FileNotFoundError, match="no checkpoint under"):
        make(tiny_bert, topic_data, tmp_path / "fresh", resume_from_checkpoint="latest").train()


class SpoilHead(TrainerCallback):
    """Ruins the head at the start of epoch ``at`` (0-based): a best epoch before it, on any device's arithmetic."""

    def __init__(self, at):
        self.at = at

    def on_epoch_begin(self, trainer, epoch):
        if epoch == self.at:
            with torch.no_grad():
                for p in trainer.accelerator.unwrap_model(trainer.model).head.parameters():
                    p.mul_(-5.0)


def _folder_bytes(path):
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.mark.parametrize("keep", ["best", "last", "all", "none"])
def test_save_checkpoints_keeps_what_it_says_and_the_run_ends_on_its_best_epoch(keep, tiny_bert, topic_data, tmp_path):
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=4, save_checkpoints=keep,
                   learning_rate=1e-2, lr_schedule="constant", warmup_ratio=0.0, metric_for_best_model="loss")
    sizes = {}

    class Look(TrainerCallback):  # what is on disk after each epoch's save, while the run goes
        def on_epoch_end(self, trainer, epoch, record):
            root = tmp_path / "run" / "checkpoints"
            sizes[epoch + 1] = {p.name: (_folder_bytes(p), (p / "weights_only.json").is_file())
                                for p in root.iterdir()} if root.exists() else {}

    trainer.callbacks += [SpoilHead(3), Look()]
    res = trainer.train()
    assert res.best_epoch < 4
    assert res.final_metrics["eval_loss"] == pytest.approx(res.history[res.best_epoch - 1]["eval_loss"], rel=1e-6)
    root = tmp_path / "run" / "checkpoints"
    kept = sorted(p.name for p in root.iterdir()) if root.exists() else []
    best = f"epoch_{res.best_epoch}"
    assert kept == {"best": sorted([best, "epoch_4"]), "last": ["epoch_4"], "all": [f"epoch_{e}" for e in range(1, 5)],
                    "none": []}[keep]
    if keep == "best":
        # while the run went: the latest full (resumable), the best as weights alone (Adam's two moments gone)
        during = sizes[4]
        assert sorted(during) == sorted([best, "epoch_4"]) and during["epoch_4"][1] is False and during[best][1] is True
        assert during[best][0] < during["epoch_4"][0] / 2
        # once it finished: both as weights alone (the frozen backbone is left out, listed)
        for name in (best, "epoch_4"):
            assert sorted(p.name for p in (root / name).iterdir()) == [
                "model.safetensors", "trainer_state.json", "unchanged_parameters.json", "weights_only.json"]
        with pytest.raises(ValueError, match=r"resume_from_checkpoint='latest': the run in .* finished; its checkpoints "
                                             r"hold the weights of epochs .* only, so there is nothing to resume"):
            make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=4, save_checkpoints=keep,
                 learning_rate=1e-2, lr_schedule="constant", warmup_ratio=0.0, metric_for_best_model="loss",
                 resume_from_checkpoint="latest").train()
        with pytest.raises(ValueError, match=f"resume_from_checkpoint='{root / best}': holds the best epoch's weights "
                                             "only"):
            make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=4, save_checkpoints=keep,
                 learning_rate=1e-2, lr_schedule="constant", warmup_ratio=0.0, metric_for_best_model="loss",
                 resume_from_checkpoint=str(root / best)).train()


def test_save_checkpoints_last_says_when_a_resume_lost_the_best_epoch(tiny_bert, topic_data, tmp_path, capsys):
    common = dict(strategy="frozen", num_epochs=3, save_checkpoints="last", learning_rate=1e-2, lr_schedule="constant",
                  warmup_ratio=0.0, metric_for_best_model="loss")

    class Kill(TrainerCallback):
        def on_epoch_begin(self, trainer, epoch):
            if epoch == 2:
                raise KeyboardInterrupt

    first = make(tiny_bert, topic_data, tmp_path, **common)
    first.callbacks += [SpoilHead(1), Kill()]  # epoch 1 is the best; epoch 2's checkpoint replaces it
    with pytest.raises(KeyboardInterrupt):
        first.train()
    assert first.state.best_epoch == 1
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["epoch_2"]
    res = make(tiny_bert, topic_data, tmp_path, resume_from_checkpoint="latest", **common).train()
    assert res.best_epoch == 1
    assert ("the best epoch (1) came before the resume and save_checkpoints='last' kept no copy of its weights: the "
            "run ends with the last epoch's weights") in capsys.readouterr().out


def test_early_stopping_and_best_model(tiny_bert, topic_data, tmp_path):
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="full", num_epochs=6, learning_rate=1e-9,
                   lr_schedule="constant", warmup_ratio=0.0, early_stopping_patience=2, early_stopping_threshold=0.01)
    res = trainer.train()
    assert res.stopped_early and len(res.history) == 3 and res.best_epoch == 1
    # a warm-up the patience does not cut short: the same run goes on to min_epochs, still keeping epoch 1
    trainer = make(tiny_bert, topic_data, tmp_path / "warm", strategy="full", num_epochs=6, learning_rate=1e-9,
                   lr_schedule="constant", warmup_ratio=0.0, early_stopping_patience=2, early_stopping_threshold=0.01,
                   min_epochs=5)
    res = trainer.train()
    assert res.stopped_early and len(res.history) == 5 and res.best_epoch == 1
    with pytest.raises(ValueError, match=r"TrainingArguments.min_epochs=7: expected at most num_epochs \(6\)"):
        mt.TrainingArguments(output_dir=str(tmp_path), num_epochs=6, min_epochs=7)


def test_best_epoch_weights_are_restored_at_the_end(tiny_bert, topic_data, tmp_path):
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="full", num_epochs=4, learning_rate=3e-3,
                   metric_for_best_model="loss")
    res = trainer.train()
    best = min(r["eval_loss"] for r in res.history)
    assert res.best_value == pytest.approx(best)
    assert res.final_metrics["eval_loss"] == pytest.approx(best, rel=1e-6)
    saved = mt.TransferModel.from_pretrained(res.model_dir)
    texts = [r["text"] for r in topic_data[1]]
    assert torch.equal(saved.predict_outputs(texts), trainer.model.cpu().predict_outputs(texts))  # same device, same bits


def test_outputs_metrics_json_plot_and_tensorboard(tiny_bert, topic_data, tmp_path):
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="two_stage", num_epochs=2, plot=True,
                   report_to=["tensorboard"], save_checkpoints=True)
    res = trainer.train()
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best"]["metric"] == "eval_accuracy"
    assert [h["phase"] for h in metrics["history"]] == ["head", "unfreeze all"]
    assert metrics["plan"][0]["trainable"] == ["head"]
    assert metrics["eval_samples"] == 63 and metrics["history"][0]["eval_samples"] == 63
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert list((out / "logs").rglob("events.out.tfevents*"))
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert "eval_accuracy" in repr(res)


def test_gradient_accumulation_counts_optimizer_steps(tiny_bert, topic_data, tmp_path):
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="full", num_epochs=1, gradient_accumulation_steps=4)
    trainer.train()
    assert trainer.state.global_step == math.ceil(9 / 4)


def test_regression_end_to_end_in_original_units(tiny_bert, topic_data, tmp_path):
    price = {"food": 1000.0, "science": 3000.0, "sport": 5000.0}
    train_rows, eval_rows = topic_data
    train = mt.load_labeled([{"text": r["text"], "price": price[r["label"]]} for r in train_rows],
                            label_column="price", task="regression")
    val = mt.load_labeled([{"text": r["text"], "price": price[r["label"]]} for r in eval_rows],
                          label_column="price", task="regression")
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=["price"], task="regression", seed=0)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "reg"), strategy="full", num_epochs=4, learning_rate=3e-3,
                                progress_bar=False, report_to=[], plot=False, save_checkpoints=False)
    res = mt.Trainer(model, args, train, val).train()
    assert res.best_metric == "eval_mse"
    preds = model.cpu().predict([r["text"] for r in eval_rows])  # the device the reloaded model is on
    assert 0 < min(preds) and max(preds) < 7000 and 2000 < sum(preds) / len(preds) < 4000
    assert res.final_metrics["eval_r_squared"] > 0.3
    loaded = mt.TransferModel.from_pretrained(res.model_dir)
    assert loaded.predict([r["text"] for r in eval_rows]) == preds


def test_multilabel_with_tuned_thresholds(tiny_bert, topic_data, tmp_path):
    train_rows, eval_rows = topic_data
    tags = lambda r: [r["label"]] + (["long"] if len(r["text"].split()) > 7 else [])  # noqa: E731
    train = mt.load_labeled([{"text": r["text"], "tags": tags(r)} for r in train_rows], label_column="tags",
                            task="multi_label_classification")
    val = mt.load_labeled([{"text": r["text"], "tags": tags(r)} for r in eval_rows], label_column="tags",
                          task="multi_label_classification", label_names=train.label_names)
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names,
                                           task="multi_label_classification", seed=0)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "ml"), strategy="full", num_epochs=3, learning_rate=3e-3,
                                progress_bar=False, report_to=[], plot=False, save_checkpoints=False,
                                tune_thresholds=True)
    res = mt.Trainer(model, args, train, val).train()
    assert set(res.final_metrics) >= {"eval_f1", "eval_accuracy", "eval_loss"}
    thresholds = model.cpu().head.thresholds
    assert not torch.equal(thresholds, torch.full_like(thresholds, 0.5))
    loaded = mt.TransferModel.from_pretrained(res.model_dir)
    assert torch.equal(loaded.head.thresholds, thresholds)
    assert loaded.predict([r["text"] for r in eval_rows]) == model.predict([r["text"] for r in eval_rows])


@pytest.mark.parametrize("field,value,message", [
    ("strategy", "freeze", r"TrainingArguments.strategy='freeze': expected one of frozen"),
    ("num_epochs", 0, r"TrainingArguments.num_epochs=0: expected an integer >= 1"),
    ("learning_rate", -1.0, r"TrainingArguments.learning_rate=-1.0: expected a learning rate > 0"),
    ("lr_schedule", "cyclic", r"TrainingArguments.lr_schedule='cyclic'"),
    ("warmup_ratio", 1.5, r"TrainingArguments.warmup_ratio=1.5"),
    ("discriminative_lr_decay", 0.5, r"discriminative_lr_decay=0.5: expected a factor >= 1.0"),
    ("mixed_precision", "fp8", r"mixed_precision='fp8'"),
    ("report_to", ["wandb"], r"report_to=\['wandb'\]"),
    ("save_checkpoints", "epoch", r"save_checkpoints='epoch': expected one of best, last, all, none \(or true / false\)"),
])
def test_invalid_settings_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        mt.TrainingArguments(**{field: value})


def test_invalid_strategy_combinations():
    with pytest.raises(ValueError, match="strategy='last_n' needs last_n"):
        mt.TrainingArguments(strategy="last_n")
    with pytest.raises(ValueError, match="head_epochs=3 must be < num_epochs=3"):
        mt.TrainingArguments(strategy="two_stage", num_epochs=3, head_epochs=3)


def test_trainer_checks_data_and_plan_before_training(tiny_bert, topic_data, tmp_path):
    with pytest.raises(ValueError, match=r"last_n=7 does not fit this model: it has 3 adapter layer groups"):
        make(tiny_bert, topic_data, tmp_path, strategy="last_n", last_n=7)
    with pytest.raises(ValueError, match=r"needs num_epochs >= 5"):
        make(tiny_bert, topic_data, tmp_path, strategy="chain_thaw", num_epochs=3)
    with pytest.raises(ValueError, match="metric_for_best_model='bleu' is not computed"):
        make(tiny_bert, topic_data, tmp_path, metric_for_best_model="bleu")
    train = mt.load_labeled(topic_data[0])
    other = mt.load_labeled([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names)
    with pytest.raises(ValueError, match=r"eval_dataset \(list\) has labels \['x', 'y'\] but the model was built for"):
        mt.Trainer(model, mt.TrainingArguments(output_dir=str(tmp_path)), train, other)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine", "slanted_triangular"])
def test_every_schedule_drives_the_param_group_rates(schedule, tiny_bert, topic_data, tmp_path):
    from mtransfer.schedules import get_schedule

    trainer = make(tiny_bert, topic_data, tmp_path, strategy="full", num_epochs=2, learning_rate=1e-3,
                   lr_schedule=schedule, warmup_ratio=0.2)
    rec = Recorder()
    trainer.callbacks.append(rec)
    trainer.train()
    total = 2 * 9
    fn = get_schedule(schedule, warmup_ratio=0.2, total_steps=total)
    assert [lrs["head"] for lrs in rec.step_lrs] == pytest.approx([1e-3 * fn(s, total) for s in range(total)], rel=1e-12)
    assert len({round(lrs["head"], 12) for lrs in rec.step_lrs}) > (1 if schedule != "constant" else 0)


def test_bf16_mixed_precision_trains(tiny_bert, topic_data, tmp_path):
    """bf16 autocast on the process's device (the CPU here; the GPU on a CUDA machine, where Accelerate has fixed
    the device for the whole process)."""
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="two_stage", num_epochs=2, mixed_precision="bf16")
    seen = set()
    hook = trainer.model.head.register_forward_hook(lambda m, i, out: seen.add(out.dtype))
    res = trainer.train()
    hook.remove()
    assert seen == {torch.bfloat16}  # every forward of training and evaluation ran under bf16 autocast
    assert all(math.isfinite(r["train_loss"]) for r in res.history)
    # weights stay float32 (autocast only), so the saved model is a normal fp32 model
    assert next(trainer.model.parameters()).dtype == torch.float32


def test_fp16_on_cpu_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="mixed_precision='fp16' needs a CUDA GPU"):
        mt.TrainingArguments(mixed_precision="fp16", cpu=True)


@pytest.mark.gpu
def test_fp16_on_gpu_trains(tiny_bert, tmp_path):
    """fp16 needs Accelerate's gradient scaler, fixed once per process: its own process, as a user's run would be."""
    import subprocess
    import sys

    code = f"""
import json, random, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
import mtransfer as mt
from tests.tiny import topic_examples
rng = random.Random(0)
train = mt.load_labeled(topic_examples(rng, 48))
model = mt.TransferModel.from_backbone("text", {str(tiny_bert)!r}, labels=train.label_names, seed=0)
args = mt.TrainingArguments(output_dir={str(tmp_path / "run")!r}, strategy="full", num_epochs=2, mixed_precision="fp16",
                            learning_rate=1e-3, progress_bar=False, report_to=[], plot=False)
trainer = mt.Trainer(model, args, train)
res = trainer.train()
print(json.dumps({{"losses": [h["train_loss"] for h in res.history], "scaler": trainer.accelerator.scaler is not None,
                  "device": str(trainer.accelerator.device)}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["scaler"] and out["device"].startswith("cuda")
    assert all(math.isfinite(x) for x in out["losses"]) and out["losses"][1] < out["losses"][0]


def test_best_weights_go_back_into_the_live_model_of_a_backbone_that_cannot_be_rebuilt(shape_data, tmp_path):
    """The best epoch used to be restored by rebuilding the model from disk, which crashed for such backbones."""
    from tests.tiny import make_small_cnn

    train = mt.load_labeled(shape_data[0], input_column="image")
    val = mt.load_labeled(shape_data[1], input_column="image", label_names=train.label_names)
    torch.manual_seed(0)
    model = mt.TransferModel.from_backbone("torch", make_small_cnn(), labels=train.label_names, image_size=32, seed=0)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "run"), strategy="full", num_epochs=4, learning_rate=1e-2,
                                lr_schedule="constant", warmup_ratio=0.0, metric_for_best_model="loss", batch_size=12,
                                save_checkpoints=True, save_total_limit=1, progress_bar=False, report_to=[], plot=False)

    class SpoilLastEpoch(TrainerCallback):  # a best epoch before the last, on any device's arithmetic
        def on_epoch_begin(self, trainer, epoch):
            if epoch == 3:
                with torch.no_grad():
                    for p in trainer.accelerator.unwrap_model(trainer.model).head.parameters():
                        p.mul_(-5.0)

    trainer = mt.Trainer(model, args, train, val, callbacks=[SpoilLastEpoch()])
    live = trainer.model
    res = trainer.train()
    assert trainer.model is live  # the same object, its weights put back in place
    best = min(r["eval_loss"] for r in res.history)
    assert res.best_epoch != res.history[-1]["epoch"], "the test needs a best epoch before the last"
    assert res.final_metrics["eval_loss"] == pytest.approx(best, rel=1e-6)
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == sorted({f"epoch_{res.best_epoch}", "epoch_4"})  # rotation keeps the best checkpoint
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["weights_epoch"] == res.best_epoch and record["weights_are_best"] is True


def test_a_new_run_never_mixes_with_an_older_runs_checkpoints(tiny_bert, topic_data, tmp_path):
    """A new run used to delete its own first checkpoint (rotation saw the old ones) and resume loaded the old run."""
    make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=3, save_checkpoints="all").train()
    with pytest.raises(ValueError, match=r"holds checkpoints of an earlier run \(epoch_1, epoch_2, epoch_3\)"):
        make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=2, save_checkpoints="all").train()
    with pytest.raises(ValueError, match=r"written by a different run \(head_learning_rate 0.001 -> 0.01; learning_rate 0.001 -> 0.01\)"):
        make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=3, save_checkpoints="all", learning_rate=1e-2,
             resume_from_checkpoint="latest").train()
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=2, save_checkpoints="all",
                   overwrite_output_dir=True)
    trainer.train()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["epoch_1", "epoch_2"]


def test_outputs_follow_the_umask(tiny_bert, topic_data, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=1, save_checkpoints="all").train()
    finally:
        os.umask(old)
    run = tmp_path / "run"
    for path in (run / "model", run / "model" / "config.json", run / "metrics.json", run / "checkpoints" / "epoch_1",
                 run / "checkpoints" / "epoch_1" / "model.safetensors"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_logging_steps_count_optimizer_steps(tiny_bert, topic_data, tmp_path):
    logged = []

    class Spy(TrainerCallback):
        def on_train_begin(self, trainer):
            trainer._log_loss = lambda loss, bar: logged.append(trainer.state.global_step)

    trainer = make(tiny_bert, topic_data, tmp_path, strategy="full", num_epochs=1, batch_size=4,
                   gradient_accumulation_steps=3, logging_steps=2)
    trainer.callbacks.append(Spy())
    trainer.train()
    batches = math.ceil(len(trainer.train_dataset) / 4)
    assert trainer.state.global_step == math.ceil(batches / 3)  # optimizer steps, not batches
    assert logged == list(range(2, trainer.state.global_step + 1, 2))


def test_a_truncated_checkpoint_is_named_before_resuming(tiny_bert, topic_data, tmp_path):
    make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=2, save_checkpoints="all").train()
    weights = tmp_path / "run" / "checkpoints" / "epoch_2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"epoch_2/model.safetensors: not a readable safetensors file"):
        make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=2, save_checkpoints="all",
             resume_from_checkpoint="latest").train()


def test_epoch_lines_are_printed_without_progress_bars(tiny_bert, topic_data, tmp_path, capsys):
    make(tiny_bert, topic_data, tmp_path, strategy="frozen", num_epochs=2, progress_bar=False).train()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert [ln.split(" [")[0] for ln in lines] == ["epoch 1/2", "epoch 2/2"] and all("eval_accuracy=" in ln for ln in lines)


def _equal_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_head_only_checkpoints_hold_the_head_and_resume_exactly(tiny_bert, topic_data, tmp_path):
    """A frozen probe used to checkpoint the whole backbone every epoch; now only what it trains."""
    common = dict(strategy="frozen", num_epochs=3, save_checkpoints="all", cache_features=False)
    full = make(tiny_bert, topic_data, tmp_path / "a", **common)
    full.train()
    ckpt = tmp_path / "a" / "run" / "checkpoints" / "epoch_1"
    head = full.model.head
    head_bytes = sum(p.numel() * p.element_size() for p in head.parameters())
    model_bytes = sum(p.numel() * p.element_size() for p in full.model.parameters())
    assert head_bytes * 10 < model_bytes
    # the head's tensors plus the safetensors header (names, offsets) and the model's buffers
    buffers = sum(b.numel() * b.element_size() for b in full.model.buffers())
    assert (ckpt / "model.safetensors").stat().st_size <= head_bytes + buffers + 8192
    assert (ckpt / "optimizer.bin").stat().st_size <= 2 * head_bytes + 16384  # Adam's two moments of the head
    listing = json.loads((ckpt / "unchanged_parameters.json").read_text())
    assert len(listing["parameters"]) == sum(1 for n, _ in full.model.named_parameters() if not n.startswith("head."))

    class Kill(TrainerCallback):
        def on_step_end(self, trainer, batch):
            if trainer.state.epoch == 0 and trainer.state.global_step == 12:  # mid-way through epoch 2
                raise KeyboardInterrupt

    killed = make(tiny_bert, topic_data, tmp_path / "b", **common)
    killed.callbacks.append(Kill())
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed = make(tiny_bert, topic_data, tmp_path / "b", resume_from_checkpoint="latest", **common)
    res = resumed.train()
    _equal_weights(full.model, resumed.model)
    assert [r["train_loss"] for r in res.history] == [r["train_loss"] for r in full.state.history]


def test_resuming_a_head_only_checkpoint_on_other_backbone_weights_is_refused(tiny_bert, topic_data, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    bert = tmp_path / "bert"
    shutil.copytree(tiny_bert, bert)
    make(str(bert), topic_data, tmp_path, strategy="frozen", num_epochs=2, save_checkpoints="all").train()
    weights = load_file(str(bert / "model.safetensors"))
    name = next(k for k in weights if k.endswith("weight"))
    weights[name] = weights[name] + 0.01  # same architecture and folder, other weights
    save_file(weights, str(bert / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"epoch_2: it leaves out the \d+ parameters the run had not trained yet"):
        make(str(bert), topic_data, tmp_path, strategy="frozen", num_epochs=2, save_checkpoints="all",
             resume_from_checkpoint="latest").train()


def test_a_head_only_best_epoch_is_restored_after_the_backbone_trained(tiny_bert, topic_data, tmp_path):
    """Two-stage where fine-tuning ruins the model: the best (head-only) checkpoint left the backbone out, so it
    is completed before the backbone trains, and the end of the run restores the untouched backbone."""
    trainer = make(tiny_bert, topic_data, tmp_path, strategy="two_stage", num_epochs=3, head_epochs=1,
                   save_checkpoints=True, save_total_limit=1, learning_rate=3.0, lr_schedule="constant",
                   warmup_ratio=0.0, metric_for_best_model="loss")
    original = {k: v.clone() for k, v in trainer.model.adapter.state_dict().items()}
    res = trainer.train()
    assert res.best_epoch == 1 and res.history[1]["eval_loss"] > res.history[0]["eval_loss"]
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["epoch_1", "epoch_3"]
    assert not (root / "epoch_1" / "unchanged_parameters.json").exists()  # completed when the backbone began to train
    for k, v in trainer.model.adapter.state_dict().items():
        assert torch.equal(v.cpu(), original[k]), k
    assert res.final_metrics["eval_loss"] == pytest.approx(res.history[0]["eval_loss"], rel=1e-6)



def run_two_ranks(tmp_path, body):
    """Run ``body(checkpoints)`` as two "processes" (threads with a real barrier) where rank 1 starts only once rank 0
    waits at its first barrier: any decision a rank takes from files rank 0 already changed shows as a broken barrier.
    Returns how many barriers each rank passed."""
    import threading

    from mtransfer.checkpoints import Checkpoints

    barrier = threading.Barrier(2, timeout=10)
    waits, errors = {0: 0, 1: 0}, []

    class Rank:
        def __init__(self, index):
            self.index, self.is_main_process = index, index == 0

        def wait_for_everyone(self):
            waits[self.index] += 1
            barrier.wait()

    def run(index):
        try:
            if index == 1:
                while barrier.n_waiting == 0:  # rank 0 is ahead
                    threading.Event().wait(0.001)
            body(Checkpoints(tmp_path, Rank(index), identity={}, limit=None))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return waits


def test_completing_a_checkpoint_is_collective_whoever_reads_the_listing_last(tmp_path):
    """CI failure on main: under 2 processes the main process completed the best checkpoint and removed its listing
    before the other process had read it; that process then skipped the barrier, and the run died in gloo
    ("Connection closed by peer")."""
    from safetensors.torch import load_file, save_file

    from mtransfer.checkpoints import MODEL_WEIGHTS, UNCHANGED_FILE, Checkpoints

    model = torch.nn.Linear(3, 2)
    folder = tmp_path / "checkpoints" / "epoch_1"
    folder.mkdir(parents=True)
    save_file({"weight": model.weight.detach().clone()}, str(folder / MODEL_WEIGHTS), metadata={"format": "pt"})
    fingerprint = Checkpoints(tmp_path, None, identity={}, limit=None).fingerprint(model, ["bias"])
    (folder / UNCHANGED_FILE).write_text(json.dumps({"parameters": ["bias"], "fingerprint": fingerprint}))
    waits = run_two_ranks(tmp_path, lambda ckpt: ckpt.complete(1, model, still_unchanged=[]))
    assert waits[0] == waits[1] >= 1  # both passed the same barriers
    assert not (folder / UNCHANGED_FILE).exists()
    assert torch.equal(load_file(str(folder / MODEL_WEIGHTS))["bias"], model.bias.detach())


def test_starting_fresh_is_collective_whoever_lists_the_old_checkpoints_last(tmp_path):
    from mtransfer.checkpoints import STATE_FILE

    old = tmp_path / "checkpoints" / "epoch_1"
    old.mkdir(parents=True)
    (old / STATE_FILE).write_text("{}")
    waits = run_two_ranks(tmp_path, lambda ckpt: ckpt.start_fresh(overwrite=True))
    assert waits[0] == waits[1] >= 1
    assert not old.exists()


class ForceBlank(mt.TrainerCallback):
    """Holds a CTC head on the all-blank plateau for its first ``blank_epochs`` epochs (the blank's bias far above every
    symbol's), then pushes it off (the blank's bias far below: every frame emits a symbol, a garbage transcript whose
    CER is well above the all-blank 1.0)."""

    def __init__(self, blank_epochs):
        self.blank_epochs = blank_epochs

    def on_epoch_begin(self, trainer, epoch):
        import torch

        with torch.no_grad():
            trainer.unwrapped.head.out.bias[0] = 50.0 if epoch < self.blank_epochs else -50.0


def ctc_run(tiny_speech, out, blank_epochs, **kwargs):
    from tests.test_speech import ctc_data

    data = ctc_data()
    model = mt.TransferModel.from_backbone("audio", tiny_speech("wav2vec2"), labels=data.vocabulary, task="ctc", seed=0)
    args = mt.TrainingArguments(output_dir=str(out), strategy="full", num_epochs=4, learning_rate=1e-3, batch_size=4,
                                eval_batch_size=4, metric_for_best_model="cer", progress_bar=False, report_to=[],
                                plot=False, show_transcripts=False, **kwargs)
    return mt.Trainer(model, args, data, data, callbacks=[ForceBlank(blank_epochs)]).train()


def test_a_ctc_epoch_on_the_all_blank_plateau_is_never_the_best_and_patience_starts_after_it(tiny_speech, tmp_path):
    # without the rule (as before it): the all-blank epoch's CER 1.0 beats every later epoch's, and patience 1 ends
    # the run at epoch 2 holding a model that emits nothing
    old = ctc_run(tiny_speech, tmp_path / "old", blank_epochs=2, ctc_plateau=None, early_stopping_patience=1)
    assert [h["eval_length_ratio"] for h in old.history][:1] == [0.0] and old.history[0]["eval_cer"] == 1.0
    assert old.best_epoch == 1 and len(old.history) == 2 and old.stopped_early
    assert old.flags == ["all_blank"]  # the kept weights emit nothing: flagged
    # with it (the default): epochs 1-2 sit on the plateau, are marked, are not candidates and start no patience
    new = ctc_run(tiny_speech, tmp_path / "new", blank_epochs=2, early_stopping_patience=1)
    assert [bool(h.get("on_plateau")) for h in new.history[:2]] == [True, True]
    assert new.history[2]["eval_length_ratio"] > 1 and new.history[2]["eval_cer"] > 1.0  # garbage, but not blank
    assert new.best_epoch >= 3 and len(new.history) >= 3
    assert new.final_metrics["eval_length_ratio"] > 0.1 and "all_blank" not in new.flags
    record = json.loads((tmp_path / "new" / "metrics.json").read_text())
    assert record["best"]["epoch"] == new.best_epoch and record["history"][0]["on_plateau"] is True
    # a run that never leaves the plateau keeps its last weights and is flagged all-blank
    stuck = ctc_run(tiny_speech, tmp_path / "stuck", blank_epochs=4, early_stopping_patience=1)
    assert stuck.best_epoch is None and len(stuck.history) == 4 and stuck.weights_epoch == 4
    assert stuck.flags == ["all_blank"]
    card = (tmp_path / "stuck" / "model" / "README.md")
    from mtransfer.card import write_model_card

    write_model_card(tmp_path / "stuck")
    assert "- all-blank: its hypotheses were (almost) all empty" in card.read_text()


class BiasSchedule(mt.TrainerCallback):
    """Sets the CTC blank's bias per epoch: +50 holds the head on the all-blank plateau, -50 makes it emit garbage."""

    def __init__(self, biases):
        self.biases = biases

    def on_epoch_begin(self, trainer, epoch):
        import torch

        with torch.no_grad():
            trainer.unwrapped.head.out.bias[0] = self.biases[epoch]


def test_epochs_on_the_plateau_never_use_up_patience(tiny_speech, tmp_path):
    """A random-init baseline on the second corpus emitted garbage at epoch 3 (CER 0.94, its best), sat on the plateau
    for 20 epochs and was stopped by patience 20 at epoch 23; given the patience it learned (test CER 0.81)."""
    from tests.test_speech import ctc_data

    data = ctc_data()
    model = mt.TransferModel.from_backbone("audio", tiny_speech("wav2vec2"), labels=data.vocabulary, task="ctc", seed=0)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "run"), strategy="full", num_epochs=4, learning_rate=1e-3,
                                batch_size=4, eval_batch_size=4, metric_for_best_model="cer", progress_bar=False,
                                report_to=[], plot=False, show_transcripts=False, early_stopping_patience=1)
    # garbage (the first candidate, the best so far), two epochs on the plateau, garbage again
    result = mt.Trainer(model, args, data, data, callbacks=[BiasSchedule([-50.0, 50.0, 50.0, -50.0])]).train()
    assert [bool(h.get("on_plateau")) for h in result.history] == [False, True, True, False]
    assert len(result.history) == 4  # patience 1 used to end the run at epoch 2, on the plateau
    assert result.best_epoch in (1, 4) and result.stopped_early is False  # never one of the plateau epochs


def test_a_run_with_patience_whose_last_epoch_is_its_best_is_flagged_improving_at_its_cap(tiny_bert, topic_data,
                                                                                          tmp_path):
    train = mt.load_labeled(topic_data[0])
    valid = mt.load_labeled(topic_data[1], label_names=train.label_names)

    def run(out, **kw):
        model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0)
        args = mt.TrainingArguments(output_dir=str(out), strategy="frozen", num_epochs=3, learning_rate=1e-3,
                                    metric_for_best_model="loss", progress_bar=False, report_to=[], plot=False, **kw)
        return mt.Trainer(model, args, train, valid).train()

    capped = run(tmp_path / "a", early_stopping_patience=5)  # a slow head: its loss falls every epoch
    assert capped.best_epoch == 3 and capped.flags == ["improving_at_cap"]
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["flags"] == ["improving_at_cap"]
    assert run(tmp_path / "b").flags == []  # no patience asked for: the epochs were the budget, nothing to say


def test_a_run_says_first_how_many_processes_and_threads_it_trains_on(tiny_bert, topic_data, tmp_path, capsys):
    import torch

    train = mt.load_labeled(topic_data[0])
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0)
    before = torch.get_num_threads()
    try:
        args = mt.TrainingArguments(output_dir=str(tmp_path), strategy="frozen", num_epochs=1, num_threads=1,
                                    progress_bar=False, report_to=[], plot=False, save_checkpoints=False)
        mt.Trainer(model, args, train).train()
    finally:
        torch.set_num_threads(before)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "training on 1 process(es) x 1 torch thread(s), cpu (TrainingArguments.num_threads sets the threads)"
    assert lines[1].startswith("head learning rate ") and "on 3-fold cross-validation of the training data" in lines[1]
    assert lines[2].startswith("epoch 1/1 [head]")


@pytest.mark.parametrize("setting, expected", [("auto", "frozen"), ("frozen", "frozen"), ("update", "update")])
def test_batchnorm_statistics_stay_frozen_on_small_data(setting, expected, shape_data, tmp_path):
    """A BN backbone fine-tuned on a few images replaced its pretrained statistics with those of a few small batches
    (two-stage on EfficientNet-Lite0: the loss jumped from 0.44 to 2.00 at the unfreeze)."""
    from tests.tiny import make_small_cnn

    train = mt.load_labeled(shape_data[0], input_column="image")
    val = mt.load_labeled(shape_data[1], input_column="image", label_names=train.label_names)
    torch.manual_seed(0)
    model = mt.TransferModel.from_backbone("torch", make_small_cnn(), labels=train.label_names, image_size=32, seed=0)
    norm = model.adapter.backbone.norm
    before = (norm.running_mean.clone(), norm.running_var.clone(), norm.weight.detach().clone())
    args = mt.TrainingArguments(output_dir=str(tmp_path / "run"), strategy="full", num_epochs=2, learning_rate=1e-2,
                                batch_size=12, batchnorm_stats=setting, progress_bar=False, report_to=[], plot=False,
                                save_checkpoints=False)
    trainer = mt.Trainer(model, args, train, val)
    trainer.train()
    kept = torch.equal(norm.running_mean, before[0]) and torch.equal(norm.running_var, before[1])
    assert kept is (expected == "frozen")
    assert not torch.equal(norm.weight.detach(), before[2])  # its scale trains either way
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["batchnorm_stats"] == expected


def test_batchnorm_auto_updates_on_large_data_and_says_nothing_without_batch_norm(tiny_bert):
    from mtransfer.training import SMALL_DATA, resolve_batchnorm_stats
    from tests.tiny import make_small_cnn

    cnn = mt.TransferModel.from_backbone("torch", make_small_cnn(), labels=["a", "b"], image_size=32)
    assert resolve_batchnorm_stats("auto", cnn, SMALL_DATA - 1) == "frozen"
    assert resolve_batchnorm_stats("auto", cnn, SMALL_DATA) == "update"
    text = mt.TransferModel.from_backbone("text", tiny_bert, labels=["a", "b"])
    assert resolve_batchnorm_stats("frozen", text, 10) is None
    with pytest.raises(ValueError, match="batchnorm_stats='fixed': expected 'auto', 'frozen' or 'update'"):
        mt.TrainingArguments(batchnorm_stats="fixed")
