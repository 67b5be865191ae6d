"""Model cards generated from a run's record: what actually happened, for the folder the card sits in.

:func:`write_model_card` turns a run folder (its :class:`~mtransfer.record.RunRecord`, the
learning curve, the saved model's config) into ``README.md`` with Hub metadata and a
training-procedure section: strategy, which layer groups trained in which epochs at which
peak rates, the schedule, data sizes and the evaluation results.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from mtransfer.atomic import read_json
from mtransfer.record import RECORD_FILE, RunRecord


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card_text(run_dir: str | os.PathLike, *, model_name: str | None = None, datasets: Sequence[str] = (),
                    license: str | None = None, language: str | Sequence[str] | None = None,
                    plot_name: str | None = "learning_curve.png") -> str:
    """The card (YAML metadata + markdown) for the run in ``run_dir``."""
    from huggingface_hub import ModelCard, ModelCardData

    run = Path(run_dir)
    record = RunRecord.load(run / RECORD_FILE)
    metrics = record.to_dict()
    config = read_json(run / "model" / "config.json", "model config", "expected a run folder written by mtransfer's Trainer")
    adapter_type = config["adapter_type"]
    hub_base, base = _base_model(config["adapter"].get("source"))
    final = _scores(metrics.get("final_eval"))
    data = ModelCardData(
        base_model=hub_base,
        library_name="mtransfer", pipeline_tag=_pipeline_tag(adapter_type), license=license,
        datasets=list(datasets) or None, metrics=sorted(final) or None, language=language,
        tags=["mtransfer", "transfer-learning", config["task"].replace("_", "-"), metrics["args"]["strategy"]],
    )
    args = metrics["args"]
    name = model_name or run.name
    lines = [f"# {name}", "",
             f"A {config['task'].replace('_', ' ')} model fine-tuned with [mtransfer](https://github.com/mtransfer) "
             f"from `{base}` ({adapter_type} adapter) with the `{args['strategy']}` strategy.", "",
             f"Labels ({len(config['label_names'])}): " + ", ".join(f"`{x}`" for x in config["label_names"][:50]), "",
             "## Training procedure", "",
             f"- strategy: `{args['strategy']}`, {args['num_epochs']} epochs, {metrics['train_samples']} training and "
             f"{metrics['eval_samples']} evaluation examples, batch size {args['batch_size']} x "
             f"{args['gradient_accumulation_steps']} accumulation x {metrics['num_processes']} processes",
             f"- learning-rate schedule: `{args['lr_schedule']}` (warmup ratio {args['warmup_ratio']}), peak rate "
             f"{args['learning_rate']}" + (f", head rate {args['head_learning_rate']}" if args.get("head_learning_rate") else "")
             + (f", discriminative decay {args['discriminative_lr_decay']} per group" if args.get("discriminative_lr_decay") else ""),
             f"- optimizer: AdamW (weight decay {args['weight_decay']}), mixed precision `{args['mixed_precision']}`, seed {args['seed']}",
             f"- layer groups, input side first: {', '.join(f'`{g}`' for g in metrics['layer_groups'])}", "",
             "| phase | epochs | trainable groups | frozen groups | peak learning rates |", "|---|---|---|---|---|"]
    for phase in metrics["plan"]:
        frozen = [g for g in metrics["layer_groups"] if g not in phase["trainable"]]
        rates = ", ".join(f"{g}: {lr:.2g}" for g, lr in phase["peak_lr"].items())
        lines.append(f"| {phase['phase']} | {phase['epochs'][0] + 1}-{phase['epochs'][1]} | {', '.join(phase['trainable'])} | "
                     f"{', '.join(frozen) or '-'} | {rates} |")
    lines += ["", "## Evaluation", "", *_evaluation_lines(record)]
    history = metrics.get("history") or []
    if history:
        keys = [k for k in ("train_loss", "eval_loss", "eval_accuracy", "eval_f1", "eval_mse", "eval_r2") if k in history[0]]
        lines += ["", "| epoch | phase | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
        lines += [f"| {h['epoch']} | {h.get('phase', '')} | " + " | ".join(_fmt(h.get(k)) for k in keys) + " |" for h in history]
    if plot_name:
        lines += ["", f"![learning curve]({plot_name})"]
    lines += ["", "## Use", "", "```python", "import mtransfer as mt", "",
              f'model = mt.TransferModel.from_pretrained("{name}")  # the downloaded folder',
              "model.predict([...])", "```", ""]
    card = ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(lines))
    return str(card)


def write_model_card(run_dir: str | os.PathLike, folder: str | os.PathLike | None = None, **kwargs: Any) -> Path:
    """Write ``README.md`` (and the learning-curve plot next to it) into ``folder`` (default: the run's ``model/``)."""
    from mtransfer.atomic import atomic_write_bytes

    run = Path(run_dir)
    folder = Path(folder) if folder is not None else run / "model"
    folder.mkdir(parents=True, exist_ok=True)
    plot = run / "learning_curve.png"
    has_plot = plot.is_file()
    text = model_card_text(run, plot_name="learning_curve.png" if has_plot else None, **kwargs)
    if has_plot and plot.resolve() != (folder / plot.name).resolve():
        shutil.copyfile(plot, folder / plot.name)
    atomic_write_bytes(folder / "README.md", text.encode("utf-8"))
    return folder / "README.md"




def _base_model(source: str | None) -> tuple[str | None, str]:
    """``(Hub id for the metadata or None, how the card names it)``; a local path is never printed whole."""
    from mtransfer.builtins import hub_id

    if not source:
        return None, "an unnamed backbone"
    if hub_id(source):
        return hub_id(source), hub_id(source)
    path = Path(str(source)).expanduser()
    if str(source).startswith(("/", ".", "~")) or path.exists():
        return None, f"a local model ({path.name})"
    return str(source), str(source)


def _scores(metrics: dict[str, Any] | None) -> dict[str, float]:
    return {k.removeprefix("eval_"): v for k, v in (metrics or {}).items()
            if isinstance(v, (int, float)) and k not in ("eval_samples", "eval_loss")}


def _evaluation_lines(record: RunRecord) -> list[str]:
    """The metrics table (validation, and test when it was evaluated) and whose weights the model holds."""
    valid, test = _scores(record.final_eval), _scores(record.test)
    if not valid and not test:
        return ["No evaluation data was given for this run."]
    sizes = f"validation ({record.eval_samples} examples)" if valid else "validation"
    if test:
        sizes += f" | test ({(record.test or {}).get('eval_samples', '?')} examples)"
    lines = [f"| metric | {sizes} |", "|---" * (2 + bool(test)) + "|"]
    for k in sorted(set(valid) | set(test)):
        lines.append(f"| {k} | {_fmt(valid.get(k, '-'))} |" + (f" {_fmt(test.get(k, '-'))} |" if test else ""))
    lines.append("")
    best = record.best
    if record.weights_are_best and best.epoch is not None:
        lines.append(f"Best epoch {best.epoch} on the validation data by `{best.metric}` ({_fmt(best.value)}); "
                     "these are its weights.")
    elif record.weights_epoch is not None:
        lines.append(f"These are the weights of the last epoch ({record.weights_epoch})"
                     + (f"; the best by `{best.metric}` was epoch {best.epoch} ({_fmt(best.value)})."
                        if best.epoch is not None else "."))
    return lines


def _pipeline_tag(adapter_type: str) -> str | None:
    from mtransfer.adapters.base import get_adapter_class

    return get_adapter_class(adapter_type).pipeline_tag or None
