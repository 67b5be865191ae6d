"""Bytes a run's checkpoints leave on disk: MiniLM-L6 (builtin:minilm) on fortunes topics, two-stage.

Trains the same run once per ``save_checkpoints`` setting and reports, next to the model's own
size, each epoch's checkpoint as written, the total written and what stays on disk, in model
copies. The baseline is the earlier default (every epoch's full checkpoint, the latest two and
the best kept: ``save_checkpoints="all", save_total_limit=2``), measured in the same run. From the
repository root:

    .venv/bin/python scripts/bench_checkpoint_size.py [--epochs 4] [--head-epochs 2] [--output-dir /tmp/bench_ckpt]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import mtransfer as mt
from mtransfer.builtins import DATA

SETTINGS = {"before (all, latest 2 + best)": {"save_checkpoints": "all", "save_total_limit": 2},
            "best (default)": {"save_checkpoints": "best"},
            "last": {"save_checkpoints": "last"}}


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


class Sizes(mt.TrainerCallback):
    def __init__(self, root: Path) -> None:
        self.root, self.sizes = root, []

    def on_epoch_end(self, trainer, epoch, record) -> None:
        self.sizes.append(folder_bytes(self.root / "checkpoints" / f"epoch_{epoch + 1}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--head-epochs", type=int, default=2)
    ap.add_argument("--strategy", default="two_stage")
    ap.add_argument("--output-dir", default="/tmp/bench_ckpt")
    a = ap.parse_args()
    splits = DATA["builtin:fortunes"].splits()
    train = mt.load_labeled(splits["train"])
    val = mt.load_labeled(splits["validation"], label_names=train.label_names)
    rows = []
    for name, keep in SETTINGS.items():
        out = Path(a.output_dir) / keep["save_checkpoints"]
        shutil.rmtree(out, ignore_errors=True)
        model = mt.TransferModel.from_backbone("text", "builtin:minilm", labels=train.label_names, seed=0, max_length=96)
        args = mt.TrainingArguments(output_dir=str(out), strategy=a.strategy, num_epochs=a.epochs,
                                    head_epochs=a.head_epochs, learning_rate=5e-5, batch_size=16, progress_bar=False,
                                    report_to=[], plot=False, **keep)
        sizes = Sizes(out)
        start = time.perf_counter()
        result = mt.Trainer(model, args, train, val, callbacks=[sizes]).train()
        model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        left = folder_bytes(out / "checkpoints")
        rows.append({"setting": name, **keep, "model_mb": round(model_bytes / 2**20, 1),
                     "checkpoint_mb": [round(s / 2**20, 1) for s in sizes.sizes],
                     "written_mb": round(sum(sizes.sizes) / 2**20, 1), "left_mb": round(left / 2**20, 1),
                     "left_model_copies": round(left / model_bytes, 2),
                     "kept": sorted(p.name for p in (out / "checkpoints").iterdir()),
                     "best_epoch": result.best_epoch, "eval_accuracy": result.final_metrics.get("eval_accuracy"),
                     "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| setting | kept | left on disk | model copies |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {', '.join(r['kept'])} | {r['left_mb']} MB | {r['left_model_copies']} |")


if __name__ == "__main__":
    main()
