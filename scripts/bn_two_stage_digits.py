"""Batch norm in fine-tuning: two-stage on ImageNet EfficientNet-Lite0 with the BN statistics updating (the earlier
behaviour) and frozen (today's default on small data), against a tuned frozen probe, on real digit scans.

scikit-learn's digits placed at random scale and position on noisy 96 px backgrounds (the harder
"scene" form), ``--per-class`` labelled images per class, 200 validation and 400 test images.
The frozen probe's learning rate is tuned on validation over ``PROBE_RATES``; the two-stage runs
take the probe's best rate for their head stage and ``--lr`` for the backbone stage. Writes
``bn_two_stage.json`` and ``bn_two_stage.png`` (training and validation loss per epoch of both
two-stage runs; the vertical line is the unfreeze) into ``--out``.

    .venv/bin/python scripts/bn_two_stage_digits.py [--per-class 10] [--seeds 0 1] [--out outputs/bn]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import mtransfer as mt
from mtransfer.builtins.corpora import digits_images

PROBE_RATES = (1e-3, 3e-3, 1e-2, 3e-2)


def data(per_class: int, seed: int):
    train_rows, held_out = digits_images(per_class, 60, size=96, seed=seed, scene=True)
    val = [r for i, r in enumerate(held_out) if i % 60 < 20]
    test = [r for i, r in enumerate(held_out) if i % 60 >= 20]
    train = mt.load_labeled(train_rows, input_column="image")
    return (train, mt.load_labeled(val, input_column="image", label_names=train.label_names),
            mt.load_labeled(test, input_column="image", label_names=train.label_names))


def run(train, val, test, tmp: Path, name: str, seed: int, **settings) -> dict:
    model = mt.TransferModel.from_backbone("torch", "builtin:efficientnet-lite0", labels=train.label_names, seed=seed,
                                           image_size=96)
    args = mt.TrainingArguments(output_dir=str(tmp / name), batch_size=16, progress_bar=False, report_to=[], plot=False,
                                save_checkpoints="none", seed=seed, **settings)
    trainer = mt.Trainer(model, args, train, val)
    result = trainer.train()
    return {"test_accuracy": trainer.evaluate(test)["eval_accuracy"], "best_epoch": result.best_epoch,
            "train_loss": [r["train_loss"] for r in result.history], "eval_loss": [r["eval_loss"] for r in result.history],
            "batchnorm_stats": trainer.batchnorm_stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--head-epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default="outputs/bn")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for seed in a.seeds:
            train, val, test = data(a.per_class, seed)
            probes = {rate: run(train, val, test, tmp, f"probe-{rate}-{seed}", seed, strategy="frozen",
                                num_epochs=30, learning_rate=rate) for rate in PROBE_RATES}
            best_rate = min(probes, key=lambda r: min(probes[r]["eval_loss"]))
            results.setdefault("tuned frozen probe", []).append({**probes[best_rate], "rate": best_rate})
            for stats in ("update", "frozen"):
                results.setdefault(f"two-stage, BN statistics {stats}", []).append(
                    run(train, val, test, tmp, f"two-stage-{stats}-{seed}", seed, strategy="two_stage",
                        num_epochs=a.epochs, head_epochs=a.head_epochs, head_learning_rate=best_rate,
                        learning_rate=a.lr, batchnorm_stats=stats))
            print(json.dumps({k: v[-1]["test_accuracy"] for k, v in results.items()}), flush=True)
    (out / "bn_two_stage.json").write_text(json.dumps(results, indent=1))
    print(f"\n{a.per_class} labelled images per class, seeds {a.seeds}; test accuracy on 400 images:\n")
    print("| method | test accuracy (mean ± sd) |\n|---|---|")
    for name, runs in results.items():
        acc = [r["test_accuracy"] for r in runs]
        print(f"| {name} | {np.mean(acc):.3f} ± {np.std(acc):.3f} |")
    plot(results, a.head_epochs, out / "bn_two_stage.png")


def plot(results: dict, head_epochs: int, path: Path) -> None:
    from matplotlib.figure import Figure

    from mtransfer.plots import save_figure

    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for name, style in (("two-stage, BN statistics update", "tab:red"), ("two-stage, BN statistics frozen", "tab:blue")):
        first = results[name][0]
        epochs = range(1, len(first["train_loss"]) + 1)
        ax.plot(epochs, first["train_loss"], color=style, label=f"{name}: train")
        ax.plot(epochs, first["eval_loss"], color=style, linestyle="--", label=f"{name}: validation")
    ax.axvline(head_epochs + 0.5, color="grey", linewidth=0.8)
    ax.set_xlabel("epoch (the line: the backbone unfreezes)")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
