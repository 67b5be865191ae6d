"""The partial-network cache: last-2-of-6 training of MiniLM-L6, cached vs recomputing vs transformers' Trainer.

10 epochs of ``last_n=2`` (the top two of MiniLM-L6's six blocks and the head train; the
embeddings and blocks 0-3 stay frozen), evaluation each epoch, the real MiniLM-L6 on fortunes
topics (240 train / 120 validation texts, 64 tokens), batch 16, in one run:

* mtransfer, partial cache on (the default; extraction from a cold cache included);
* mtransfer, ``partial_cache_gb=0`` (the frozen blocks run on every batch, as everyone else does);
* transformers ``Trainer`` with ``AutoModelForSequenceClassification``, the same blocks frozen
  (its pooler and classifier train), dynamic padding, no checkpoints.

Each run's per-epoch seconds are printed beside the total, so the profile shows where the time
goes: the extraction (one pass of the lower part over training and validation data) and the
epochs (the top two blocks forward and backward, the evaluation's forward).

    .venv/bin/python scripts/bench_partial_cache.py [--epochs 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_feature_cache import MAX_LEN, data, hf_accuracy, hf_encode  # noqa: E402  (the same data and encoding)

BATCH, LR, SEED, LAST_N = 16, 1e-4, 0, 2


def run_mtransfer(epochs: int, partial_gb: float, cache_dir: str) -> dict:
    import mtransfer as mt
    from mtransfer.builtins import minilm_path

    class Clock(mt.TrainerCallback):
        """Each epoch's wall time, its evaluation included (the record's ``seconds`` is its training alone)."""

        def __init__(self):
            self.walls: list[float] = []

        def on_epoch_begin(self, trainer, epoch):
            self.began = time.perf_counter()

        def on_epoch_end(self, trainer, epoch, record):
            self.walls.append(time.perf_counter() - self.began)

    train, valid = data()
    model = mt.TransferModel.from_backbone("text", minilm_path(), labels=train.label_names, seed=SEED, max_length=MAX_LEN)
    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        args = mt.TrainingArguments(output_dir=out, strategy="last_n", last_n=LAST_N, num_epochs=epochs, learning_rate=LR,
                                    batch_size=BATCH, eval_batch_size=64, seed=SEED, progress_bar=False, report_to=[],
                                    plot=False, save_checkpoints="none", cache_dir=cache_dir, partial_cache_gb=partial_gb)
        trainer = mt.Trainer(model, args, train, valid, callbacks=[clock])
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
    epochs_s = [round(r["seconds"], 2) for r in result.history]
    evaluation = sum(clock.walls) - sum(r["seconds"] for r in result.history)
    return {"seconds": seconds, "accuracy": result.final_metrics["eval_accuracy"], "epoch_seconds": epochs_s,
            "training_s": round(sum(epochs_s), 2), "evaluation_s": round(evaluation, 2),
            "outside_epochs_s": round(seconds - sum(clock.walls), 2), "partial_cache": trainer.partial_cache}


def run_hf_trainer(epochs: int) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    from mtransfer.builtins import minilm_path

    train, valid = data()
    path = minilm_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(train.label_names))
    layers = model.base_model.encoder.layer
    for p in model.base_model.embeddings.parameters():
        p.requires_grad_(False)
    for layer in layers[:len(layers) - LAST_N]:
        for p in layer.parameters():
            p.requires_grad_(False)

    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, num_train_epochs=epochs, per_device_train_batch_size=BATCH,
                                 per_device_eval_batch_size=64, learning_rate=LR, eval_strategy="epoch",
                                 save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
                                 seed=SEED, use_cpu=True, lr_scheduler_type="constant")
        trainer = Trainer(model=model, args=args, train_dataset=hf_encode(tok, train), eval_dataset=hf_encode(tok, valid),
                          processing_class=tok, compute_metrics=hf_accuracy, callbacks=[Clock()])
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        accuracy_ = trainer.evaluate()["eval_accuracy"]
    epochs_s = [round(b - a, 2) for a, b in zip([start, *marks[:-1]], marks)]
    return {"seconds": seconds, "accuracy": accuracy_, "epoch_seconds": epochs_s}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        runs["cached"] = run_mtransfer(a.epochs, 8.0, cache_dir)
    with tempfile.TemporaryDirectory() as cache_dir:
        runs["recomputed"] = run_mtransfer(a.epochs, 0, cache_dir)
    runs["hf_trainer"] = run_hf_trainer(a.epochs)
    print(f"\n{a.epochs} epochs of last-{LAST_N}-of-6, MiniLM-L6, 240 train / 120 validation texts, CPU "
          f"({os.cpu_count()} cores)")
    for name, r in runs.items():
        print(f"  {name:<11} {r['seconds']:6.1f} s  accuracy {r['accuracy']:.3f}  epochs (s): {r['epoch_seconds']}")
        if "training_s" in r:  # mtransfer: where the time goes
            print(f"  {'':<11} training {r['training_s']:.1f} s, evaluation {r['evaluation_s']:.1f} s, outside the "
                  f"epochs {r['outside_epochs_s']:.1f} s (set-up, extraction, final evaluation, saving the model)")
    cached = runs["cached"]["seconds"]
    print(f"  recomputing / cached        : {runs['recomputed']['seconds'] / cached:.2f}x  (target >= 3x)")
    print(f"  transformers Trainer / cached: {runs['hf_trainer']['seconds'] / cached:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
