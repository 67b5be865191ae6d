"""Recipe configs: YAML files with ``section.key=value`` command-line overrides, checked before any work.

A config has three sections::

    model:     modality, name_or_path, adapter (adapter settings), head (head settings), seed
    data:      train, validation, test, input_column, label_column, task, label_separator
    training:  any TrainingArguments field

``builtin:`` names (``builtin:minilm`` as ``model.name_or_path``; ``builtin:fortunes``,
``builtin:digits``, ``builtin:espeak`` as data) resolve through :mod:`mtransfer.builtins`.

Unknown keys and values of the wrong type are rejected with the key's full name, the file and
what was expected; ``TrainingArguments`` then checks its own values.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from mtransfer.adapters.base import check_adapter_settings, get_adapter_class
from mtransfer.builtins import PREFIX
from mtransfer.data import load_labeled
from mtransfer.heads import HeadConfig
from mtransfer.model import TransferModel
from mtransfer.record import RunRecord
from mtransfer.tasks import get_task
from mtransfer.training import Trainer, TrainingArguments


SECTIONS = ("model", "data", "training")


@dataclass
class ModelSettings:
    """The ``model`` section."""

    modality: str = "text"
    name_or_path: str = "builtin:minilm"
    adapter: dict[str, Any] = field(default_factory=dict)
    head: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    init_from: str | None = None  # an mtransfer model folder: its trained backbone, a new head for this data
    trust_remote_code: bool = False  # let a model folder (init_from, a torch backbone folder) import the code it names


@dataclass
class DataSettings:
    """The ``data`` section."""

    train: str = "builtin:fortunes"
    validation: str | None = None
    test: str | None = None
    input_column: str | None = None  # None: the modality's own (text; image for images, audio for speech)
    label_column: str = "label"  # regression with several targets: comma-separated columns
    task: str = "single_label_classification"
    label_separator: str | None = None
    vocabulary: str | None = None  # ctc: characters (default), phones:<espeak voice>, or model (init_from's)
    bad_transcripts: str = "error"  # ctc: error or skip rows whose transcript is empty
    unknown_units: str = "count"  # ctc, evaluation data: count (as [UNK]), error or skip units outside the vocabulary


@dataclass
class RecipeConfig:
    model: ModelSettings
    data: DataSettings
    training: TrainingArguments
    source: str = "<config>"


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, args[0]) for v in value) if args else isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _coerce(value: Any, hint: Any) -> Any:
    """Read command-line strings the way the field needs: ``none`` -> None, ``5e-3`` -> 5e-3 (YAML gives a
    string), ``a,b`` -> a list, an empty value -> an empty list for list fields."""
    if _type_ok(value, hint):
        return value
    if value is None and _type_ok([], hint):
        return []
    if not isinstance(value, str):
        return value
    if value.strip().lower() in ("none", "null", ""):
        if _type_ok(None, hint):
            return None
        if _type_ok([], hint):
            return []
    if _type_ok(1.0, hint):
        try:
            return float(value)
        except ValueError:
            return value
    if _type_ok([value], hint) or _type_ok([1.0], hint):
        items = [yaml.safe_load(x.strip()) for x in value.split(",") if x.strip()]
        return items if _type_ok(items, hint) else value
    return value


def _describe(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _check_section(cls: type, values: dict[str, Any], section: str, source: str) -> None:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key, value in values.items():
        if key not in hints or key not in names:
            close = difflib.get_close_matches(key, names, n=3) or [n for n in names if n.startswith(key[:4])]
            raise ValueError(f"{source}: unknown key {section}.{key}" + (f"; did you mean {', '.join(f'{section}.{c}' for c in close)}?"
                                                                         if close else f"; {section} takes {', '.join(names)}."))
        values[key] = value = _coerce(value, hints[key])
        if not _type_ok(value, hints[key]):
            raise ValueError(f"{source}: {section}.{key} is {value!r} ({type(value).__name__}); expected {_describe(hints[key])}.")


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set ``section.key[.sub]=value`` pairs (values parsed as YAML: numbers, booleans, lists, null)."""
    for pair in overrides:
        if "=" not in pair:
            raise ValueError(f"override {pair!r}: expected section.key=value, e.g. training.num_epochs=3.")
        dotted, text = pair.split("=", 1)
        parts = dotted.strip().split(".")
        if len(parts) < 2 or parts[0] not in SECTIONS:
            raise ValueError(f"override {pair!r}: the key must start with one of {', '.join(SECTIONS)} (e.g. training.seed=1).")
        node = raw.setdefault(parts[0], {})
        for p in parts[1:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {pair!r}: {p} is not a section.")
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    return raw


def load_recipe_config(path: str | Path | None = None, overrides: Sequence[str] = (), *,
                       base: dict[str, Any] | None = None, source: str | None = None) -> RecipeConfig:
    """Read a YAML config (or start from ``base``), apply ``overrides`` and check every key and type.

    Every way of giving settings (YAML, ``section.key=value``, the CLI's flags, ``--set`` and
    ``--adapter``) ends here, so they are parsed and checked the same way.

    Raises:
        FileNotFoundError: No such config file.
        ValueError: Unknown section or key, a value of the wrong type, or an invalid training setting.
    """
    source = source or (str(path) if path is not None else "<overrides>")
    raw: dict[str, Any] = {k: dict(v) for k, v in (base or {}).items()}
    if path is not None:
        raw = _read_yaml(Path(path))
    raw = apply_overrides(raw, overrides)
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise ValueError(f"{source}: unknown section {', '.join(map(repr, unknown))}; expected {', '.join(SECTIONS)}.")
    sections = {}
    for name, cls in (("model", ModelSettings), ("data", DataSettings), ("training", TrainingArguments)):
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{source}: section {name} must be a mapping, got {type(values).__name__}.")
        _check_section(cls, values, name, source)
        try:
            sections[name] = cls(**values)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
    check_model_settings(sections["model"], source)
    if sections["data"].input_column is None:
        sections["data"].input_column = get_adapter_class(sections["model"].modality).default_input_column
    return RecipeConfig(sections["model"], sections["data"], sections["training"], source)


def _read_yaml(p: Path) -> dict[str, Any]:
    """A config file's mapping; one-line errors naming the file (and the line of a YAML error)."""
    if not p.is_file():
        raise FileNotFoundError(f"No config file {str(p)!r}.")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{p}: not a text (UTF-8) YAML file (byte {err.start} cannot be decoded).") from None
    if "\x00" in text:
        raise ValueError(f"{p}: a binary file, not a YAML config.")
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{p}:{where}: not valid YAML ({problem}).") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{p}: a config is a mapping with sections {', '.join(SECTIONS)}; got {type(loaded).__name__}.")
    return loaded


def check_model_settings(model: ModelSettings, source: str) -> None:
    """Check ``model.adapter.*`` against the adapter's constructor and ``model.head.*`` against the head's fields.

    Runs before any data is loaded or corpus built, so a misspelt key fails at once.
    """
    try:
        get_adapter_class(model.modality)
    except ValueError as err:
        raise ValueError(f"{source}: model.modality: {err}") from None
    check_adapter_settings(model.modality, list(model.adapter), source, prefix="model.adapter.")
    head_fields = [f.name for f in dataclasses.fields(HeadConfig) if f.name not in ("task", "num_outputs", "input_dim")]
    for key in model.head:
        if key not in head_fields:
            raise ValueError(f"{source}: unknown key model.head.{key}" + _did_you_mean(key, head_fields, "model.head.")
                             + f"; the head takes {', '.join(head_fields)}.")


def _did_you_mean(key: str, names: Sequence[str], prefix: str) -> str:
    close = difflib.get_close_matches(key, names, n=2, cutoff=0.6)
    return f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""


def _dataset(source: str | None, split: str, data: DataSettings, label_names: list[str] | None, vocabulary: Any = None):
    if source is None:
        return None
    task = get_task(data.task)
    if source.startswith(PREFIX) and not task.transcribes:
        return load_labeled(source, split=split, label_names=label_names)
    if task.transcribes:
        builtin = {"split": split} if source.startswith(PREFIX) else {"input_column": data.input_column,
                                                                        "label_column": data.label_column}
        return load_labeled(source, **builtin, task=data.task,
                            vocabulary=vocabulary if vocabulary is not None else data.vocabulary,
                            bad_transcripts=data.bad_transcripts, unknown_units=data.unknown_units)
    label_column: str | list[str] = data.label_column
    if data.task == "regression" and "," in label_column:  # several regression targets: "price,size"
        label_column = [c.strip() for c in label_column.split(",")]
    return load_labeled(source, input_column=data.input_column, label_column=label_column, task=data.task,
                        label_names=None if data.task == "regression" else label_names,
                        label_separator=data.label_separator)


def run_recipe(config: RecipeConfig) -> dict[str, Any]:
    """Load the data and the model of a config, train, and evaluate on the test data when given.

    The one path from settings to a trained model, shared by ``recipes/train.py`` and ``mtransfer train``.
    """
    d = config.data
    start = _init_model(config)
    task = get_task(d.task)
    if task.transcribes and d.vocabulary == "model":
        if start is None or not start.head.kind.transcribes:
            raise ValueError(f"{config.source}: data.vocabulary=model takes the vocabulary of model.init_from, "
                             "which must be a CTC model.")
        train = _dataset(d.train, "train", d, None, start.vocabulary)
    else:
        train = _dataset(d.train, "train", d, None)
    names = None if d.task == "regression" else train.label_names
    valid = _dataset(d.validation, "validation", d, names, train.vocabulary)
    test = _dataset(d.test, "test", d, names, train.vocabulary)
    if start is not None:
        labels = train.vocabulary if task.transcribes else train.label_names
        model = start.with_new_head(labels, task=d.task, head=config.model.head or None, seed=config.model.seed)
        copied = getattr(model, "copied_rows", None)
        if copied is not None and int(os.environ.get("RANK", "0")) == 0:  # CTC to CTC: say what carried over
            print(f"init_from {config.model.init_from}: copied {copied} of {len(model.label_names)} output rows (the "
                  "symbols both vocabularies share); the others start fresh", file=sys.stderr)
        out = _train_and_test(config, model, train, valid, test)
        return {**out, **({"copied_rows": copied} if copied is not None else {})}
    adapter = dict(config.model.adapter)

    adapter_cls = get_adapter_class(config.model.modality)
    setting = adapter_cls.training_texts_setting
    if setting:  # e.g. static vectors build their vocabulary from the training texts
        adapter.setdefault(setting, train.inputs)
    if config.model.trust_remote_code and "trust_remote_code" in inspect.signature(adapter_cls.__init__).parameters:
        adapter.setdefault("trust_remote_code", True)
    model = TransferModel.from_backbone(config.model.modality, config.model.name_or_path,
                                        labels=train.vocabulary if task.transcribes else train.label_names,
                                        task=d.task, head=config.model.head, seed=config.model.seed, **adapter)
    return _train_and_test(config, model, train, valid, test)


def _init_model(config: RecipeConfig) -> Any:
    """The model of ``model.init_from`` (trained backbone, old head), or None."""
    folder = config.model.init_from
    if folder is None:
        return None
    try:
        return TransferModel.from_pretrained(folder, trust_remote_code=config.model.trust_remote_code,
                                             **config.model.adapter)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"{config.source}: model.init_from: {err}") from None


def _train_and_test(config: RecipeConfig, model: Any, train: Any, valid: Any, test: Any) -> dict[str, Any]:
    trainer = Trainer(model, config.training, train, valid)
    result = trainer.train()
    out = {"model_dir": result.model_dir, "metrics": result.metrics_path, "best_epoch": result.best_epoch,
           "final": result.final_metrics}
    if test is not None:
        out["test"] = trainer.evaluate(test)
        if trainer.accelerator.is_main_process:  # the record (and so the model card) carries the test metrics

            record = RunRecord.load(result.metrics_path)
            record.test = out["test"]
            record.save(result.metrics_path)
    return out
