"""Head-only defaults: the head's learning rate chosen on the feature cache against the fixed rates it replaces.

Three real tasks, a frozen probe on each (``strategy="frozen"``, every other setting at the
library's default unless ``--epochs`` is given), mean ± sd of the test accuracy over ``--seeds``
(each seed draws another labelled subset and head initialisation):

* text: Debian fortunes, 5 topics, 48 / 24 / 60 texts per topic (train / validation / test), MiniLM-L6;
* image: scikit-learn's digit scans on noisy 96 px scenes, 10 / 20 / 40 per class, ImageNet EfficientNet-Lite0;
* audio: spoken-language ID of espeak-ng speech in bn, as, mr, ne, it (20 training utterances per
  language from 6 speakers; validation and test: one unseen speaker each), on the encoder of a
  Hindi speech recogniser trained here first (``builtin:w2v-bert-mini``, CTC, the transfer
  matrix's source run).

Rows: ``fixed 2e-5`` (the frozen strategy's head rate before the search: ``learning_rate``'s
default), ``fixed 5e-3`` (the head rate of ``two_stage`` / ``chain_thaw`` before, now the fallback
where no cache serves the phase) and ``chosen on the cache`` (the default now). Writes
``head_lr.json`` into ``--out`` and prints a markdown table.

    .venv/bin/python scripts/bench_head_lr.py [--tasks text image audio] [--seeds 0 1 2] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import mtransfer as mt
from mtransfer.builtins import minilm_path
from mtransfer.builtins.corpora import digits_splits, fortunes_splits

SETTINGS = {"fixed 2e-5": {"head_learning_rate": 2e-5}, "fixed 5e-3": {"head_learning_rate": 5e-3},
            "chosen on the cache": {}}
LID_LANGUAGES = ("bn", "as", "mr", "ne", "it")


def text_task(seed: int, tmp: Path):
    sp = fortunes_splits(seed=seed)
    return ("text", minilm_path(), {"max_length": 96}, sp["train"], sp["validation"], sp["test"], "text")


def image_task(seed: int, tmp: Path):
    sp = digits_splits(per_class=10, validation_per_class=20, test_per_class=40, size=96, seed=seed, scene=True)
    return ("torch", "builtin:efficientnet-lite0", {"image_size": 96}, sp["train"], sp["validation"], sp["test"], "image")


def speech_encoder(tmp: Path) -> str:
    """A Hindi CTC model trained as the transfer matrix trains its source runs; its folder."""
    from mtransfer.experiments.transfer_matrix import MatrixSettings, espeak_corpus, train_ctc_run

    folder = Path(tmp) / "hi-source"
    if (folder / "model").is_dir():
        return str(folder / "model")
    s = MatrixSettings()
    corpus = espeak_corpus(s.sources + s.targets)
    splits = corpus("hi")
    rows = random.Random(0).sample(splits["train"], s.source_utterances)
    load = lambda r, v=None: mt.load_labeled([{"audio": x["audio"], "transcript": x["transcript"]} for x in r],  # noqa: E731
                                             input_column="audio", label_column="transcript", task="ctc", vocabulary=v)
    train = load(rows)
    valid, test = load(splits["validation"], train.vocabulary), load(splits["test"], train.vocabulary)
    model = mt.TransferModel.from_backbone("audio", s.model, labels=train.vocabulary, task="ctc", seed=0)
    out = train_ctc_run(model, train, valid, test, folder, epochs=s.source_epochs, lr=s.source_lr,
                        patience=s.source_patience, batch_size=s.batch_size, seed=0, min_epochs=s.min_epochs)
    print(f"Hindi speech encoder: test CER {out['test_cer']:.3f} after {out['epochs_run']} epochs", flush=True)
    return str(folder / "model")


def audio_task(seed: int, tmp: Path):
    from mtransfer.experiments.transfer_matrix import MatrixSettings, espeak_corpus

    s = MatrixSettings()
    corpus = espeak_corpus(s.sources + s.targets)
    rng = random.Random(seed)
    train, val, test = [], [], []
    for lang in LID_LANGUAGES:
        sp = corpus(lang)
        train += [{"audio": r["audio"], "label": lang} for r in rng.sample(sp["train"], 20)]
        val += [{"audio": r["audio"], "label": lang} for r in sp["validation"][:20]]
        test += [{"audio": r["audio"], "label": lang} for r in sp["test"]]
    return ("audio", speech_encoder(tmp), {}, train, val, test, "audio")


TASKS = {"text": text_task, "image": image_task, "audio": audio_task}


def run(task, seed: int, tmp: Path, name: str, epochs: int | None, **settings) -> dict:
    modality, backbone, adapter, train_rows, val_rows, test_rows, column = task
    train = mt.load_labeled(train_rows, input_column=column)
    val = mt.load_labeled(val_rows, input_column=column, label_names=train.label_names)
    test = mt.load_labeled(test_rows, input_column=column, label_names=train.label_names)
    if modality == "audio":
        model = mt.TransferModel.from_pretrained(backbone).with_new_head(train.label_names, task="single_label_classification",
                                                                         seed=seed)
    else:
        model = mt.TransferModel.from_backbone(modality, backbone, labels=train.label_names, seed=seed, **adapter)
    args = mt.TrainingArguments(output_dir=str(tmp / f"{name}-{seed}"), strategy="frozen", seed=seed, progress_bar=False,
                                report_to=[], plot=False, save_checkpoints="none",
                                **({"num_epochs": epochs} if epochs else {}), **settings)
    trainer = mt.Trainer(model, args, train, val)
    began = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - began
    choice = trainer.head_choice or {}
    return {"test_accuracy": trainer.evaluate(test)["eval_accuracy"], "seconds": round(seconds, 2),
            "learning_rate": choice.get("learning_rate", settings.get("head_learning_rate")),
            "weight_decay": choice.get("weight_decay"), "search_seconds": round(choice.get("seconds", 0.0), 2),
            "sizes": [len(train), len(val), len(test)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None, help="default: TrainingArguments' (3)")
    ap.add_argument("--out", default="outputs/head_lr")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, list]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for task_name in a.tasks:
            for seed in a.seeds:
                task = TASKS[task_name](seed, tmp)
                for name, settings in SETTINGS.items():
                    r = run(task, seed, tmp, f"{task_name}-{name.replace(' ', '_')}", a.epochs, **settings)
                    results.setdefault(task_name, {}).setdefault(name, []).append(r)
                    print(json.dumps({"task": task_name, "seed": seed, "setting": name, **r}), flush=True)
    (out / "head_lr.json").write_text(json.dumps(results, indent=1))
    epochs = a.epochs or mt.TrainingArguments().num_epochs
    print(f"\nfrozen probe, {epochs} epochs, seeds {a.seeds}: test accuracy (mean ± sd)\n")
    print("| task (train / val / test) | " + " | ".join(SETTINGS) + " | rates chosen | search seconds |")
    print("|---" * (len(SETTINGS) + 3) + "|")
    for task_name, by_setting in results.items():
        cells = []
        for name in SETTINGS:
            acc = [r["test_accuracy"] for r in by_setting[name]]
            cells.append(f"{statistics.mean(acc):.3f} ± {statistics.pstdev(acc):.3f}")
        chosen = by_setting["chosen on the cache"]
        rates = ", ".join(f"{r['learning_rate']:g}/{r['weight_decay']:g}" for r in chosen)
        sizes = "/".join(str(x) for x in chosen[0]["sizes"])
        secs = statistics.mean(r["search_seconds"] for r in chosen)
        print(f"| {task_name} ({sizes}) | " + " | ".join(cells) + f" | {rates} | {secs:.1f} |")


if __name__ == "__main__":
    main()
