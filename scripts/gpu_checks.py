"""GPU figures in one short, bounded run: mtransfer against transformers' Trainer, speech CTC throughput, the matrix's cost.

Three parts, each in its own process with its own time budget (a part that runs past it is ended and
reported as such; the parts after it still run), the results written to ``--output`` after every
measurement, so a run cut short keeps what it measured:

- ``minilm``: one epoch of full MiniLM-L6 fine-tuning (the real weights, fortunes topics, mean pooling,
  linear head, AdamW, linear schedule, dynamic padding, no evaluation) through mtransfer's Trainer and
  through transformers' ``Trainer`` on the same model, data, batch size and schedule, in fp32 and bf16:
  texts per second of each, and the ratio mtransfer / Trainer of epoch times (below 1: mtransfer faster);
- ``ctc``: training and inference utterances per second of the w2v-BERT speech presets (synthetic 4 s
  clips, fp32 and bf16), as ``scripts/bench_ctc.py`` measures them;
- ``matrix``: a reduced transfer matrix (2 sources, 1 target, 1 seed) with ``--matrix-workers`` workers on
  the one GPU: seconds per run (cell) and the estimated cost of the full matrix with 5 seeds at its defaults.

    .venv/bin/python scripts/gpu_checks.py --output gpu_checks.json            # on a GPU machine (~8 min)
    .venv/bin/python scripts/gpu_checks.py --tiny --output /tmp/gpu_checks.json  # CPU, tiny models: a dry run

``--budgets minilm=180,ctc=120,matrix=240`` sets each part's seconds. ``--tiny`` runs every part on CPU with a
tiny random BERT (the MiniLM tokenizer), the tiny wav2vec2 preset and a 24-utterance corpus: the script's own
test, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("minilm", "ctc", "matrix")
BUDGETS = {"minilm": 180.0, "ctc": 120.0, "matrix": 240.0}
BATCH, LR, MAX_LEN, SEED = 32, 5e-5, 64, 0


def write(path: Path, figures: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(figures, indent=2) + "\n")
    os.replace(tmp, path)


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"


# --- part: MiniLM fine-tuning, mtransfer against transformers' Trainer -------------------------------------------

def tiny_text_model(folder: Path) -> str:
    """A 2-layer random BERT with MiniLM's tokenizer (``--tiny``)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mtransfer.builtins import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path())
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def fresh_accelerate_state() -> None:
    """Both trainers build an Accelerator, whose state is one per process; precision may differ between runs."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def hf_trainer_epoch(rows: list[dict], labels: list[str], path: str, precision: str, out: str) -> float:
    """One epoch through transformers' Trainer: the same encoder, mean pooling and linear head as mtransfer's model."""
    import torch
    from transformers import AutoModel, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    tok = AutoTokenizer.from_pretrained(path)
    index = {name: i for i, name in enumerate(labels)}

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(path)
            self.drop = torch.nn.Dropout(0.1)
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, len(labels))

        def forward(self, input_ids, attention_mask, labels=None, token_type_ids=None):
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            logits = self.head(self.drop((h * m).sum(1) / m.sum(1).clamp(min=1)))
            return {"loss": torch.nn.functional.cross_entropy(logits.float(), labels), "logits": logits}

    data = [{**tok(r["text"], truncation=True, max_length=MAX_LEN), "labels": index[r["label"]]} for r in rows]

    class Timer(TrainerCallback):
        def on_train_begin(self, *a, **k):
            self.began = time.perf_counter()

        def on_train_end(self, *a, **k):
            self.seconds = time.perf_counter() - self.began

    timer = Timer()
    warmup = round(0.1 * -(-len(rows) // BATCH))  # transformers 5 takes warmup in steps
    args = TrainingArguments(output_dir=out, num_train_epochs=1, per_device_train_batch_size=BATCH, learning_rate=LR,
                             weight_decay=0.01, lr_scheduler_type="linear", warmup_steps=warmup, max_grad_norm=1.0,
                             bf16=precision == "bf16", optim="adamw_torch", eval_strategy="no", save_strategy="no",
                             logging_strategy="no", report_to=[], seed=SEED, disable_tqdm=True,
                             use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0)
    Trainer(model=MeanPooled(), args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tok),
            callbacks=[timer]).train()
    return timer.seconds


def mtransfer_epoch(rows: list[dict], labels: list[str], path: str, precision: str, out: str) -> float:
    import mtransfer as mt

    class EpochTimer(mt.TrainerCallback):
        def on_epoch_end(self, trainer, epoch, record):
            self.seconds = record["seconds"]

    train = mt.load_labeled(rows, label_names=labels)
    model = mt.TransferModel.from_backbone("text", path, labels=labels, seed=SEED, max_length=MAX_LEN)
    args = mt.TrainingArguments(output_dir=out, strategy="full", num_epochs=1, learning_rate=LR, batch_size=BATCH,
                                lr_schedule="linear", warmup_ratio=0.1, seed=SEED, progress_bar=False, report_to=[],
                                save_checkpoints=False, plot=False, mixed_precision="bf16" if precision == "bf16" else "no")
    timer = EpochTimer()
    fresh_accelerate_state()
    mt.Trainer(model, args, train, callbacks=[timer]).train()
    return timer.seconds


def part_minilm(a: argparse.Namespace, figures: dict, save) -> None:
    import torch

    from mtransfer.builtins import minilm_path
    from mtransfer.builtins.corpora import fortunes_splits

    rows = fortunes_splits()["train"]
    labels = sorted({r["label"] for r in rows})
    rows = rows * a.text_repeats  # enough steps that one epoch outlasts the start-up of the GPU kernels
    precisions = ["fp32", "bf16"] if (a.tiny or torch.cuda.is_available()) else ["fp32"]
    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_text_model(Path(tmp) / "tiny") if a.tiny else minilm_path()
        figures.update(model="tiny random BERT" if a.tiny else "MiniLM-L6 (all-MiniLM-L6-v2)", texts=len(rows),
                       batch_size=BATCH, max_length=MAX_LEN, device=device_name(), runs={})
        for precision in precisions:
            mtransfer_epoch(rows[:BATCH * 2], labels, path, precision, f"{tmp}/warm")  # imports, kernels, allocator
            seconds = {"mtransfer": [], "hf_trainer": []}
            for i in range(a.repeats):  # interleaved, so both see the same machine state
                seconds["hf_trainer"].append(hf_trainer_epoch(rows, labels, path, precision, f"{tmp}/hf{i}"))
                seconds["mtransfer"].append(mtransfer_epoch(rows, labels, path, precision, f"{tmp}/mt{i}"))
                best = {k: min(v) for k, v in seconds.items()}
                figures["runs"][precision] = {
                    "epoch_s": {k: round(v, 3) for k, v in best.items()},
                    "texts_per_s": {k: round(len(rows) / v, 1) for k, v in best.items()},
                    "ratio_mtransfer_over_trainer": round(best["mtransfer"] / best["hf_trainer"], 3), "repeats": i + 1}
                save()


# --- part: CTC throughput of the speech presets -------------------------------------------------------------------

def part_ctc(a: argparse.Namespace, figures: dict, save) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_ctc import bench

    device = "cuda" if torch.cuda.is_available() else "cpu"
    presets = ["wav2vec2-tiny"] if a.tiny else ["w2v-bert-small", "w2v-bert-mini"]
    seconds, batch, steps = (1.0, 2, 2) if a.tiny else (4.0, 8, 10)
    figures.update(device=device_name(), clip_seconds=seconds, batch_size=batch, rows=[])
    for preset in presets:
        for precision in ("fp32", "bf16"):
            figures["rows"].append(bench(preset, precision, device, seconds, batch, steps, head_only=False))
            save()


# --- part: the transfer matrix's time per run with workers on one GPU ---------------------------------------------

def part_matrix(a: argparse.Namespace, figures: dict, save) -> None:
    from mtransfer.experiments.transfer_matrix import MatrixSettings, espeak_corpus, plan_cells, run_transfer_matrix

    defaults = MatrixSettings()
    if a.tiny:
        settings = MatrixSettings(sources=("bn", "hi"), targets=("as",), seeds=(0,), model="builtin:wav2vec2-tiny",
                                  source_utterances=10, target_utterances=4, source_epochs=1, target_epochs=1,
                                  scratch_epochs=1, batch_size=4, pooled=False)
        per_language = 24
    else:
        settings = MatrixSettings(sources=defaults.sources[:2], targets=defaults.targets[:1], seeds=(0,), pooled=False)
        per_language = 400
    figures.update(device=device_name(), workers=a.matrix_workers, sources=list(settings.sources),
                   targets=list(settings.targets), model=settings.model)
    began = time.perf_counter()
    corpus = espeak_corpus(settings.languages, per_language)
    figures["corpus_s"] = round(time.perf_counter() - began, 1)
    save()
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        matrix = run_transfer_matrix(settings, tmp, corpus=corpus, workers=a.matrix_workers, log=None)
        wall = time.perf_counter() - began
    train = [float(c.results["train_seconds"]) for c in matrix.cells]
    full = len(plan_cells(MatrixSettings(seeds=tuple(range(5)))))
    per_cell = wall / len(matrix.cells)
    figures.update(cells=len(matrix.cells), wall_s=round(wall, 1), wall_s_per_cell=round(per_cell, 1),
                   train_s_per_cell_mean=round(sum(train) / len(train), 1),
                   full_matrix_5_seeds={"cells": full, "estimated_hours": round(full * per_cell / 3600, 2),
                                        "note": "wall seconds per cell of this reduced matrix times the cells of the "
                                                "default matrix with 5 seeds; source runs (larger budget) cost more "
                                                "than the average, so read it as a lower bound"})
    save()


def run_part(name: str, a: argparse.Namespace, out: Path) -> None:
    """One part in this process, writing ``out`` after every measurement."""
    figures: dict = {"status": "running"}
    save = lambda: write(out, figures)  # noqa: E731
    save()
    {"minilm": part_minilm, "ctc": part_ctc, "matrix": part_matrix}[name](a, figures, save)
    figures["status"] = "done"
    save()


def parse_budgets(text: str) -> dict[str, float]:
    budgets = dict(BUDGETS)
    for pair in filter(None, text.split(",")):
        key, _, value = pair.partition("=")
        if key not in PARTS:
            raise SystemExit(f"gpu_checks.py: error: --budgets {pair!r}: parts are {', '.join(PARTS)}.")
        budgets[key] = float(value)
    return budgets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default="gpu_checks.json")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS))
    ap.add_argument("--budgets", default="", help="seconds per part, e.g. minilm=180,ctc=120,matrix=240")
    ap.add_argument("--tiny", action="store_true", help="tiny models on CPU: a dry run of every part")
    ap.add_argument("--repeats", type=int, default=2, help="minilm: interleaved epochs of each trainer (best kept)")
    ap.add_argument("--text-repeats", type=int, default=4, help="minilm: copies of the 240 training texts per epoch")
    ap.add_argument("--matrix-workers", type=int, default=4, help="matrix: worker processes sharing the GPU")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)  # internal: run one part in this process
    a = ap.parse_args(argv)
    if a.tiny:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        a.repeats, a.text_repeats, a.matrix_workers = 1, 1, 2
    if a.part is not None:
        run_part(a.part, a, Path(a.output))
        return 0
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"gpu_checks.py: error: --parts {unknown[0]!r}: parts are {', '.join(PARTS)}.")
    budgets = parse_budgets(a.budgets)
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    figures: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "tiny": a.tiny, "parts": {}}
    write(out, figures)
    for name in parts:
        part_file = out.with_name(f".{out.stem}.{name}.json")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--output", str(part_file),
               *(["--tiny"] if a.tiny else []), "--repeats", str(a.repeats), "--text-repeats", str(a.text_repeats),
               "--matrix-workers", str(a.matrix_workers)]
        began = time.perf_counter()
        # its own session: a part that runs past its budget is ended with every process it started
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=budgets[name])
            status = "done" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            log, _ = proc.communicate()
            status = f"ended at its budget of {budgets[name]:.0f} s"
        result = json.loads(part_file.read_text()) if part_file.is_file() else {}
        part_file.unlink(missing_ok=True)
        result.update(status=status, seconds=round(time.perf_counter() - began, 1))
        if status.startswith("failed"):
            result["log_tail"] = log[-2000:]
        figures["parts"][name] = result
        write(out, figures)
        print(f"{name}: {status} ({result['seconds']} s)", flush=True)
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
