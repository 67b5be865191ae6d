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
from mtransfer.record import RECORD_FILE, RunRecord, describe_flags, describe_head_choice, mtransfer_version
from mtransfer.tasks import get_task


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


EXAMPLE_INPUTS = {"text-classification": '"an example text"', "image-classification": '"photo.jpg"',
                  "audio-classification": '"clip.wav"', "automatic-speech-recognition": '"clip.wav"'}


def model_card_text(run_dir: str | os.PathLike, *, folder: str | os.PathLike | None = None, repo_id: str | None = None,
                    model_name: str | None = None, datasets: Sequence[str] = (), license: str | None = None,
                    language: str | Sequence[str] | None = None, plot_name: str | None = "learning_curve.png") -> str:
    """The card (YAML metadata + markdown) for the run in ``run_dir``, written for ``folder``.

    Args:
        run_dir: The run (its ``metrics.json`` and ``model/config.json``).
        folder: The folder the card goes into: the run's mtransfer model folder (default), or a
            transformers export of it (``mtransfer export``). Metadata and the usage snippet follow
            it: ``library_name: mtransfer`` and ``TransferModel.from_pretrained`` for the first,
            ``library_name: transformers`` and ``transformers.pipeline`` for an export.
        repo_id: The Hub repo the folder goes to: the title and the snippet use it (default: the
            folder's name, as a path next to it).
        model_name: The title (default: the repo's name, else ``<base model>-finetuned[-<dataset>]``).
    """
    from huggingface_hub import ModelCard, ModelCardData

    __version__ = mtransfer_version()
    run = Path(run_dir)
    record = RunRecord.load(run / RECORD_FILE)
    metrics = record.to_dict()
    config = read_json(run / "model" / "config.json", "model config", "expected a run folder written by mtransfer's Trainer")
    folder = Path(folder) if folder is not None else run / "model"
    export = _export_config(folder)
    modality = config.get("modality", config.get("adapter_type"))  # adapter_type: folders written before 0.2
    hub_base, base = _base_model(config["adapter"].get("source"))
    final = _scores(metrics.get("final_eval"))
    transcribes = get_task(config["task"]).transcribes
    pipeline_tag = "automatic-speech-recognition" if transcribes else _pipeline_tag(modality)
    data = ModelCardData(
        base_model=hub_base,
        library_name="transformers" if export is not None else "mtransfer", pipeline_tag=pipeline_tag,
        license=license, datasets=list(datasets) or None, metrics=sorted(final) or None, language=language,
        tags=["mtransfer", "transfer-learning", config["task"].replace("_", "-"), metrics["args"]["strategy"]],
    )
    args = metrics["args"]
    ref = repo_id or str(folder.resolve())
    name = model_name or (repo_id.split("/")[-1] if repo_id else _default_title(hub_base or config["adapter"].get("source"),
                                                                                    datasets))
    lines = [f"# {name}", "",
             f"A {config['task'].replace('_', ' ')} model fine-tuned with mtransfer {__version__} "
             f"from `{base}` ({modality} adapter) with the `{args['strategy']}` strategy.", "",
             *_started_from_lines(config.get("started_from")),
             f"Labels ({len(config['label_names'])}): " + ", ".join(f"`{x}`" for x in config["label_names"][:50]), "",
             "## Training procedure", "",
             f"- strategy: `{args['strategy']}`, {args['num_epochs']} epochs, {metrics['train_samples']} training and "
             f"{metrics['eval_samples']} evaluation examples, batch size {args['batch_size']} x "
             f"{args['gradient_accumulation_steps']} accumulation x {metrics['num_processes']} processes",
             f"- learning-rate schedule: `{args['lr_schedule']}` (warmup ratio {args['warmup_ratio']}), peak rate "
             f"{args['learning_rate']}" + (f", head rate {args['head_learning_rate']}" if args.get("head_learning_rate") else "")
             + (f", discriminative decay {args['discriminative_lr_decay']} per group" if args.get("discriminative_lr_decay") else ""),
             *([f"- head-only phase: {describe_head_choice(metrics['head_search'])}"] if metrics.get("head_search") else []),
             *([f"- head: logistic regression on the contrastively tuned features of {metrics['linear_head']['train_examples']} "
                f"training examples (C = {metrics['linear_head'].get('C', float('nan')):.3g}, by cross-validation), "
                "folded into a linear layer"] if metrics.get("linear_head") else []),
             f"- optimizer: AdamW (weight decay {args['weight_decay']}), mixed precision `{args['mixed_precision']}`, seed {args['seed']}",
             f"- layer groups, input side first: {', '.join(f'`{g}`' for g in metrics['layer_groups'])}",
             f"- adapter settings: {_adapter_settings(config['adapter'])}",
             *(["- images are read as transformers' `load_image` reads them (and `pipeline` on an export): "
                "turned upright by their EXIF orientation, then `convert(\"RGB\")`, so the alpha channel of "
                "RGBA / LA / transparent-palette images is dropped, not composited"]
               if modality in ("image", "torch") else []),
             *([f"- batch-norm statistics while the backbone trained: {metrics['batchnorm_stats']}"]
               if metrics.get("batchnorm_stats") else []), "",
             "| phase | epochs | trainable groups | frozen groups | peak learning rates |", "|---|---|---|---|---|"]
    for phase in metrics["plan"]:
        frozen = [g for g in metrics["layer_groups"] if g not in phase["trainable"]]
        rates = ", ".join(f"{g}: {lr:.2g}" for g, lr in phase["peak_lr"].items())
        lines.append(f"| {phase['phase']} | {phase['epochs'][0] + 1}-{phase['epochs'][1]} | {', '.join(phase['trainable'])} | "
                     f"{', '.join(frozen) or '-'} | {rates} |")
    lines += ["", "## Evaluation", "", *_evaluation_lines(record), *_flag_lines(record.flags)]
    history = metrics.get("history") or []
    if history:
        keys = [k for k in ("train_loss", "eval_loss", "eval_accuracy", "eval_f1", "eval_mse", "eval_r2", "eval_wer", "eval_cer",
                            "eval_per", "eval_length_ratio") if k in history[0]]
        lines += ["", "| epoch | phase | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
        lines += [f"| {h['epoch']} | {h.get('phase', '')} | " + " | ".join(_fmt(h.get(k)) for k in keys) + " |" for h in history]
    if plot_name:
        lines += ["", f"![learning curve]({plot_name})"]
    lines += ["", "## Use", "", *usage_snippet(ref, pipeline_tag, export, repo_id is not None), ""]
    card = ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(lines))
    return str(card)


def usage_snippet(ref: str, pipeline_tag: str | None, export: dict[str, Any] | None, on_hub: bool) -> list[str]:
    """The card's "Use" section: code that loads the folder the card sits in, as markdown lines."""
    where = "the Hub repo" if on_hub else "this folder (its path), or its Hub repo id"
    example = EXAMPLE_INPUTS.get(pipeline_tag or "", '"an example input"')
    if export is None:
        return ["```python", "import mtransfer as mt", "",
                f'model = mt.TransferModel.from_pretrained("{ref}")  # {where}',
                f"print(model.predict([{example}]))", "```"]
    remote = ", trust_remote_code=True" if export.get("auto_map") else ""
    call = f"[{example}]" + ("" if pipeline_tag == "automatic-speech-recognition" else ", top_k=None")
    lines = ["```python", "from transformers import pipeline", "",
             f'pipe = pipeline("{pipeline_tag}", model="{ref}"{remote})  # {where}',
             f"print(pipe({call}))", "```"]
    if remote:
        lines += ["", "The folder carries its model code (`hf_custom.py`, mean or CLS pooling as trained), hence "
                      "`trust_remote_code=True`; it needs only torch and transformers."]
    return lines


def _export_config(folder: Path) -> dict[str, Any] | None:
    """The transformers config of an export in ``folder``; None for an mtransfer model folder (or no folder yet)."""
    import json

    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON config ({err}).") from None
    return None if "modality" in config or "adapter_type" in config else config  # an mtransfer folder


def _default_title(source: str | None, datasets: Sequence[str]) -> str:
    """``<base>-finetuned[-<dataset>]``, a valid Hub repository name (letters, digits, ``-``, ``_``, ``.``; at most
    96 characters): a builtin is named without its ``builtin:`` prefix, a path by its last part."""
    import re

    short = str(source or "model").rstrip("/").split("/")[-1].removeprefix("builtin:")
    suffix = f"-{datasets[0].rstrip('/').split('/')[-1]}" if datasets else ""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{short}-finetuned{suffix}")
    name = re.sub(r"([-.])[-.]+", r"\1", name).strip("-.")
    return name[:96].rstrip("-.") or "mtransfer-model"


def _adapter_settings(adapter: dict[str, Any]) -> str:
    """The adapter's settings as run (max length, pooling, image size, augmentation, ...), source left out."""
    shown = [f"{k} `{v}`" for k, v in adapter.items() if k != "source" and v is not None and v != {} and v != []]
    return ", ".join(shown) or "the adapter's defaults"


def write_model_card(run_dir: str | os.PathLike, folder: str | os.PathLike | None = None, **kwargs: Any) -> Path:
    """Write ``README.md`` (and the learning-curve plot next to it) into ``folder`` (default: the run's ``model/``).

    ``folder`` may be the run's mtransfer model folder or a transformers export of it; the card
    is written for the one it goes into (see :func:`model_card_text`).
    """
    from mtransfer.atomic import atomic_write_bytes

    run = Path(run_dir)
    folder = Path(folder) if folder is not None else run / "model"
    folder.mkdir(parents=True, exist_ok=True)
    plot = run / "learning_curve.png"
    has_plot = plot.is_file()
    text = model_card_text(run, folder=folder, plot_name="learning_curve.png" if has_plot else None, **kwargs)
    if has_plot and plot.resolve() != (folder / plot.name).resolve():
        shutil.copyfile(plot, folder / plot.name)
    atomic_write_bytes(folder / "README.md", text.encode("utf-8"))
    return folder / "README.md"


def _base_model(source: str | None) -> tuple[str | None, str]:
    """``(Hub id for the metadata or None, how the card names it)``; a local path is never printed whole."""
    from mtransfer.builtins import MODELS, hub_id

    if not source:
        return None, "an unnamed backbone"
    if hub_id(source):
        return hub_id(source), hub_id(source)
    if str(source) in MODELS:  # shipped, with no Hub counterpart: say what it is
        return None, f"mtransfer's {source} ({MODELS[str(source)].summary})"
    path = Path(str(source)).expanduser()
    if str(source).startswith(("/", ".", "~")) or path.exists():
        return None, f"a local model ({path.name})"
    return str(source), str(source)


def _scores(metrics: dict[str, Any] | None) -> dict[str, float]:
    return {k.removeprefix("eval_"): v for k, v in (metrics or {}).items()
            if isinstance(v, (int, float)) and k not in ("eval_samples", "eval_loss")}


def _started_from_lines(started: dict[str, Any] | None) -> list[str]:
    """Provenance of a model trained on from another mtransfer model (``train --init-from``). Like the base model, a
    local folder is named by its last two parts, never by its whole path (``adapt.json`` and ``config.json`` keep it)."""
    if not started:
        return []
    copied = started.get("copied_rows")
    rows = f"; {copied} output rows of the symbols both vocabularies share were copied" if copied is not None else ""
    base = f", itself fine-tuned from {_base_model(started['base'])[1]}" if started.get("base") else ""
    model = Path(str(started["model"]))
    name = f"a local model ({model.parent.name}/{model.name})" if model.is_absolute() else f"`{model}`"
    return [f"It started from the trained mtransfer model {name} (a {str(started.get('task', '?')).replace('_', ' ')} "
            f"model{base}): its backbone as trained, a new head{rows}.", ""]


def _flag_lines(flags: Sequence[str]) -> list[str]:
    """The run's trust flags, as a warning block under the evaluation."""
    if not flags:
        return []
    return ["", "**Read these figures with care:**", "", *(f"- {text}" for text in describe_flags(list(flags)))]


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


def _pipeline_tag(modality: str) -> str | None:
    from mtransfer.adapters.base import get_adapter_class

    return get_adapter_class(modality).pipeline_tag or None
