"""CTC training and inference throughput of the speech presets, and the feature cache's gain, measured in one run.

Reports utterances per second for training steps (forward, backward, AdamW) and for inference,
on synthetic clips of a fixed length, for each preset and precision, plus the ratio of each row
to the first (fp32) row of its preset. A head-only (frozen encoder) step is timed too: the
cost a head-only phase pays per step when it recomputes features.

Then, through the real Trainer, a head-only (``frozen``) CTC run over ``--cache-clips`` clips
twice: reading cached frame features (one extraction pass, then the head alone) and recomputing
the frozen encoder every epoch. Reports seconds per epoch of each and their ratio.

    .venv/bin/python scripts/bench_ctc.py [--presets w2v-bert-small,wav2vec2-tiny,wav2vec2-small] [--seconds 3]
        [--batch-size 8] [--steps 5] [--precisions fp32,bf16] [--device cpu|cuda] [--cache-clips 64] [--cache-epochs 4]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def bench(preset: str, precision: str, device: str, seconds: float, batch_size: int, steps: int, head_only: bool) -> dict:
    import mtransfer as mt
    from mtransfer.speech.vocabulary import Vocabulary

    vocab = Vocabulary.from_texts(["abcdefghijklmnopqrstuvwxyz"])
    torch.manual_seed(0)
    model = mt.TransferModel.from_backbone("audio", f"builtin:{preset}", labels=vocab, task="ctc", seed=0).to(device)
    head = len(model.layer_groups()) - 1
    model.set_trainable([head] if head_only else range(head + 1))
    clips = [(torch.randn(int(16000 * seconds)).numpy() * 0.1, 16000) for _ in range(batch_size)]
    batch = {k: v.to(device) for k, v in model.adapter.preprocess(clips, training=True).items()}
    labels = torch.randint(3, len(vocab), (batch_size, int(seconds * 8)), device=device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")

    def step() -> None:
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            loss = model(batch, labels).loss
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    model.train()
    step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    train = batch_size * steps / (time.perf_counter() - start)
    model.eval()
    with torch.no_grad(), torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
        model(batch)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            model(batch)
        sync()
    infer = batch_size * steps / (time.perf_counter() - start)
    return {"preset": preset, "precision": precision, "device": device, "phase": "head only" if head_only else "full",
            "train_utt_per_s": round(train, 2), "infer_utt_per_s": round(infer, 2)}


def bench_cache(preset: str, device: str, clips: int, seconds: float, epochs: int, batch_size: int) -> dict:
    """Seconds per head-only CTC epoch (train + validation) from cached frames vs recomputing the encoder."""
    import tempfile

    import numpy as np

    import mtransfer as mt

    rng = np.random.default_rng(0)
    words = ["abc", "de", "fgh", "ij", "klm", "no", "pqr", "st"]
    rows = [{"audio": (rng.standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1, 16000),
             "text": " ".join(rng.choice(words, 3))} for _ in range(clips)]
    data = mt.load_labeled(rows, input_column="audio", label_column="text", task="ctc")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cached in (True, False):
            model = mt.TransferModel.from_backbone("audio", f"builtin:{preset}", labels=data.vocabulary, task="ctc", seed=0)
            args = mt.TrainingArguments(output_dir=f"{tmp}/{cached}", strategy="frozen", num_epochs=epochs,
                                        learning_rate=1e-2, batch_size=batch_size, eval_batch_size=batch_size,
                                        progress_bar=False, report_to=[], plot=False, save_checkpoints=False,
                                        cache_features=cached, cache_dir=f"{tmp}/cache", show_transcripts=False,
                                        cpu=device == "cpu")
            start = time.perf_counter()
            result = mt.Trainer(model, args, data, data).train()
            total = time.perf_counter() - start
            later = [h["seconds"] for h in result.history[1:]]
            out["cached" if cached else "recomputed"] = {"total_s": round(total, 2), "train_epoch_s_after_first": round(float(np.mean(later)), 3)}
    ratio = out["recomputed"]["train_epoch_s_after_first"] / max(out["cached"]["train_epoch_s_after_first"], 1e-9)
    return {"preset": preset, "device": device, "clips": clips, "epochs": epochs, **out,
            "head_only_epoch_speedup_from_cache": round(ratio, 1),
            "whole_run_speedup_from_cache": round(out["recomputed"]["total_s"] / out["cached"]["total_s"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="w2v-bert-small,wav2vec2-tiny,wav2vec2-small")
    ap.add_argument("--precisions", default="fp32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--cache-clips", type=int, default=64, help="clips of the cached-vs-recomputed head-only run (0: skip)")
    ap.add_argument("--cache-epochs", type=int, default=4)
    a = ap.parse_args()
    rows = []
    for preset in a.presets.split(","):
        base = None
        for precision in a.precisions.split(","):
            for head_only in (False, True):
                row = bench(preset, precision, a.device, a.seconds, a.batch_size, a.steps, head_only)
                base = base or row["train_utt_per_s"]
                row["train_ratio_to_first_row"] = round(row["train_utt_per_s"] / base, 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
    if a.cache_clips:
        for preset in a.presets.split(","):
            print(json.dumps(bench_cache(preset, a.device, a.cache_clips, a.seconds, a.cache_epochs, a.batch_size)), flush=True)
    name = torch.cuda.get_device_name() if a.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(json.dumps({"device_name": name, "seconds_per_clip": a.seconds, "batch_size": a.batch_size}))


if __name__ == "__main__":
    main()
