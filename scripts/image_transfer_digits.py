"""Real image transfer offline: EfficientNet-Lite0's ImageNet features vs the same architecture from random init.

scikit-learn's handwritten digits (real scans) upsampled to RGB images, a few labelled images per
class, a validation split for model selection and a separate test split for the figures:

    python scripts/image_transfer_digits.py --per-class 5 10 --image-size 96

Prints a table of test accuracy per method and label budget and writes it as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mtransfer as mt  # noqa: E402
from mtransfer.builtins.corpora import digits_images  # noqa: E402

METHODS = {  # name: (pretrained, strategy, epochs, learning rate)
    "imagenet, frozen probe": (True, "frozen", 30, 1e-3),
    "imagenet, two-stage fine-tune": (True, "two_stage", 12, 1e-3),
    "random init, frozen probe": (False, "frozen", 30, 1e-3),
    "random init, full training": (False, "full", 20, 3e-3),
}


def run(per_class: int, image_size: int, seed: int, scene: bool, methods: list[str]) -> dict[str, dict[str, float]]:
    train_rows, held_out = digits_images(per_class, 60, size=96 if scene else 64, seed=seed, scene=scene)
    val_rows = [r for i, r in enumerate(held_out) if i % 60 < 20]
    test_rows = [r for i, r in enumerate(held_out) if i % 60 >= 20]
    train = mt.load_labeled(train_rows, input_column="image")
    val = mt.load_labeled(val_rows, input_column="image", label_names=train.label_names)
    test = mt.load_labeled(test_rows, input_column="image", label_names=train.label_names)
    results = {}
    for name in methods:
        pretrained, strategy, epochs, lr = METHODS[name]
        start = time.perf_counter()
        model = mt.TransferModel.from_backbone("torch", "efficientnet_lite0", labels=train.label_names, seed=seed,
                                               pretrained=pretrained, image_size=image_size)
        with tempfile.TemporaryDirectory() as tmp:
            args = mt.TrainingArguments(output_dir=tmp, strategy=strategy, num_epochs=epochs, learning_rate=lr,
                                        head_learning_rate=1e-2, head_epochs=4, batch_size=16, seed=seed, report_to=[],
                                        plot=False, save_checkpoints=False, progress_bar=False)
            trainer = mt.Trainer(model, args, train, val)
            trainer.train()
            metrics = trainer.evaluate(test)
        results[name] = {"test_accuracy": round(float(metrics["eval_accuracy"]), 4), "seconds": round(time.perf_counter() - start, 1)}
        print(f"  {'scene' if scene else 'plain'}  {per_class:>3}/class  {name:<32} test accuracy {results[name]['test_accuracy']:.3f}  "
              f"({results[name]['seconds']:.0f}s)", flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, nargs="+", default=[5, 10], help="labelled training images per class")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", default=["plain", "scene"], choices=["plain", "scene"],
                   help="plain: centred digits; scene: digits at random scale and place on noisy colour backgrounds")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    a = p.parse_args()
    print(f"digits (10 classes, test n=400, chance 0.10), EfficientNet-Lite0 at {a.image_size}px")
    table = {f"{v}/{n}": run(n, a.image_size, a.seed, v == "scene", a.methods) for v in a.variants for n in a.per_class}
    if a.out:
        Path(a.out).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
