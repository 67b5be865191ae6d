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


# --- transformers-native export -------------------------------------------------------------
def _folded_linear(head: Any, allow_hidden: bool = False) -> tuple[Any, Any]:
    """The head's output layer with regression statistics folded in: logits in the targets' units."""
    import torch

    if head.config.hidden_sizes and not allow_hidden:
        raise ValueError("an MLP head has no transformers-native form (its hidden layers have no place in "
                         "the architecture's classifier); keep the mtransfer folder (TransferModel.from_pretrained).")
    weight = head.out.weight.detach().clone()
    bias = head.out.bias.detach().clone()
    if head.task == "regression":
        weight = weight * head.target_std[:, None]
        bias = bias * head.target_std + head.target_mean
    return weight.to(torch.float32), bias.to(torch.float32)


def _native_model(model: Any) -> tuple[Any, Any, Any]:
    """``(transformers model with the head mapped onto its classifier, preprocessor, a sample batch)``."""
    import copy

    import torch
    from torch import nn
    from transformers import (AutoModelForAudioClassification, AutoModelForImageClassification,
                              AutoModelForSequenceClassification)

    adapter, head = model.adapter, model.head
    kind = adapter.adapter_type
    config = copy.deepcopy(adapter.backbone.config)
    config.num_labels = len(model.label_names)
    config.id2label = dict(enumerate(model.label_names))
    config.label2id = {name: i for i, name in enumerate(model.label_names)}
    config.problem_type = head.task
    if kind == "image":
        auto, processor = AutoModelForImageClassification, adapter.processor
        sample = adapter.preprocess([torch.zeros(3, *adapter.size, dtype=torch.uint8) + 90,
                                     (torch.rand(3, *adapter.size) * 255).to(torch.uint8)])
    elif kind == "audio":
        if adapter.pooling != "mean" or adapter.eval_chunking:
            raise ValueError("audio models export natively with pooling='mean' and eval_chunking=False "
                             f"(this one: pooling={adapter.pooling!r}, eval_chunking={adapter.eval_chunking}).")
        config.classifier_proj_size = config.hidden_size
        config.use_weighted_layer_sum = adapter.layer_weights is not None
        auto, processor = AutoModelForAudioClassification, adapter.feature_extractor
        sample = adapter.preprocess([(torch.sin(torch.arange(16000) * 0.05) * 0.3, adapter.sampling_rate)])
    elif kind == "text":
        auto, processor = AutoModelForSequenceClassification, adapter.tokenizer
        sample = adapter.preprocess(["a short example text", "another one"])
    else:
        raise ValueError(f"the {kind!r} adapter has no transformers-native form; keep the mtransfer folder "
                         "(TransferModel.from_pretrained loads it in one call).")
    try:
        native = auto.from_config(config)
    except ValueError as err:
        raise ValueError(f"{type(adapter.backbone).__name__} has no {auto.__name__} class: {str(err).splitlines()[0]}") from None
    base = getattr(native, native.base_model_prefix)
    missing, _ = base.load_state_dict(adapter.backbone.state_dict(), strict=False)
    if missing:
        raise ValueError(f"{type(native).__name__} needs weights the backbone lacks: {missing[:5]}")
    weight, bias = _folded_linear(head)
    linears = [m for name, m in native.named_modules() if isinstance(m, nn.Linear)
               and not name.startswith(native.base_model_prefix + ".") and m.out_features == config.num_labels]
    if len(linears) != 1:
        raise ValueError(f"cannot find the classifier of {type(native).__name__}.")
    with torch.no_grad():
        linears[0].weight.copy_(weight)
        linears[0].bias.copy_(bias)
        projector = getattr(native, "projector", None)
        if isinstance(projector, nn.Linear):  # audio: an identity projection, so mean pooling then the head
            projector.weight.copy_(torch.eye(projector.out_features))
            projector.bias.zero_()
        if adapter.layer_weights is not None if kind == "audio" else False:
            native.layer_weights.copy_(adapter.layer_weights.weights)
    return native.eval(), processor, sample


def _custom_text_model(model: Any) -> tuple[Any, Any, Any]:
    """The registered custom head (:mod:`mtransfer.hf_custom`) for a text model with mean or CLS pooling."""
    import torch
    from torch import nn

    from mtransfer.hf_custom import MTransferForSequenceClassification, MTransferTextConfig

    adapter, head = model.adapter, model.head
    if adapter.pooling not in ("mean", "cls"):
        raise ValueError(f"no transformers form for text pooling={adapter.pooling!r} with this head.")
    backbone = adapter.backbone.config.to_dict()
    config = MTransferTextConfig(backbone=backbone, pooling=adapter.pooling, hidden_sizes=head.config.hidden_sizes,
                                 activation=head.config.activation, num_labels=len(model.label_names),
                                 id2label=dict(enumerate(model.label_names)),
                                 label2id={n: i for i, n in enumerate(model.label_names)}, problem_type=head.task)
    MTransferTextConfig.register_for_auto_class()
    MTransferForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
    native = MTransferForSequenceClassification(config)
    with torch.no_grad():
        native.encoder.load_state_dict(adapter.backbone.state_dict())
        ours = [m for m in head.body if isinstance(m, nn.Linear)]
        theirs = [m for m in native.body if isinstance(m, nn.Linear)]
        for a, b in zip(ours, theirs):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        weight, bias = _folded_linear(head, allow_hidden=True)  # regression: original units
        native.classifier.weight.copy_(weight)
        native.classifier.bias.copy_(bias)
    return native.eval(), adapter.tokenizer, adapter.preprocess(["a short example text", "another one"])


def export_transformers(model: Any, folder: str | os.PathLike, *, atol: float = 1e-4) -> Path:
    """Write ``model`` as a standard transformers folder (``AutoModelFor{Sequence,Image,Audio}Classification``).

    The head goes onto the architecture's own classifier (regression statistics folded into
    its weights; ``id2label``, ``label2id`` and ``problem_type`` set), so ``transformers.pipeline``
    loads the folder and gives mtransfer's scores. The export is checked numerically before
    anything is written.

    Text models whose pooling the native classifier does not read (mean or CLS pooling, MLP
    heads) get a registered custom head instead (:mod:`mtransfer.hf_custom`, copied into the
    folder): load them with ``trust_remote_code=True``.

    Raises:
        ValueError: No transformers form: static vectors, sentence-transformers pipelines, plain
            torch backbones, ``stats`` audio pooling, MLP heads on image or audio models. The
            mtransfer folder (``save_pretrained``) remains the format then.
    """
    from mtransfer.adapters.base import quiet_transformers
    from mtransfer.atomic import atomic_directory

    model = model.eval()
    try:
        native, processor, sample = _native_model(model)
        _check(model, native, sample, atol)
    except ValueError:
        if model.adapter.adapter_type != "text" or getattr(model.adapter, "pooling", None) not in ("mean", "cls"):
            raise
        native, processor, sample = _custom_text_model(model)  # load with trust_remote_code=True
        _check(model, native, sample, atol)
    folder = Path(folder)
    with atomic_directory(folder) as tmp, quiet_transformers():
        native.save_pretrained(tmp)
        if type(processor).__name__ != "TimmWrapperImageProcessor":
            processor.save_pretrained(tmp)
    return folder


def _check(model: Any, native: Any, sample: Any, atol: float) -> None:
    import torch

    with torch.no_grad():
        ours = model(sample).logits
        if model.task == "regression":
            ours = ours * model.head.target_std + model.head.target_mean
        theirs = native(**{k: v for k, v in sample.items() if k in ("input_ids", "attention_mask", "token_type_ids",
                                                                    "pixel_values", "input_values")}).logits
    if not torch.allclose(ours, theirs, atol=atol, rtol=1e-4):
        raise ValueError(
            f"{type(native).__name__}'s classifier reads a different feature than this model's "
            f"({model.adapter.adapter_type} pooling={getattr(model.adapter, 'pooling', '?')!r}): max difference "
            f"{(ours - theirs).abs().max():.3g}. No native form; keep the mtransfer folder (save_pretrained).")
