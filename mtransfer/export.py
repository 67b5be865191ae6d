"""Transformers-native export: a trained model as a folder ``transformers.pipeline`` loads.

Each adapter says how its model maps onto transformers (:meth:`Adapter.transformers_forms`);
this module builds that form, checks it numerically against mtransfer and writes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mtransfer.heads import folded_linear

def _native_model(model: Any) -> tuple[Any, Any, Any]:
    """``(transformers model with the head mapped onto its classifier, preprocessor, a sample batch)``."""
    import copy

    import torch
    from torch import nn

    adapter, head = model.adapter, model.head
    form = adapter.transformers_form()
    config = copy.deepcopy(adapter.backbone.config)
    config.num_labels = len(model.label_names)
    config.id2label = dict(enumerate(model.label_names))
    config.label2id = {name: i for i, name in enumerate(model.label_names)}
    config.problem_type = head.task
    if hasattr(config, "label_names"):  # timm's wrapper keeps its labels here (its id2label is not saved)
        config.label_names = list(model.label_names)
    form.configure(config)
    try:
        native = form.auto_class.from_config(config)
    except ValueError as err:
        raise ValueError(f"{type(adapter.backbone).__name__} has no {form.auto_class.__name__} class: "
                         f"{str(err).splitlines()[0]}") from None
    base = getattr(native, native.base_model_prefix)
    lead = native.base_model_prefix + "."
    state = adapter.backbone.state_dict()
    if state and all(k.startswith(lead) for k in state):  # a wrapper around the same base (timm's TimmWrapperModel)
        state = {k[len(lead):]: v for k, v in state.items()}
    missing, _ = base.load_state_dict(state, strict=False)
    fresh = {k.rsplit(".", 1)[0] for k in missing}  # modules of the base the backbone has no weights for
    # the classifier: outside the base (BERT, ViT...), or inside it with no backbone weights (timm's own classifier)
    named = [(name, m) for name, m in native.named_modules() if isinstance(m, nn.Linear)
             and m.out_features == config.num_labels and (not name.startswith(lead) or name[len(lead):] in fresh)]
    if len(named) != 1:
        raise ValueError(f"cannot find the classifier of {type(native).__name__}.")
    classifier = named[0][0][len(lead):] if named[0][0].startswith(lead) else None
    missing = [k for k in missing if k.rsplit(".", 1)[0] != classifier]
    if missing:
        raise ValueError(f"{type(native).__name__} needs weights the backbone lacks: {missing[:5]}")
    weight, bias = folded_linear(head)
    linears = [named[0][1]]
    with torch.no_grad():
        linears[0].weight.copy_(weight)
        linears[0].bias.copy_(bias)
    form.finish(native)
    return native.eval(), form.processor, form.sample


def export_transformers(model: Any, folder: str | os.PathLike, *, atol: float = 1e-4, overwrite: bool = False) -> Path:
    """Write ``model`` as a standard transformers folder (``AutoModelFor{Sequence,Image,Audio}Classification``).

    The head goes onto the architecture's own classifier (regression statistics folded into
    its weights; ``id2label``, ``label2id`` and ``problem_type`` set), so ``transformers.pipeline``
    loads the folder and gives mtransfer's scores. The export is checked numerically before
    anything is written.

    Text models whose pooling the native classifier does not read (mean or CLS pooling, MLP
    heads) get a registered custom head instead (:mod:`mtransfer.hf_custom`, copied into the
    folder): load them with ``trust_remote_code=True``.

    ``folder`` must be new or empty; with ``overwrite`` the export's files replace files of the
    same name there and nothing else is touched.

    Raises:
        ValueError: A non-empty ``folder`` without ``overwrite``. No transformers form: static vectors, sentence-transformers pipelines, plain
            torch backbones, ``stats`` audio pooling, MLP heads on image or audio models. The
            mtransfer folder (``save_pretrained``) remains the format then.
    """
    model = model.eval()
    folder = Path(folder)
    if getattr(model, "loaded_from", None) is not None:
        check_apart(folder, model.loaded_from)
    check_output_folder(folder, overwrite)
    if model.head.kind.transcribes:  # the encoder's own *ForCTC class
        native, processor, sample = _ctc_model(model)
        _check_ctc(model, native, sample, atol)
        return _write(native, processor, folder)
    try:
        native, processor, sample = _native_model(model)
        _check(model, native, sample, atol)
    except ValueError:
        custom = model.adapter.custom_transformers_model(model)  # load with trust_remote_code=True
        if custom is None:
            raise
        native, processor, sample = custom
        _check(model, native, sample, atol)
    return _write(native, processor, folder)


def _write(native: Any, processor: Any, folder: Path) -> Path:
    from mtransfer.adapters.base import quiet_transformers
    from mtransfer.atomic import atomic_directory

    with atomic_directory(folder.parent / f".{folder.name}.export") as tmp, quiet_transformers():
        native.save_pretrained(tmp)
        if processor is not None and type(processor).__name__ != "TimmWrapperImageProcessor":
            processor.save_pretrained(tmp)
        for path in Path(tmp).glob("*.json"):
            scrub_local_settings(path)
    _move_into(folder.parent / f".{folder.name}.export", folder)
    return folder


LOCAL_KEYS = ("_name_or_path", "name_or_path", "is_local", "local_files_only", "_commit_hash")


def scrub_local_settings(path: Path) -> None:
    """Drop what describes this machine from a saved JSON file (at any depth): the folder a model was loaded from
    (``_name_or_path``: a sub-config keeps it), and the loading flags ``is_local`` / ``local_files_only`` a
    tokenizer saves. An export goes to the Hub as written; the card names the source model."""
    import json

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in LOCAL_KEYS}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return
    cleaned = clean(data)
    if cleaned != data:
        path.write_text(json.dumps(cleaned, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _ctc_model(model: Any) -> tuple[Any, Any, Any]:
    """The encoder's own ``*ForCTC`` class with the CTC head as its ``lm_head``, and a ``Wav2Vec2Processor``."""
    import copy
    import tempfile

    import torch
    from transformers import AutoModelForCTC, Wav2Vec2Processor

    adapter, head = model.adapter, model.head
    if adapter.layer_weights is not None:
        raise ValueError("a CTC model with layer_weighting has no transformers form (*ForCTC reads the last layer).")
    config = copy.deepcopy(adapter.backbone.config)
    config.vocab_size = len(model.label_names)
    config.pad_token_id = 0  # the blank
    config.ctc_loss_reduction, config.ctc_zero_infinity = "mean", True
    try:
        native = AutoModelForCTC.from_config(config)
    except ValueError as err:
        raise ValueError(f"{type(adapter.backbone).__name__} has no AutoModelForCTC class: {str(err).splitlines()[0]}") from None
    base = getattr(native, native.base_model_prefix)
    missing, _ = base.load_state_dict(adapter.backbone.state_dict(), strict=False)
    if missing:
        raise ValueError(f"{type(native).__name__} needs weights the backbone lacks: {missing[:5]}")
    with torch.no_grad():
        native.lm_head.weight.copy_(head.out.weight)
        native.lm_head.bias.copy_(head.out.bias)
    tokenizer = model.vocabulary.to_tokenizer(tempfile.mkdtemp(prefix="mtransfer-vocab-"))
    processor = Wav2Vec2Processor(feature_extractor=adapter.feature_extractor, tokenizer=tokenizer)
    sample = adapter.preprocess([torch.linspace(-0.5, 0.5, 16000).sin(), torch.linspace(0.3, -0.2, 9000).cos()])
    return native.eval(), processor, sample


def _check_ctc(model: Any, native: Any, sample: Any, atol: float) -> None:
    import torch

    with torch.no_grad():
        ours = model(sample)
        kwargs = {model.adapter.input_name: sample[model.adapter.input_name]}
        if model.adapter.pass_attention_mask:
            kwargs["attention_mask"] = sample["attention_mask"]
        theirs = native(**kwargs).logits
    valid = ours.mask.bool()
    if theirs.shape != ours.logits.shape or not torch.allclose(ours.logits[valid], theirs[valid], atol=atol, rtol=1e-4):
        raise ValueError(f"{type(native).__name__} does not reproduce this CTC model's frame logits; "
                         "keep the mtransfer folder (save_pretrained).")


def check_apart(output: Path, model_dir: Path, flag: str = "--output") -> None:
    """Refuse an output that is the model folder it reads, lies inside it, or contains it: writing there destroys the model."""
    out, src = Path(output).expanduser().resolve(), Path(model_dir).expanduser().resolve()
    if out == src or src in out.parents or out in src.parents:
        where = "is" if out == src else ("is inside" if src in out.parents else "contains")
        raise ValueError(f"{flag} {output}: {where} the model folder {model_dir} the export reads; writing there would "
                         "replace the model's own files. Choose a folder outside it (e.g. a sibling 'export').")


def check_output_folder(folder: Path, overwrite: bool) -> None:
    """Refuse to write into a folder that holds anything, unless ``overwrite`` (which still deletes nothing)."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--output {folder}: exists and is not a folder.")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        shown = ", ".join(sorted(p.name for p in folder.iterdir())[:5])
        raise ValueError(f"--output {folder}: the folder is not empty ({shown}); pass --overwrite (overwrite=True) to "
                         "write the export's files into it (nothing else there is deleted), or choose a new folder.")


def _move_into(staged: Path, folder: Path) -> None:
    """Move every file of the staged export into ``folder``, replacing only files of the same name."""
    import os
    import shutil

    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    if not folder.exists():
        os.replace(staged, folder)
        return
    for item in staged.iterdir():
        target = folder / item.name
        if target.is_dir() and not item.is_dir():
            raise ValueError(f"{target}: a folder is in the way of the exported file {item.name}.")
        os.replace(item, target)
    shutil.rmtree(staged, ignore_errors=True)


def _check(model: Any, native: Any, sample: Any, atol: float) -> None:
    import torch

    with torch.no_grad():
        ours = model(sample).logits
        if model.task == "regression":
            ours = ours * model.head.target_std + model.head.target_mean
        theirs = native(**{k: v for k, v in sample.items() if k in ("input_ids", "attention_mask", "token_type_ids",
                                                                    "pixel_values", "input_values", "input_features")}).logits
    if not torch.allclose(ours, theirs, atol=atol, rtol=1e-4):
        raise ValueError(
            f"{type(native).__name__}'s classifier reads a different feature than this model's "
            f"({model.adapter.modality} pooling={getattr(model.adapter, 'pooling', '?')!r}): max difference "
            f"{(ours - theirs).abs().max():.3g}. No native form; keep the mtransfer folder (save_pretrained).")
