"""Bytes a frozen probe's checkpoints take: MiniLM-L6 (builtin:minilm) on fortunes topics, 8 epochs.

Reports the size of each epoch's checkpoint as written, the total written over the run and what
stays on disk, next to the model's own size. Run from the repository root:

    .venv/bin/python scripts/bench_checkpoint_size.py [--epochs 8] [--output-dir /tmp/bench_ckpt]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import mtransfer as mt
from mtransfer.builtins import DATA


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Sizes(mt.TrainerCallback):
    def __init__(self, root: Path) -> None:
        self.root, self.sizes = root, []

    def on_epoch_end(self, trainer, epoch, record) -> None:
        self.sizes.append(folder_bytes(self.root / "checkpoints" / f"epoch_{epoch + 1}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--strategy", default="frozen")
    ap.add_argument("--output-dir", default="/tmp/bench_ckpt")
    a = ap.parse_args()
    out = Path(a.output_dir)
    shutil.rmtree(out, ignore_errors=True)
    splits = DATA["builtin:fortunes"].splits()
    train = mt.load_labeled(splits["train"])
    val = mt.load_labeled(splits["validation"], label_names=train.label_names)
    model = mt.TransferModel.from_backbone("text", "builtin:minilm", labels=train.label_names, seed=0, max_length=96)
    args = mt.TrainingArguments(output_dir=str(out), strategy=a.strategy, num_epochs=a.epochs, learning_rate=5e-3,
                                warmup_ratio=0.0, batch_size=16, save_checkpoints=True, save_total_limit=2,
                                progress_bar=False, report_to=[], plot=False)
    sizes = Sizes(out)
    start = time.perf_counter()
    mt.Trainer(model, args, train, val, callbacks=[sizes]).train()
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"strategy": a.strategy, "epochs": a.epochs, "model_mb": round(model_bytes / 2**20, 1),
                      "checkpoint_mb": [round(s / 2**20, 3) for s in sizes.sizes],
                      "written_mb": round(sum(sizes.sizes) / 2**20, 1),
                      "left_mb": round(folder_bytes(out / "checkpoints") / 2**20, 1),
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
