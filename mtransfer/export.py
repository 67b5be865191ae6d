"""Publishing a trained model: a model card generated from the run, and pushes to the Hugging Face Hub.

:func:`write_model_card` turns a run folder (``metrics.json``, the learning curve, the saved
model's config) into ``README.md`` with Hub metadata and a training-procedure section that
says what actually happened: strategy, which layer groups trained in which epochs at which
peak rates, the schedule, data sizes and the evaluation results.

:func:`push_to_hub` uploads a folder (``create_repo`` + ``upload_folder``); ``dry_run`` lists
exactly what would be uploaded. The token comes from ``HF_TOKEN`` or ``huggingface-cli login``
and is never printed; an unreachable Hub raises :class:`HubError` with a one-line reason.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

PIPELINE_TAGS = {"text": "text-classification", "sentence": "text-classification", "static_vectors": "text-classification",
                 "image": "image-classification", "torch": "image-classification", "audio": "audio-classification"}


class HubError(RuntimeError):
    """The Hub could not be reached or refused the upload; the message is one line."""


def _load_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what} (expected a run folder written by mtransfer's Trainer).")
    return json.loads(path.read_text())


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card_text(run_dir: str | os.PathLike, *, model_name: str | None = None, datasets: Sequence[str] = (),
                    license: str | None = None, language: str | Sequence[str] | None = None,
                    plot_name: str | None = "learning_curve.png") -> str:
    """The card (YAML metadata + markdown) for the run in ``run_dir``."""
    from huggingface_hub import ModelCard, ModelCardData

    run = Path(run_dir)
    metrics = _load_json(run / "metrics.json", "metrics.json")
    config = _load_json(run / "model" / "config.json", "model/config.json")
    adapter_type = config["adapter_type"]
    base = config["adapter"].get("source")
    final = {k.removeprefix("eval_"): v for k, v in (metrics.get("final_eval") or {}).items()
             if isinstance(v, (int, float)) and k not in ("eval_samples", "eval_loss")}
    data = ModelCardData(
        base_model=base if base and not str(base).startswith(("/", ".", "~")) else None,
        library_name="mtransfer", pipeline_tag=PIPELINE_TAGS.get(adapter_type), license=license,
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
    best = metrics.get("best") or {}
    lines += ["", "## Evaluation", ""]
    if final:
        lines += ["| metric | value |", "|---|---|", *[f"| {k} | {_fmt(v)} |" for k, v in sorted(final.items())], ""]
        if best.get("epoch") is not None:
            lines.append(f"Best epoch {best['epoch']} by `{best['metric']}` ({_fmt(best['value'])}); these are its weights.")
    else:
        lines.append("No evaluation data was given for this run.")
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


def upload_plan(folder: str | os.PathLike) -> list[tuple[str, int]]:
    """``(relative path, size in bytes)`` of every file an upload of ``folder`` sends, sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder to push.")
    files = sorted((p.relative_to(root).as_posix(), p.stat().st_size) for p in root.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise ValueError(f"{root}: the folder is empty; nothing to push.")
    return files


def push_to_hub(folder: str | os.PathLike, repo_id: str, *, private: bool = False, branch: str | None = None,
                commit_message: str = "Upload model trained with mtransfer", token: str | None = None,
                dry_run: bool = False) -> list[tuple[str, int]] | str:
    """Create the repo if needed and upload ``folder``; with ``dry_run``, only return what would be uploaded.

    Returns:
        The file list (dry run) or the commit URL.

    Raises:
        HubError: The Hub is unreachable, switched off, or refused (the reason in one line).
    """
    files = upload_plan(folder)
    if dry_run:
        return files
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    endpoint = api.endpoint
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if branch:
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=branch, commit_message=commit_message)
    except Exception as err:  # noqa: BLE001  (network, auth and offline errors all become one line)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if token and token in reason:
            reason = reason.replace(token, "***")
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            reason = "HF_HUB_OFFLINE is set, so no request is sent"
        raise HubError(f"Cannot push {folder} to {repo_id} at {endpoint}: {type(err).__name__}: {reason}") from None
    return str(getattr(info, "commit_url", info))
