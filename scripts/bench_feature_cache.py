"""Frozen-backbone training: mtransfer with the feature cache vs without it vs Hugging Face Trainer.

Part 1, speed: 10 epochs of frozen training (head only, evaluation each epoch) of the real
MiniLM-L6 on fortunes topics (240 train / 120 validation texts), in one run:

* mtransfer, ``cache_features=True`` (extraction included, cold cache);
* mtransfer, ``cache_features=False`` (a backbone forward pass per batch, as everyone else does);
* transformers ``Trainer`` with ``AutoModelForSequenceClassification`` and the encoder frozen.

Part 2, memory: a head trains for one epoch from a cache larger than half of a memory budget
(default: 300,000 x 384 float32 = 440 MiB against a 768 MiB budget). The cache is read through
memory maps, so the process's private memory stays far below the cache's size; the script
reports the peak private (anonymous) resident memory, sampled every 20 ms, against the budget.

    .venv/bin/python scripts/bench_feature_cache.py [--epochs 10] [--rows 300000] [--budget-mib 768]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MAX_LEN, BATCH, LR, SEED = 64, 16, 5e-3, 0


def data():
    import mtransfer as mt
    from mtransfer.builtins.corpora import fortunes_splits

    splits = fortunes_splits()
    train = mt.load_labeled(splits["train"])
    return train, mt.load_labeled(splits["validation"], label_names=train.label_names)


def run_mtransfer(epochs: int, cached: bool, cache_dir: str) -> tuple[float, float]:
    import mtransfer as mt
    from mtransfer.builtins import minilm_path

    train, valid = data()
    model = mt.TransferModel.from_backbone("text", minilm_path(), labels=train.label_names, seed=SEED, max_length=MAX_LEN)
    with tempfile.TemporaryDirectory() as out:
        args = mt.TrainingArguments(output_dir=out, strategy="frozen", num_epochs=epochs, learning_rate=LR, batch_size=BATCH,
                                    eval_batch_size=64, seed=SEED, progress_bar=False, report_to=[], plot=False,
                                    save_checkpoints=False, cache_features=cached, cache_dir=cache_dir)
        start = time.perf_counter()
        result = mt.Trainer(model, args, train, valid).train()
        return time.perf_counter() - start, result.final_metrics["eval_accuracy"]


def hf_encode(tok, ds):
    """A dataset as transformers' Trainer reads it: tokenized to MAX_LEN (padded per batch by its collator), labels."""
    from datasets import Dataset

    enc = tok(ds.inputs, truncation=True, max_length=MAX_LEN)
    return Dataset.from_dict({**enc, "labels": ds.targets.tolist()})


def hf_accuracy(pred):
    import numpy as np

    return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}


def run_hf_trainer(epochs: int) -> tuple[float, float]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    from mtransfer.builtins import minilm_path

    train, valid = data()
    path = minilm_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(train.label_names))
    for p in model.base_model.parameters():
        p.requires_grad_(False)

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, num_train_epochs=epochs, per_device_train_batch_size=BATCH,
                                 per_device_eval_batch_size=64, learning_rate=LR, eval_strategy="epoch",
                                 save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
                                 seed=SEED, use_cpu=True)
        trainer = Trainer(model=model, args=args, train_dataset=hf_encode(tok, train), eval_dataset=hf_encode(tok, valid),
                          processing_class=tok, compute_metrics=hf_accuracy)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        return seconds, trainer.evaluate()["eval_accuracy"]


def private_memory_mib() -> float:
    """Anonymous (private) resident memory of this process; memory-mapped file pages are not counted."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(rows: int, budget_mib: int, cache_dir: str) -> None:
    """Fill a cache of ``rows`` random features under the key the trainer will ask for, then train from it."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    import mtransfer as mt
    from mtransfer.atomic import atomic_write_json
    from mtransfer.cache import FeatureCache
    from mtransfer.builtins import minilm_path

    labels = ["a", "b", "c", "d", "e"]
    texts = [f"text {i}" for i in range(rows)]
    train = mt.LabeledDataset(texts, torch.from_numpy(np.random.default_rng(0).integers(0, 5, rows)), task="single_label_classification",
                              label_names=labels, source="synthetic")
    model = mt.TransferModel.from_backbone("text", minilm_path(), labels=labels, seed=SEED, max_length=MAX_LEN)
    cache = FeatureCache(cache_dir)  # the trainer's own settings, so its key matches
    key = cache.key(model.adapter, texts)
    path = cache.entry_path(key)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    num_shards = -(-rows // cache.shard_size)
    for s in range(num_shards):
        n = min(cache.shard_size, rows - s * cache.shard_size)
        save_file({"features": torch.from_numpy(rng.standard_normal((n, model.adapter.embedding_dim), dtype=np.float32))},
                  str(path / f"shard_{s:05d}.safetensors"))
    atomic_write_json(path / "meta.json", {"key": key, "complete": True, "num_rows": rows, "dim": model.adapter.embedding_dim,
                                           "shard_size": cache.shard_size, "num_shards": num_shards})
    cache_mib = rows * model.adapter.embedding_dim * 4 / 2**20
    base = private_memory_mib()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], private_memory_mib())
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    with tempfile.TemporaryDirectory() as out:
        args = mt.TrainingArguments(output_dir=out, strategy="frozen", num_epochs=1, learning_rate=1e-3, batch_size=256,
                                    progress_bar=False, report_to=[], plot=False, save_checkpoints=False, cache_dir=cache_dir)
        start = time.perf_counter()
        trainer = mt.Trainer(model, args, train)
        trainer.train()
        seconds = time.perf_counter() - start
    done.set()
    assert trainer.feature_cache.hits == 1 and trainer.feature_cache.misses == 0, "the benchmark cache was not used"
    print(json.dumps({"rows": rows, "cache_mib": cache_mib, "budget_mib": budget_mib, "private_mib_before": base,
                      "private_mib_peak": peak[0], "private_mib_growth": peak[0] - base, "train_seconds": seconds}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--rows", type=int, default=300_000)
    p.add_argument("--budget-mib", type=int, default=768)
    p.add_argument("--json", default=None)
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.memory_child:
        memory_child(a.rows, a.budget_mib, a.cache_dir)
        return 0

    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        figures["cached_s"], figures["cached_acc"] = run_mtransfer(a.epochs, True, cache_dir)
        print(f"mtransfer, cached   : {figures['cached_s']:6.1f}s  accuracy {figures['cached_acc']:.3f}", flush=True)
    with tempfile.TemporaryDirectory() as cache_dir:
        figures["uncached_s"], figures["uncached_acc"] = run_mtransfer(a.epochs, False, cache_dir)
        print(f"mtransfer, uncached : {figures['uncached_s']:6.1f}s  accuracy {figures['uncached_acc']:.3f}", flush=True)
    figures["hf_s"], figures["hf_acc"] = run_hf_trainer(a.epochs)
    print(f"transformers Trainer: {figures['hf_s']:6.1f}s  accuracy {figures['hf_acc']:.3f}", flush=True)
    figures["uncached_over_cached"] = figures["uncached_s"] / figures["cached_s"]
    figures["hf_over_cached"] = figures["hf_s"] / figures["cached_s"]
    print(f"\n{a.epochs} frozen epochs, MiniLM-L6, 240 train / 120 validation texts, CPU")
    print(f"  speed-up of the cache over uncached mtransfer : {figures['uncached_over_cached']:.1f}x  (target >= 6x)")
    print(f"  speed-up of the cache over transformers Trainer: {figures['hf_over_cached']:.1f}x")

    with tempfile.TemporaryDirectory() as cache_dir:
        out = subprocess.run([sys.executable, __file__, "--memory-child", "--rows", str(a.rows), "--budget-mib",
                              str(a.budget_mib), "--cache-dir", cache_dir], capture_output=True, text=True, check=True)
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    figures.update({f"memory_{k}": v for k, v in mem.items()})
    print(f"\ntraining a head from a {mem['cache_mib']:.0f} MiB cache ({mem['rows']:,} rows) with a {a.budget_mib} MiB budget:")
    print(f"  private memory {mem['private_mib_before']:.0f} MiB before, peak {mem['private_mib_peak']:.0f} MiB "
          f"(+{mem['private_mib_growth']:.0f} MiB) in {mem['train_seconds']:.1f}s -> "
          f"{'within' if mem['private_mib_peak'] <= a.budget_mib else 'OVER'} budget")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
