"""Few labels: test accuracy against labelled examples per class for a tuned classic baseline, the frozen probe,
the two-stage fine-tune and the contrastive strategy (mean ± sd over seeds of the labelled subset).

Tasks (all offline, real data, honest labels):

* ``fortunes``: Debian fortunes, 5 topics (the file a fortune is filed in), MiniLM-L6;
* ``polarity``: gensim's test copy of Pang & Lee's sentence polarity data (200 sentences, positive /
  negative as the authors labelled them), MiniLM-L6; 64 per class leaves 72 test sentences;
* ``packages``: Debian package one-line descriptions labelled with the archive section the
  maintainers filed the package in (5 largest sections), MiniLM-L6;
* ``digits``: scikit-learn's digit scans on noisy 96 px scenes, 10 classes, EfficientNet-Lite0;
* ``faces``: scikit-image's subset of Labeled Faces in the Wild (100 face crops and 100 crops of the
  same photos' backgrounds, 25 px grey, as its authors cut them), face / not a face,
  EfficientNet-Lite0; 64 per class leaves 72 test images.

The classic baselines are tuned by cross-validation on the labelled subset alone: TF-IDF word
1-2-grams + character 2-5-grams with logistic regression (C in 0.01..100) for text; for images,
logistic regression (C tuned) on the better of raw 32 px grey pixels and HOG-like gradient
histograms, chosen by cross-validation. The neural methods get no validation set either (a few-label
user has none to spare): the head rate is chosen by cross-validation on the training features,
and the last epoch is kept. Every method sees the same subset per seed and the same test set.

    .venv/bin/python scripts/learning_curve.py --tasks fortunes --sizes 8 16 32 64 --seeds 0 1 2 --out outputs/curves
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import mtransfer as mt

METHODS = ("baseline", "frozen probe", "two-stage", "contrastive")


# --- tasks: (pool rows by class, test rows, input column, modality, backbone, adapter settings) -------------------
def _fortunes() -> tuple[dict, list, str]:
    from mtransfer.builtins.corpora import fortunes_splits

    sp = fortunes_splits(train_per_topic=64, valid_per_topic=24, test_per_topic=60, seed=0)
    return _by_class(sp["train"] + sp["validation"]), sp["test"], "text"


def _polarity() -> tuple[dict, list, str]:
    from gensim.test.utils import datapath

    rows = []
    for line in Path(datapath("pang_lee_polarity.cor")).read_text(encoding="utf-8", errors="replace").splitlines():
        label, _, text = line.partition(" ")
        if text.strip() and label in ("__label__pos", "__label__neg"):
            rows.append({"text": text.strip(), "label": label.removeprefix("__label__")})
    return _split_rows(rows, test_per_class=36)


def _packages() -> tuple[dict, list, str]:
    from mtransfer.builtins.debian_packages import packages_table

    table = packages_table(limit=None, seed=0)
    table = table[table["description"].str.len() > 10]
    sections = table["section"].value_counts().index[:5]
    rows = [{"text": d, "label": s} for d, s in zip(table["description"], table["section"]) if s in set(sections)]
    return _split_rows(rows, test_per_class=60)


def _digits() -> tuple[dict, list, str]:
    from mtransfer.builtins.corpora import digits_images

    train, test = digits_images(64, 40, size=96, seed=0, scene=True)
    return _by_class(train), test, "image"


def _faces() -> tuple[dict, list, str]:
    from PIL import Image
    from skimage.data import lfw_subset

    crops = (lfw_subset() * 255).round().astype("uint8")  # the first 100 are faces, the rest backgrounds
    rows = [{"image": Image.fromarray(c), "label": "face" if i < 100 else "background"} for i, c in enumerate(crops)]
    pool, test, _ = _split_rows(rows, test_per_class=36)
    return pool, test, "image"


TASKS = {"fortunes": (_fortunes, "text", "builtin:minilm", {"max_length": 96}),
         "polarity": (_polarity, "text", "builtin:minilm", {"max_length": 96}),
         "packages": (_packages, "text", "builtin:minilm", {"max_length": 64}),
         "digits": (_digits, "torch", "builtin:efficientnet-lite0", {"image_size": 96}),
         "faces": (_faces, "torch", "builtin:efficientnet-lite0", {"image_size": 96})}
# per modality: the neural methods' settings (the package's recipes for these backbones)
SETTINGS = {
    "text": {"frozen probe": dict(strategy="frozen", num_epochs=10),
             "two-stage": dict(strategy="two_stage", num_epochs=4, head_epochs=1, learning_rate=1e-4,
                               discriminative_lr_decay=1.5, lr_schedule="slanted_triangular"),
             "contrastive": dict(strategy="contrastive", num_epochs=1, learning_rate=2e-5)},
    "torch": {"frozen probe": dict(strategy="frozen", num_epochs=10),
              # the backbone rate that kept EfficientNet-Lite0's two-stage from diverging at the unfreeze (README,
              # "Training loop": 1e-3 collapsed to chance on the digit scenes)
              "two-stage": dict(strategy="two_stage", num_epochs=12, head_epochs=6, learning_rate=1e-4),
              "contrastive": dict(strategy="contrastive", num_epochs=1, learning_rate=1e-4)},
}


def _by_class(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["label"], []).append(r)
    return out


def _split_rows(rows: list[dict], test_per_class: int) -> tuple[dict, list, str]:
    rng = random.Random(0)
    pool, test = {}, []
    for label, members in sorted(_by_class(rows).items()):
        members = members[:]
        rng.shuffle(members)
        test += members[:test_per_class]
        pool[label] = members[test_per_class:]
    return pool, test, "text"


def subset(pool: dict[str, list[dict]], per_class: int, seed: int) -> list[dict]:
    rng = random.Random(f"{seed}-{per_class}")
    if min(len(v) for v in pool.values()) < per_class:
        raise ValueError(f"{per_class} per class: the smallest class has {min(len(v) for v in pool.values())}.")
    return [r for label in sorted(pool) for r in rng.sample(pool[label], per_class)]


# --- methods ---------------------------------------------------------------------------------------------------
def _cv(y: np.ndarray, seed: int):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=min(5, int(np.bincount(y).min())), shuffle=True, random_state=seed)


def text_baseline(train: list[dict], test: list[dict], seed: int) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import FeatureUnion, Pipeline

    names = sorted({r["label"] for r in train})
    y = np.array([names.index(r["label"]) for r in train])
    features = FeatureUnion([("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
                             ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))])
    pipe = Pipeline([("tfidf", features), ("lr", LogisticRegression(max_iter=3000))])
    search = GridSearchCV(pipe, {"lr__C": [0.01, 0.1, 1.0, 10.0, 100.0]}, cv=_cv(y, seed))
    search.fit([r["text"] for r in train], y)
    pred = search.predict([r["text"] for r in test])
    return float(np.mean([names[p] == r["label"] for p, r in zip(pred, test)]))


def _grey(image: Any, size: int = 32) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    return np.asarray(image.convert("L").resize((size, size)), dtype=np.float32) / 255.0


def _gradient_histograms(grey: np.ndarray, cells: int = 4, bins: int = 9) -> np.ndarray:
    """HOG-like: per cell, a histogram of gradient orientations weighted by magnitude, L2-normalised."""
    gy, gx = np.gradient(grey)
    magnitude, angle = np.hypot(gx, gy), (np.arctan2(gy, gx) % np.pi)
    step = grey.shape[0] // cells
    out = []
    for i in range(cells):
        for j in range(cells):
            m = magnitude[i * step:(i + 1) * step, j * step:(j + 1) * step].ravel()
            a = angle[i * step:(i + 1) * step, j * step:(j + 1) * step].ravel()
            h = np.bincount(np.minimum((a / np.pi * bins).astype(int), bins - 1), weights=m, minlength=bins)
            out.append(h / (np.linalg.norm(h) + 1e-6))
    return np.concatenate(out)


def image_baseline(train: list[dict], test: list[dict], seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    names = sorted({r["label"] for r in train})
    y = np.array([names.index(r["label"]) for r in train])
    kinds = {"pixels": lambda im: _grey(im).ravel(), "gradients": lambda im: _gradient_histograms(_grey(im, 64), 8)}
    best = None
    for kind, featurise in kinds.items():
        x = np.stack([featurise(r["image"]) for r in train])
        search = GridSearchCV(Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression(max_iter=3000))]),
                              {"lr__C": [0.001, 0.01, 0.1, 1.0, 10.0]}, cv=_cv(y, seed)).fit(x, y)
        if best is None or search.best_score_ > best[0]:
            best = (search.best_score_, featurise, search)
    _, featurise, search = best
    pred = search.predict(np.stack([featurise(r["image"]) for r in test]))
    return float(np.mean([names[p] == r["label"] for p, r in zip(pred, test)]))


def neural(method: str, task: str, train_rows: list[dict], test_rows: list[dict], column: str, seed: int,
           tmp: Path) -> tuple[float, dict]:
    """Test accuracy of one neural method, and for ``contrastive`` the pair epochs' pairs and seconds."""
    _, modality, backbone, adapter = TASKS[task]
    train = mt.load_labeled(train_rows, input_column=column)
    test = mt.load_labeled(test_rows, input_column=column, label_names=train.label_names)
    model = mt.TransferModel.from_backbone(modality, backbone, labels=train.label_names, seed=seed, **adapter)
    args = mt.TrainingArguments(output_dir=str(tmp / f"{task}-{method}-{seed}-{len(train)}".replace(" ", "_")), seed=seed,
                                batch_size=16, progress_bar=False, report_to=[], plot=False, save_checkpoints="none",
                                **SETTINGS[modality][method])
    trainer = mt.Trainer(model, args, train)
    result = trainer.train()
    extra = {}
    if method == "contrastive":
        pair_epochs = [r for r in result.history if r["phase"].startswith("contrastive")]
        extra = {"pairs": len(trainer.pair_dataset) * len(pair_epochs),
                 "pair_seconds": round(sum(r["seconds"] for r in pair_epochs), 1)}
    return trainer.evaluate(test)["eval_accuracy"], extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--out", default="outputs/curves")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "curves.json"
    results: list[dict] = json.loads(path.read_text()) if path.is_file() else []
    done = {(r["task"], r["method"], r["per_class"], r["seed"]) for r in results}
    with tempfile.TemporaryDirectory() as tmp_name:
        for task in a.tasks:
            pool, test, column = TASKS[task][0]()
            for per_class in a.sizes:
                for seed in a.seeds:
                    train = subset(pool, per_class, seed)
                    for method in a.methods:
                        if (task, method, per_class, seed) in done:
                            continue
                        began = time.perf_counter()
                        extra: dict = {}
                        if method == "baseline":
                            acc = (text_baseline if column == "text" else image_baseline)(train, test, seed)
                        else:
                            acc, extra = neural(method, task, train, test, column, seed, Path(tmp_name))
                        row = {"task": task, "method": method, "per_class": per_class, "seed": seed,
                               "test_accuracy": acc, "seconds": round(time.perf_counter() - began, 1),
                               "test_size": len(test), **extra}
                        results.append(row)
                        path.write_text(json.dumps(results, indent=1))
                        print(json.dumps(row), flush=True)
    (out / "curves.md").write_text(table(results) + "\n")
    plot(results, out / "curves.png")
    print(table(results))
    print(f"wrote {out / 'curves.json'}, {out / 'curves.md'} and {out / 'curves.png'}")


def table(results: list[dict]) -> str:
    lines = []
    for task in sorted({r["task"] for r in results}):
        rows = [r for r in results if r["task"] == task]
        sizes = sorted({r["per_class"] for r in rows})
        lines += [f"\n{task} (test {rows[0]['test_size']}): test accuracy, mean ± sd over seeds (seconds per run)\n",
                  "| method | " + " | ".join(f"{n} per class" for n in sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
        for method in METHODS:
            cells = []
            for n in sizes:
                acc = [r["test_accuracy"] for r in rows if r["method"] == method and r["per_class"] == n]
                secs = [r["seconds"] for r in rows if r["method"] == method and r["per_class"] == n]
                cells.append(f"{statistics.mean(acc):.3f} ± {statistics.pstdev(acc):.3f} ({statistics.mean(secs):.0f}s)"
                             if acc else "-")
            if any(c != "-" for c in cells):
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    """One panel per task: mean test accuracy against labelled examples per class, ± sd as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in results})
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for method in METHODS:
            rows = [r for r in results if r["task"] == task and r["method"] == method]
            sizes = sorted({r["per_class"] for r in rows})
            if not sizes:
                continue
            acc = [[r["test_accuracy"] for r in rows if r["per_class"] == n] for n in sizes]
            ax.errorbar(sizes, [statistics.mean(a) for a in acc], yerr=[statistics.pstdev(a) for a in acc],
                        marker="o", capsize=3, label=method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["per_class"] for r in results if r["task"] == task}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_title(task)
        ax.set_xlabel("labelled examples per class")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
